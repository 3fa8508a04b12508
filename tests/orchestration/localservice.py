"""Start the local SageMaker service for a test, as its own process, on a random port."""
import json
import os
import signal
import subprocess
import sys
import time

import boto3
from botocore.config import Config

from conftest import ROOT


class ServiceProcess:
    def __init__(self, home):
        self.home, self.proc, self.url = str(home), None, None

    def start(self, timeout=60):
        info_path = os.path.join(self.home, "service.json")
        if os.path.exists(info_path):
            os.remove(info_path)
        os.makedirs(self.home, exist_ok=True)
        self.log = open(os.path.join(self.home, "service.log"), "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.local", "serve", "--home",
                                     self.home, "--port", "0"], cwd=ROOT, stdout=self.log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(info_path):
                with open(info_path) as handle:
                    info = json.load(handle)
                if info["pid"] == self.proc.pid:
                    self.url = info["url"]
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {open(self.log.name).read()}")
            time.sleep(0.1)
        raise RuntimeError("service did not start")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(30)
        self.log.close()

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
