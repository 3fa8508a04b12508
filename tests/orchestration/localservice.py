"""Start the local SageMaker service for a test, as its own process, on a random port."""
import os
import signal
import time

import boto3
from botocore.config import Config

from pipeline.local import launcher


class ServiceProcess:
    def __init__(self, home):
        self.home, self.proc, self.url = str(home), None, None

    def start(self):
        self.proc, info = launcher.spawn(self.home)
        self.url = info["url"]
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(30)

    def client(self, service, **config):
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local",
                            config=Config(retries={"max_attempts": 1}, **config))


def wait_for(sm, arn, timeout=300, until=("Succeeded", "Failed", "Stopped")):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
            "PipelineExecutionStatus"]
        if status in until:
            return status
        time.sleep(0.5)
    raise TimeoutError(f"{arn} still {status}")


def steps_of(sm, arn):
    return {s["StepName"]: s for s in sm.list_pipeline_execution_steps(
        PipelineExecutionArn=arn)["PipelineExecutionSteps"]}
