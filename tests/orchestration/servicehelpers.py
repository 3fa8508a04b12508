"""Helpers shared by the tests of the local service (its fixtures are in conftest.py)."""
import json
import os
import time

from botocore.exceptions import ClientError

from conftest import ROOT
from localservice import steps_of
from pipeline.packaging import build_artifacts, upload_artifacts

BUCKET = "sagemaker-local"
MNIST = os.path.join(ROOT, "data", "mnist")
ROLE = "arn:aws:iam::000000000000:role/r"


def upload_code(svc):
    s3 = svc.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    artifacts = build_artifacts("mnist-mxnet")
    upload_artifacts(s3, BUCKET, artifacts)
    return artifacts


def _raw(url, request: bytes, timeout=10) -> bytes:
    import socket
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while piece := sock.recv(65536):
                chunks.append(piece)
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(chunks)


SLOW_HANDLERS = '''"""A model that sleeps as long as it is told: for the hosting tests."""
import time


def model_fn(model_dir):
    return None


def input_fn(body, content_type):
    return float(body or 0)


def predict_fn(seconds, model):
    time.sleep(seconds)
    return seconds


def output_fn(prediction, accept):
    return '{"slept": %s}' % prediction
'''


def _model_and_config(sm, name, model_data):
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "img", "ModelDataUrl": model_data})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])


def _until(predicate, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _server_pid(service):
    return service.hosting.servers["sleepy"].process.pid


def _answers(runtime):
    try:
        body = runtime.invoke_endpoint(EndpointName="sleepy", Body=b"0")["Body"].read()
        return json.loads(body) == {"slept": 0.0}
    except ClientError:
        return False


def _sleeping_pipeline(sm, s3, name, seconds):
    """A pipeline whose Processing step prints "sleeping" and sleeps, then a Condition."""
    s3.create_bucket(Bucket="sleeping")
    s3.put_object(Bucket="sleeping", Key=f"{name}/sleep.py", Body=(
        f"import time\nprint('sleeping', flush=True)\ntime.sleep({seconds})\n").encode())
    code_input = {"InputName": "code", "AppManaged": False, "S3Input": {
        "S3Uri": f"s3://sleeping/{name}", "LocalPath": "/opt/ml/processing/input/code",
        "S3DataType": "S3Prefix", "S3InputMode": "File",
        "S3DataDistributionType": "FullyReplicated"}}
    definition = {"Version": "2020-12-01", "Steps": [
        {"Name": "Sleep", "Type": "Processing", "Arguments": {
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "VolumeSizeInGB": 30,
                                                      "InstanceType": "ml.m5.large"}},
            "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": [
                "python3", "/opt/ml/processing/input/code/sleep.py"]},
            "RoleArn": ROLE, "ProcessingInputs": [code_input]}},
        {"Name": "After", "Type": "Condition", "DependsOn": ["Sleep"],
         "Arguments": {"Conditions": []}}]}
    sm.create_pipeline(PipelineName=name, RoleArn=ROLE, PipelineDefinition=json.dumps(definition))


def _job_log_says(sm, home, arn, step, text):
    meta = steps_of(sm, arn).get(step, {}).get("Metadata", {})
    if "ProcessingJob" not in meta:
        return False
    log = os.path.join(home, "logs", meta["ProcessingJob"]["Arn"].split("/")[-1] + ".log")
    return os.path.exists(log) and text in open(log).read()
