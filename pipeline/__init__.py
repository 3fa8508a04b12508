"""Orchestration side: the SageMaker pipeline definition, code packaging, the CLI, the local
service."""
