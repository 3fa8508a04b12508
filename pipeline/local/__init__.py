"""A local SageMaker: the API subset this project and the SDK use, run for real on one machine.

Laid out like moto's per-service split: ``store`` (state), ``models`` (the operations),
``responses`` (AWS JSON 1.1 protocol and validation), ``server`` (routes), plus the parts that do
the work: ``executor`` (pipeline DAG), ``jobs`` (processing and training under the container
contract), ``endpoints`` (model servers), ``s3`` (s3:// as files) and ``launcher``.
"""
