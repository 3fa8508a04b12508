"""Shared fixtures: the project on the path, and in-process local services of a test's own."""
import os
import sys

import boto3
import pytest
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def clients_of(service, **config):
    """(sagemaker, s3) clients of a service (path-style S3, no retries)."""
    session = dict(endpoint_url=service.url, region_name=service.region,
                   aws_access_key_id="local", aws_secret_access_key="local")
    sm = boto3.client("sagemaker", config=Config(retries={"max_attempts": 1}, **config),
                      **session)
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **session)
    return sm, s3


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A service process of the test module's own (its state is the module's)."""
    from localservice import ServiceProcess

    svc = ServiceProcess(tmp_path_factory.mktemp("svc")).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def local_service():
    """Starts in-process services (``start(home, **options)`` -> (service, sm, s3)) and closes
    them after the module."""
    from pipeline.local.server import LocalSageMaker

    started = []

    def start(home, **options):
        service = LocalSageMaker(str(home), **options).start_background()
        started.append(service)
        return (service, *clients_of(service))

    yield start
    for service in started:
        service.close()


@pytest.fixture(scope="module")
def clients(service):
    """The main pipeline installed on the module's service: (sagemaker, s3, runtime) clients."""
    from pipeline.aws import Clients, install_pipeline
    from pipeline.definition import PipelineConfig
    from pipelinehelpers import BUCKET

    install_pipeline(Clients.create(endpoint_url=service.url, local=True),
                     PipelineConfig(bucket=BUCKET), local=True)
    return service.client("sagemaker"), service.client("s3"), service.client("sagemaker-runtime")


@pytest.fixture(scope="module")
def default_run(clients):
    """A run of the main pipeline with the default parameters: (its ARN, its status)."""
    from localservice import wait_for
    from pipelinehelpers import start

    sm, _, _ = clients
    arn = start(sm)
    return arn, wait_for(sm, arn)
