"""Reviewing runs: the data (``runs``), charts and the DAG as SVG (``charts``, ``dag``), and the
HTML pages (``pages``) that the local service serves and ``run_pipeline.py report`` writes."""
