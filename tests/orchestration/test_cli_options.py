"""Every global option of run_pipeline.py reaches what it names (AWS side against moto, the
local ones against a local service the test starts)."""
import json

import boto3
import pytest
from moto import mock_aws

from pipeline import cli

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BASE = ["--region", "us-east-1", "--bucket", "my-bucket", "--role-arn", ROLE]


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_PROFILE", "SAGEMAKER_ROLE_ARN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield


def definition(sm, name="mnist-mxnet"):
    return json.loads(sm.describe_pipeline(PipelineName=name)["PipelineDefinition"])


def register_step(body):
    check = next(s for s in body["Steps"] if s["Type"] == "Condition")
    return next(s for s in check["Arguments"]["IfSteps"] if s["Type"] == "RegisterModel")


def test_model_package_group_reaches_the_definition_and_approve(aws, capsys):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    assert cli.main(BASE + ["--model-package-group", "team-models", "upsert"]) == 0
    assert register_step(definition(sm))["Arguments"]["ModelPackageGroupName"] == "team-models"
    sm.create_model_package_group(ModelPackageGroupName="team-models")
    arn = sm.create_model_package(
        ModelPackageGroupName="team-models", ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "img", "ModelDataUrl": "s3://b/m"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    assert cli.main(BASE + ["approve", "latest", "--model-package-group", "team-models"]) == 0
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"
    assert cli.main(BASE + ["approve", "latest"]) == 2  # the default group has none
    assert "no model packages in group mnist-mxnet-models" in capsys.readouterr().err


def test_pipeline_name_bucket_prefix_and_role(aws):
    sm = boto3.client("sagemaker", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    assert cli.main(["--region", "us-east-1", "--role-arn", ROLE, "--bucket", "other-bucket",
                     "--prefix", "team/mnist", "--pipeline-name", "team-pipeline",
                     "upsert"]) == 0
    described = sm.describe_pipeline(PipelineName="team-pipeline")
    assert described["RoleArn"] == ROLE
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="other-bucket")["Contents"]]
    assert keys and all(k.startswith("team/mnist/code/") for k in keys)
    text = described["PipelineDefinition"]
    assert "s3://other-bucket/team/mnist" in text and "mnist-mxnet/" not in text
    assert cli.main(["--region", "us-east-1", "--pipeline-name", "team-pipeline",
                     "executions"]) == 0


def test_region_chooses_where_the_pipeline_lives(aws):
    assert cli.main(["--region", "eu-west-1", "--bucket", "team-bucket", "--role-arn", ROLE,
                     "upsert"]) == 0
    arn = boto3.client("sagemaker", region_name="eu-west-1").describe_pipeline(
        PipelineName="mnist-mxnet")["PipelineArn"]
    assert ":eu-west-1:" in arn
    assert boto3.client("sagemaker", region_name="us-east-1").list_pipelines()[
        "PipelineSummaries"] == []
    image = register_step(definition(boto3.client("sagemaker", region_name="eu-west-1")))[
        "Arguments"]["InferenceSpecification"]["Containers"][0]["Image"]
    assert ".eu-west-1." in image


def test_profile_supplies_region_and_credentials(aws, tmp_path, monkeypatch):
    config = tmp_path / "config"
    config.write_text("[profile team]\nregion = ap-southeast-2\n")
    credentials = tmp_path / "credentials"
    credentials.write_text("[team]\naws_access_key_id = team\naws_secret_access_key = t\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert cli.main(["--profile", "team", "--bucket", "team-bucket", "--role-arn", ROLE,
                     "upsert"]) == 0
    session = boto3.Session(profile_name="team")
    assert ":ap-southeast-2:" in session.client("sagemaker").describe_pipeline(
        PipelineName="mnist-mxnet")["PipelineArn"]
    assert cli.main(["--profile", "nobody", "--bucket", "team-bucket", "upsert"]) != 0


def test_role_from_the_environment_when_no_option(aws, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_ROLE_ARN", "arn:aws:iam::123456789012:role/FromEnv")
    assert cli.main(["--region", "us-east-1", "--bucket", "team-bucket", "upsert"]) == 0
    sm = boto3.client("sagemaker", region_name="us-east-1")
    assert sm.describe_pipeline(PipelineName="mnist-mxnet")["RoleArn"].endswith("/FromEnv")
