"""Helpers of the tests that run the whole pipeline on the local service."""
import contextlib
import gzip
import json
import os

import numpy as np

from conftest import ROOT
from localservice import steps_of, wait_for
from pipeline.config import PARAMETERS

BUCKET = "sagemaker-local"
MNIST = os.path.join(ROOT, "data", "mnist")
EPOCHS = PARAMETERS["Epochs"][1]  # the default run's: one log line each


def idx(name):
    with gzip.open(os.path.join(MNIST, f"{name}.gz")) as handle:
        raw = handle.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def start(sm, **params):
    params.setdefault("MnistSourceUri", MNIST)
    return sm.start_pipeline_execution(
        PipelineName="mnist-mxnet",
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in params.items()],
    )["PipelineExecutionArn"]


def read_s3_json(s3, uri):
    bucket, _, key = uri[5:].partition("/")
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _artifacts():
    folder = os.path.join(ROOT, "test-artifacts")
    os.makedirs(folder, exist_ok=True)
    return folder


@contextlib.contextmanager
def _browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _package_of(sm, arn):
    return steps_of(sm, arn)["Register-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"]


def _deployed_by_rule(sm, runtime, package):
    """The deploy pipeline's execution the approval started: it succeeds and the endpoint
    answers, served by the approved package's model."""
    runs = sm.list_pipeline_executions(PipelineName="mnist-mxnet-deploy", SortBy="CreationTime",
                                       SortOrder="Descending")["PipelineExecutionSummaries"]
    assert runs, "approving started no deploy pipeline execution"
    assert wait_for(sm, runs[0]["PipelineExecutionArn"]) == "Succeeded"
    endpoint = sm.describe_endpoint(EndpointName="mnist-mlp")
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert {"Key": "mnist-mxnet:model-package", "Value": package} in sm.list_tags(
        ResourceArn=model["ModelArn"])["Tags"]
    images, labels = idx("t10k-images-idx3-ubyte")[:20], idx("t10k-labels-idx1-ubyte")[:20]
    answer = json.loads(runtime.invoke_endpoint(
        EndpointName="mnist-mlp", ContentType="application/json",
        Body=json.dumps({"instances": images.tolist()}))["Body"].read())
    digits = [p["digit"] for p in answer["predictions"]]
    assert sum(d == int(label) for d, label in zip(digits, labels)) >= 17
    return runs[0]["PipelineExecutionArn"]
