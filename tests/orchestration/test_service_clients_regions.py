"""Other people's clients against the service (the AWS CLI, the SDK's objects, our CLI's
global options), starting and finding it, and the one region it serves."""
import json
import os
import subprocess
import sys

import boto3
import pytest
from botocore.exceptions import ClientError

from localservice import ServiceProcess
from pipeline.local import launcher
from pipeline.definition import SDK_CONFIG, PipelineConfig, build_pipeline
from servicehelpers import (BUCKET, MNIST, ROLE, upload_code)


def test_the_aws_cli_works_against_it(service):
    upload_code(service)
    service.client("sagemaker").create_model_package_group(ModelPackageGroupName="cli-group")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
           "AWS_DEFAULT_REGION": "us-east-1"}
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    proc = subprocess.run([aws, "--endpoint-url", service.url, "sagemaker",
                           "list-model-package-groups", "--output", "json"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    names = [g["ModelPackageGroupName"] for g in
             json.loads(proc.stdout)["ModelPackageGroupSummaryList"]]
    assert "cli-group" in names
    proc = subprocess.run([aws, "--endpoint-url", service.url, "s3", "ls",
                           f"s3://{BUCKET}/mnist-mxnet/code/", "--recursive"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "sourcedir.tar.gz" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_the_sagemaker_sdks_own_objects_work(service):
    import sagemaker
    artifacts = upload_code(service)
    boto_session = boto3.Session(region_name="us-east-1", aws_access_key_id="local",
                                 aws_secret_access_key="local")
    session = sagemaker.Session(boto_session=boto_session,
                                sagemaker_client=service.client("sagemaker"),
                                sagemaker_runtime_client=service.client("sagemaker-runtime"),
                                default_bucket=BUCKET,
                                sagemaker_config=SDK_CONFIG)  # no telemetry: no network
    pipeline = build_pipeline(PipelineConfig(bucket=BUCKET, pipeline_name="sdk-pipeline"),
                              artifacts)
    pipeline.sagemaker_session = session
    assert pipeline.upsert(role_arn=ROLE)["PipelineArn"].endswith("pipeline/sdk-pipeline")
    assert pipeline.describe()["PipelineName"] == "sdk-pipeline"
    execution = pipeline.start(parameters={
        "MnistSourceUri": MNIST, "Epochs": 2, "AccuracyThreshold": 0.9, "KeepEndpoint": False,
        "EndpointName": "sdk-endpoint"})
    execution.wait(delay=1, max_attempts=300)
    assert execution.describe()["PipelineExecutionStatus"] == "Succeeded"
    steps = {s["StepName"]: s["StepStatus"] for s in execution.list_steps()}
    assert steps["Cleanup"] == "Succeeded" and len(steps) == 8
    with pytest.raises(ClientError):  # KeepEndpoint=false: Cleanup deleted it
        service.client("sagemaker").describe_endpoint(EndpointName="sdk-endpoint")


def test_endpoint_url_option_points_the_cli_at_that_service(service, capsys, monkeypatch):
    from pipeline import cli

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    service.client("sagemaker").create_model_package_group(ModelPackageGroupName="url-group")
    assert cli.main(["--endpoint-url", service.url, "--region", "us-east-1",
                     "--model-package-group", "url-group", "approve", "latest"]) == 2
    assert "no model packages in group url-group" in capsys.readouterr().err
    assert cli.main(["--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1",
                     "approve", "latest"]) == 1  # nothing listens there
    assert "Could not connect" in capsys.readouterr().err


def test_local_and_local_home_start_find_and_stop_a_service(tmp_path, capsys):
    from pipeline import cli

    home = str(tmp_path / "own-home")
    base = ["--local", "--local-home", home]
    assert cli.main(base + ["local", "status"]) == 1
    assert "not running" in capsys.readouterr().out
    try:
        assert cli.main(base + ["local", "start"]) == 0
        url = capsys.readouterr().out.strip()
        with open(os.path.join(home, "service.json")) as handle:
            assert json.load(handle)["url"] == url
        assert cli.main(base + ["executions"]) == 2  # --local: the (empty) service in that home
        assert "Pipeline 'mnist-mxnet' does not exist" in capsys.readouterr().err
        assert cli.main(base + ["local", "status"]) == 0
        assert f"running at {url}" in capsys.readouterr().out
        with open(os.path.join(home, "service.json")) as handle:
            pid = json.load(handle)["pid"]
    finally:
        assert cli.main(base + ["local", "stop"]) == 0
    assert "stopped" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(home, "service.json"))
    with pytest.raises(ChildProcessError):  # stop reaped its own child: no zombie left
        os.waitpid(pid, os.WNOHANG)


def test_a_service_serves_its_homes_region_and_its_arns_name_it(tmp_path, capsys):
    """As a regional endpoint: ARNs carry the region requests are signed for; a request signed
    for another region is AWS's InvalidSignatureException; the home keeps its region."""
    from pipeline import cli

    home = str(tmp_path / "eu-home")
    svc = ServiceProcess(home)
    svc.proc, info = launcher.spawn(home, region="eu-west-1")
    svc.url = info["url"]
    try:
        assert info["region"] == "eu-west-1"
        eu = boto3.client("sagemaker", endpoint_url=svc.url, region_name="eu-west-1",
                          aws_access_key_id="local", aws_secret_access_key="local")
        arn = eu.create_model_package_group(ModelPackageGroupName="regional")[
            "ModelPackageGroupArn"]
        assert arn.startswith("arn:aws:sagemaker:eu-west-1:")
        assert eu.describe_model_package_group(ModelPackageGroupName="regional")[
            "ModelPackageGroupArn"] == arn
        with pytest.raises(ClientError) as err:
            svc.client("sagemaker").list_model_package_groups()  # signed for us-east-1
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert err.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert "Credential should be scoped to a valid region, not 'us-east-1'" in \
            err.value.response["Error"]["Message"]
        assert svc.client("s3").list_buckets()["Buckets"] == []  # S3 takes any region
        # the CLI talks to it in its region, and refuses to mix another in
        base = ["--local", "--local-home", home]
        assert cli.main(base + ["--model-package-group", "regional", "approve", "latest"]) == 2
        assert "no model packages in group regional" in capsys.readouterr().err
        assert cli.main(base + ["--region", "us-east-1", "executions"]) == 2
        assert "serves eu-west-1, not us-east-1" in capsys.readouterr().err
    finally:
        svc.stop()
    with pytest.raises(ValueError, match="keeps resources of eu-west-1, not us-east-1"):
        launcher.spawn(home, region="us-east-1")
    with pytest.raises(ValueError, match="'../eu' is not a region name"):
        launcher.spawn(str(tmp_path / "other-home"), region="../eu")
    svc.proc, info = launcher.spawn(home)  # the home's own region again
    try:
        assert info["region"] == "eu-west-1"
    finally:
        svc.stop()
