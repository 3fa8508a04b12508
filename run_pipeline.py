#!/usr/bin/env python3
"""Kick off and review executions of the MNIST pipeline: see ``--help`` and the README."""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
