"""The whole pipeline on the local service, for real, on the shipped full MNIST, through boto3."""
import gzip
import json
import os

import numpy as np
import pytest

from conftest import ROOT
from localservice import ServiceProcess, steps_of, wait_for
from pipeline.definition import PipelineConfig, definition_json
from pipeline.packaging import build_artifacts, upload_artifacts

BUCKET = "sagemaker-local"
MNIST = os.path.join(ROOT, "data", "mnist")
pytestmark = pytest.mark.slow


def idx(name):
    with gzip.open(os.path.join(MNIST, f"{name}.gz")) as handle:
        raw = handle.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = ServiceProcess(tmp_path_factory.mktemp("local-sagemaker")).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def clients(service):
    sm, s3 = service.client("sagemaker"), service.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    artifacts = build_artifacts("mnist-mxnet")
    upload_artifacts(s3, BUCKET, artifacts)
    sm.create_pipeline(PipelineName="mnist-mxnet", RoleArn="arn:aws:iam::000000000000:role/r",
                       PipelineDefinition=definition_json(PipelineConfig(bucket=BUCKET),
                                                          artifacts))
    return sm, s3, service.client("sagemaker-runtime")


def start(sm, **params):
    params.setdefault("MnistSourceUri", MNIST)
    return sm.start_pipeline_execution(
        PipelineName="mnist-mxnet",
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in params.items()],
    )["PipelineExecutionArn"]


def read_s3_json(s3, uri):
    bucket, _, key = uri[5:].partition("/")
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture(scope="module")
def default_run(clients):
    sm, _, _ = clients
    arn = start(sm)
    return arn, wait_for(sm, arn)


def test_default_parameters_succeed_register_and_deploy(clients, default_run):
    sm, s3, runtime = clients
    arn, status = default_run
    steps = steps_of(sm, arn)
    assert status == "Succeeded", {n: s.get("FailureReason") for n, s in steps.items()}
    assert set(steps) == {"PrepareData", "TrainModel", "EvaluateModel", "CheckAccuracy",
                          "Register-RegisterModel", "DeployModel", "Cleanup"}
    assert all(s["StepStatus"] == "Succeeded" for s in steps.values())
    assert steps["CheckAccuracy"]["Metadata"]["Condition"]["Outcome"] == "True"

    training = sm.describe_training_job(
        TrainingJobName=steps["TrainModel"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1])
    metrics = {m["MetricName"]: m["Value"] for m in training["FinalMetricDataList"]}
    assert metrics["validation_accuracy"] > 0.97

    package_arn = steps["Register-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"]
    package = sm.describe_model_package(ModelPackageName=package_arn)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == \
        training["ModelArtifacts"]["S3ModelArtifacts"]
    evaluation = read_s3_json(s3, package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"])
    assert evaluation["metrics"]["accuracy"]["value"] >= 0.97

    endpoint = sm.describe_endpoint(EndpointName="mnist-mlp")
    assert endpoint["EndpointStatus"] == "InService"
    images, labels = idx("t10k-images-idx3-ubyte")[-200:], idx("t10k-labels-idx1-ubyte")[-200:]
    response = runtime.invoke_endpoint(EndpointName="mnist-mlp", ContentType="application/json",
                                       Body=json.dumps(images.reshape(200, 784).tolist()))
    digits = [p["digit"] for p in json.loads(response["Body"].read())["predictions"]]
    assert np.mean(np.array(digits) == labels) >= 0.97


def test_a_threshold_too_high_fails_at_the_gate_and_changes_nothing(clients, default_run):
    sm, _, _ = clients
    packages = sm.list_model_packages(ModelPackageGroupName="mnist-mxnet-models")[
        "ModelPackageSummaryList"]
    before = sm.describe_endpoint(EndpointName="mnist-mlp")
    arn = start(sm, AccuracyThreshold=0.999, Epochs=2)
    assert wait_for(sm, arn) == "Failed"
    steps = steps_of(sm, arn)
    reason = sm.describe_pipeline_execution(PipelineExecutionArn=arn)["FailureReason"]
    assert reason.startswith("Test accuracy 0.9") and "is below AccuracyThreshold 0.999" in reason
    assert steps["AccuracyTooLow"]["StepStatus"] == "Failed"
    assert steps["AccuracyTooLow"]["FailureReason"] == reason
    assert steps["CheckAccuracy"]["Metadata"]["Condition"]["Outcome"] == "False"
    assert not {"Register-RegisterModel", "DeployModel", "Cleanup"} & set(steps)
    assert sm.list_model_packages(ModelPackageGroupName="mnist-mxnet-models")[
        "ModelPackageSummaryList"] == packages
    after = sm.describe_endpoint(EndpointName="mnist-mlp")
    assert after["EndpointConfigName"] == before["EndpointConfigName"]
    assert after["LastModifiedTime"] == before["LastModifiedTime"]
    assert len(sm.list_endpoints()["Endpoints"]) == 1


def test_job_logs_and_parameters_are_kept(clients, default_run, service):
    sm, _, _ = clients
    arn, _ = default_run
    params = {p["Name"]: p["Value"] for p in sm.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=arn)["PipelineParameters"]}
    assert params["Epochs"] == "20" and params["KeepEndpoint"] == "true"
    job = steps_of(sm, arn)["TrainModel"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1]
    with open(os.path.join(service.home, "logs", f"{job}.log")) as handle:
        log = handle.read()
    assert log.count("validation_accuracy=") == 20
