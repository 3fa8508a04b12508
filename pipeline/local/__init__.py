"""A local SageMaker: the API subset this project and the SDK use, run for real on one machine.

Laid out like moto's per-service split: ``resources`` (one class per resource: ARN, statuses,
answer shapes), ``models`` (the operations, the only writer of state, kept by ``store``),
``responses`` (the wire: AWS JSON 1.1, runtime, S3), ``server`` (routes and wiring), ``errors``.
The parts that do the work: ``workflow/`` (the pipeline DAG, expressions, step handlers,
orchestrator), ``container`` (the /opt/ml contract), ``jobs`` and ``endpoints`` (processes),
``s3`` (s3:// as files), ``home`` (the service's folder), ``web`` (the run browser), ``launcher``.
"""
