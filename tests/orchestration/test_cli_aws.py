"""run_pipeline.py on the AWS path, against moto: upsert, start, review, approve, endpoints."""
import json
import re
import time

import boto3
import botocore.client
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from pipeline import cli
from pipeline.aws import pipeline_missing
from pipeline.commands import parse_param
from pipeline.definition import PipelineConfig, definition_json, deploy_definition_json
from pipeline.packaging import build_artifacts, source_commit
from pipeline.target import invocation
from steps import approvals

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "my-bucket"
BASE = ["--region", REGION, "--bucket", BUCKET, "--role-arn", ROLE]


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("SAGEMAKER_ROLE_ARN", raising=False)
    with mock_aws():
        yield boto3.client("sagemaker", region_name=REGION), boto3.client("s3", region_name=REGION)


def test_upsert_uploads_code_then_sends_exactly_our_definition(aws, capsys):
    sm, s3 = aws
    assert cli.main(BASE + ["upsert"]) == 0
    out = capsys.readouterr().out
    artifacts = build_artifacts("mnist-mxnet")
    for artifact in artifacts.values():
        assert s3.get_object(Bucket=BUCKET, Key=artifact.key)["Body"].read() == artifact.data
        assert artifact.uri(BUCKET) in out
    stored = sm.describe_pipeline(PipelineName="mnist-mxnet")
    expected = definition_json(PipelineConfig(bucket=BUCKET, role_arn=ROLE, region=REGION))
    assert stored["PipelineDefinition"] == expected
    assert stored["RoleArn"] == ROLE

    assert cli.main(BASE + ["upsert"]) == 0  # second time: update, nothing re-uploaded
    out = capsys.readouterr().out
    assert "uploaded" not in out and "updated pipeline" in out


def test_tuning_upserts_the_tuned_variant_beside_the_main_pipeline(aws, capsys):
    """``--tuning`` on AWS (moto): its own pipeline, deploy pipeline and package group, with
    exactly the tuned definition; the main pipeline's names are untouched; its parameters are
    checked against the variant's own (`start` refuses Epochs, which the tuning job searches)."""
    sm, _ = aws
    assert cli.main(BASE + ["--tuning", "upsert"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"created pipeline arn:aws:sagemaker:us-east-1:[0-9]+:pipeline/"
                     r"mnist-mxnet-tuning\n", out)
    config = PipelineConfig(bucket=BUCKET, role_arn=ROLE, region=REGION, tuning=True,
                            pipeline_name="mnist-mxnet-tuning",
                            model_package_group="mnist-mxnet-tuning-models")
    stored = sm.describe_pipeline(PipelineName="mnist-mxnet-tuning")
    assert stored["PipelineDefinition"] == definition_json(config)
    assert sm.describe_pipeline(PipelineName="mnist-mxnet-tuning-deploy")
    assert [p["PipelineName"] for p in sm.list_pipelines()["PipelineSummaries"]
            if p["PipelineName"] == "mnist-mxnet"] == []
    assert cli.main(BASE + ["--tuning", "start", "--no-upsert", "--param", "Epochs=3"]) == 2
    assert "unknown parameter 'Epochs'" in capsys.readouterr().err
    for name in ("TuningMaxJobs", "TuningMaxParallelJobs"):  # at least one, as AWS takes
        assert parse_param(f"{name}=1", tuning=True) == (name, 1)
        assert cli.main(BASE + ["--tuning", "start", "--no-upsert", "--param", f"{name}=0"]) == 2
        assert name in capsys.readouterr().err
    assert parse_param("TuningStrategy=Random", tuning=True) == ("TuningStrategy", "Random")
    assert cli.main(BASE + ["--tuning", "start", "--no-upsert", "--param",
                            "TuningStrategy=Grid"]) == 2
    assert capsys.readouterr().err == (
        "error: parameter TuningStrategy must be one of Bayesian, Random (Grid takes categorical "
        "ranges only, and TuneModel's are not all categorical), got 'Grid'\n")
    # its own endpoint, in both of its pipelines and in its role's policy
    for pipeline in ("mnist-mxnet-tuning", "mnist-mxnet-tuning-deploy"):
        definition = json.loads(sm.describe_pipeline(PipelineName=pipeline)["PipelineDefinition"])
        assert {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}[
            "EndpointName"] == "mnist-mlp-tuned"
    assert cli.main(BASE + ["--tuning", "iam-policy"]) == 0
    policy = capsys.readouterr().out
    assert "endpoint/mnist-mlp-tuned\"" in policy and "endpoint/mnist-mlp\"" not in policy


def test_upsert_installs_approve_then_deploy(aws, capsys):
    """The deploy pipeline, the EventBridge rule on the group's Approved packages whose target
    it is, and the role EventBridge assumes (allowed to start that pipeline only)."""
    sm, _ = aws
    assert cli.main(BASE + ["upsert"]) == 0
    out = capsys.readouterr().out
    config = PipelineConfig(bucket=BUCKET, role_arn=ROLE, region=REGION)
    deploy = sm.describe_pipeline(PipelineName="mnist-mxnet-deploy")
    assert deploy["PipelineDefinition"] == deploy_definition_json(config)
    events = boto3.client("events", region_name=REGION)
    rule = events.describe_rule(Name="mnist-mxnet-approved")
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": ["mnist-mxnet-models"],
                   "ModelApprovalStatus": ["Approved", "Rejected"]}}
    (target,) = events.list_targets_by_rule(Rule="mnist-mxnet-approved")["Targets"]
    assert target["Arn"] == deploy["PipelineArn"]
    assert target["SageMakerPipelineParameters"]["PipelineParameterList"] == [
        {"Name": "ApprovalEvent", "Value": "true"}]
    iam = boto3.client("iam", region_name=REGION)
    role = iam.get_role(RoleName="mnist-mxnet-events")["Role"]
    assert target["RoleArn"] == role["Arn"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "events.amazonaws.com"}
    policy = iam.get_role_policy(RoleName="mnist-mxnet-events",
                                 PolicyName="start-deploy-pipeline")["PolicyDocument"]
    assert policy["Statement"] == [{"Effect": "Allow", "Action": "sagemaker:StartPipelineExecution",
                                    "Resource": deploy["PipelineArn"]}]
    assert f"rule {rule['Arn']} starts mnist-mxnet-deploy" in out
    assert cli.main(BASE + ["upsert"]) == 0  # again: everything updated in place
    assert len(events.list_targets_by_rule(Rule="mnist-mxnet-approved")["Targets"]) == 1
    assert "updated pipeline arn:aws:sagemaker:us-east-1:123456789012:pipeline/mnist-mxnet-deploy" \
        in capsys.readouterr().out


def test_upsert_on_aws_needs_a_role(aws, capsys):
    code = cli.main(["--region", REGION, "--bucket", BUCKET, "upsert"])
    assert code == 2 and "--role-arn" in capsys.readouterr().err


def test_start_passes_typed_overrides_and_lists_executions(aws, capsys):
    sm, _ = aws
    assert cli.main(BASE + ["start", "--param", "Epochs=3", "--param", "KeepEndpoint=false",
                            "--param", "AccuracyThreshold=0.9"]) == 0
    arn = capsys.readouterr().out.split("started ")[1].split()[0]
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)
    commit = source_commit()  # recorded for the package's lineage, when in a checkout
    assert {p["Name"]: p["Value"] for p in params["PipelineParameters"]} == {
        "Epochs": "3", "KeepEndpoint": "false", "AccuracyThreshold": "0.9",
        **({"CodeCommit": commit} if commit else {})}
    assert cli.main(BASE + ["executions"]) == 0
    assert arn.split("/")[-1] in capsys.readouterr().out


@pytest.mark.parametrize("param,message", [
    ("Epochs=many", "parameter Epochs needs a int, got 'many'"),
    ("Epoch=3", "unknown parameter 'Epoch'"),
    ("KeepEndpoint=maybe", "parameter KeepEndpoint needs a bool"),
    ("Epochs", "--param expects Name=Value"),
])
def test_bad_parameters_are_usage_errors(aws, capsys, param, message):
    sm, _ = aws
    assert cli.main(BASE + ["start", "--param", param]) == 2
    assert message in capsys.readouterr().err
    assert sm.list_pipelines()["PipelineSummaries"] == []  # nothing was changed


def test_unknown_command_and_missing_arguments_exit_2(capsys):
    for argv in (["frobnicate"], ["describe"], ["approve"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2


def test_describe_unknown_pipeline_is_a_clear_error(aws, capsys):
    assert cli.main(BASE + ["describe", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Could not find pipeline" in err and "mnist-mxnet" in err


def test_approve_and_reject_latest_package(aws, capsys):
    """`latest` is the group's newest package, whatever the order the API lists them in."""
    sm, _ = aws
    sm.create_model_package_group(ModelPackageGroupName="mnist-mxnet-models")

    def register():
        return sm.create_model_package(
            ModelPackageGroupName="mnist-mxnet-models",
            ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={"Containers": [{"Image": "img", "ModelDataUrl": "s3://b/m"}],
                                    "SupportedContentTypes": ["application/json"],
                                    "SupportedResponseMIMETypes": ["application/json"]},
        )["ModelPackageArn"]

    oldest = register()
    time.sleep(0.01)  # distinct creation times
    newest = register()
    assert cli.main(BASE + ["approve", "latest", "--description", "looks good"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{newest}: Approved (version 2)",
        "no approve -> deploy pipeline (mnist-mxnet-deploy) here: nothing deploys it until "
        f"{' '.join(invocation())} --region {REGION} --bucket {BUCKET} upsert installs it and "
        "its rule"]
    approved = sm.describe_model_package(ModelPackageName=newest)
    assert approved["ModelApprovalStatus"] == "Approved"
    assert approved["ApprovalDescription"] == "looks good"
    (stamp, text), = approvals.history(approved)
    assert text == "Approved by arn:aws:sts::123456789012:user/moto - looks good"
    assert stamp == approvals.approval_time(approved) and abs(stamp - time.time()) < 60
    assert sm.describe_model_package(ModelPackageName=oldest)["ModelApprovalStatus"] == \
        "PendingManualApproval"
    assert cli.main(BASE + ["reject", oldest]) == 0
    assert sm.describe_model_package(ModelPackageName=oldest)["ModelApprovalStatus"] == "Rejected"


def test_delete_endpoint_removes_endpoint_config_and_model(aws, capsys):
    sm, _ = aws
    sm.create_model(ModelName="m1", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img"})
    sm.create_endpoint_config(EndpointConfigName="c1", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "m1", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="mnist-mlp", EndpointConfigName="c1")
    assert cli.main(BASE + ["delete-endpoint", "mnist-mlp"]) == 0
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    assert cli.main(BASE + ["delete-endpoint", "mnist-mlp"]) == 2
    assert "Could not find endpoint" in capsys.readouterr().err


def test_definition_command_writes_a_file(tmp_path):
    target = tmp_path / "definition.json"
    assert cli.main(["--bucket", BUCKET, "definition", "-o", str(target)]) == 0
    assert json.loads(target.read_text())["Version"] == "2020-12-01"


def test_job_logs_on_aws_come_from_cloudwatch(aws):
    """`logs` on AWS: every stream of the job in SageMaker's log group, in order."""
    from pipeline.target import Target, UsageError

    logs = boto3.client("logs", region_name=REGION)
    group = "/aws/sagemaker/TrainingJobs"
    logs.create_log_group(logGroupName=group)
    for stream, lines in (("job-1/algo-1-1700000000", ["epoch=1 train_loss=0.5",
                                                         "epoch=2 train_loss=0.3"]),
                          ("job-10/algo-1-1700000000", ["another job"])):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
            {"timestamp": int(time.time() * 1000) + i, "message": line}
            for i, line in enumerate(lines)])
    target = Target(cli.build_parser().parse_args(BASE + ["executions"]))
    assert target.job_log("job-1") == "epoch=1 train_loss=0.5\nepoch=2 train_loss=0.3\n"
    with pytest.raises(UsageError, match="no CloudWatch log for job 'job-2'"):
        target.job_log("job-2")


def test_upsert_creates_only_when_the_pipeline_is_missing(aws, monkeypatch, capsys):
    """A refused definition (a ValidationException that is not "not found") must surface, not
    be hidden by a CreatePipeline attempt."""

    def error(code, message):
        return ClientError({"Error": {"Code": code, "Message": message}}, "UpdatePipeline")

    assert pipeline_missing(error("ResourceNotFound", "Pipeline 'p' does not exist."))
    assert pipeline_missing(error("ValidationException", "Could not find pipeline with "
                                                         "PipelineName p."))
    assert not pipeline_missing(error("ValidationException", "Invalid pipeline definition: "
                                                             "step 'X' has type 'Y'"))
    assert not pipeline_missing(error("AccessDeniedException", "not allowed"))
    assert cli.main(BASE + ["upsert"]) == 0
    capsys.readouterr()
    created = []
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", _refusing_update(
        botocore.client.BaseClient._make_api_call, created))
    assert cli.main(BASE + ["upsert"]) == 2
    assert "Invalid pipeline definition: cycle" in capsys.readouterr().err
    assert created == []  # no CreatePipeline attempted


def _refusing_update(original, created):
    """UpdatePipeline refuses the definition; CreatePipeline calls are recorded."""
    def call(self, operation, params):
        if operation == "UpdatePipeline":
            raise ClientError({"Error": {"Code": "ValidationException",
                                         "Message": "Invalid pipeline definition: cycle"}},
                              operation)
        if operation == "CreatePipeline":
            created.append(params)
        return original(self, operation, params)
    return call
