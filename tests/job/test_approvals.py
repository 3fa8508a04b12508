"""The approval rule on the AWS path (moto): the version approved is the version that ships,
rejection rolls back, nothing changes without a reason, and each deployment is logged."""
import json
import time

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends

import approvals
import deploy
import deployment_log
from test_deploy_cleanup import (ENDPOINT, REGION, ROLE, aws, moto_update_endpoint,  # noqa: F401
                                 queue_answer, register, test_dir)

LOG = "s3://data/deployments"


@pytest.fixture
def bucket(aws, test_dir):  # noqa: F811
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="data")
    s3.upload_file(str(test_dir / "test.npz"), "data", "run1/test/test.npz")
    return s3


class Reviewer:
    """Approves and rejects as ``run_pipeline.py approve|reject`` does, a second apart."""

    def __init__(self, sm):
        self.sm, self.now = sm, time.time() + 10

    def __call__(self, arn, status, comment=""):
        self.now += 1
        package = self.sm.describe_model_package(ModelPackageName=arn)
        self.sm.update_model_package(**approvals.approval_update(
            arn, status, "arn:aws:iam::123456789012:user/reviewer", comment, package, self.now))


def event_run(run_id, tmp_path):
    """The approve -> deploy pipeline, as the rule starts it."""
    queue_answer(range(10))
    code = deploy.main(["--model-package-group", "mnist", "--approval-event", "true",
                        "--endpoint-name", ENDPOINT, "--execution-id", run_id,
                        "--role-arn", ROLE, "--test", "package", "--smoke-images", "10",
                        "--deployment-log", LOG, "--failure-file", str(tmp_path / run_id)])
    assert code == 0, (tmp_path / run_id).read_text()


def serving(sm):
    desc = sm.describe_endpoint(EndpointName=ENDPOINT)
    model = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])[
        "ProductionVariants"][0]["ModelName"]
    tags = sm.list_tags(ResourceArn=sm.describe_model(ModelName=model)["ModelArn"])["Tags"]
    return next(t["Value"] for t in tags if t["Key"] == deploy.PACKAGE_TAG).rsplit("/", 1)[-1]


def logged(s3):
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="data", Prefix="deployments/").get(
        "Contents", [])]
    return [json.loads(s3.get_object(Bucket="data", Key=k)["Body"].read()) for k in sorted(keys)]


def test_the_version_approved_ships_and_rejection_rolls_back(aws, bucket, tmp_path,  # noqa: F811
                                                           capsys):
    data = {"TestData": "s3://data/run1/test"}
    review = Reviewer(aws)
    v1 = register(aws, CustomerMetadataProperties={**data, "RegisteredApproval": "Approved"})
    event_run("e1", tmp_path)  # registered Approved, its run over: the event run deploys it
    v2, v3 = (register(aws, "PendingManualApproval", CustomerMetadataProperties=data)
              for _ in range(2))
    assert serving(aws) == "1"
    steps = [(v3, "Approved", "3"), (v2, "Approved", "2"),  # an older version, on purpose
             (v2, "Rejected", "3"), (v3, "Rejected", "1")]
    for number, (arn, status, expected) in enumerate(steps, start=2):
        review(arn, status)
        event_run(f"e{number}", tmp_path)
        assert serving(aws) == expected, (arn, status)
    entries = logged(bucket)
    assert [(e["execution"], e["model_package_arn"].rsplit("/", 1)[-1]) for e in entries] == [
        ("e1", "1"), ("e2", "3"), ("e3", "2"), ("e4", "3"), ("e5", "1")]
    assert entries[1]["previous_config"] == "mnist-test-e1"
    capsys.readouterr()
    event_run("e6", tmp_path)  # an event that changes nothing
    assert "already serves" in capsys.readouterr().out and len(logged(bucket)) == 5
    review(v1, "Rejected", "bad digits")  # the last Approved one: nothing left to ship
    event_run("e7", tmp_path)
    out = capsys.readouterr().out
    assert f"WARNING: endpoint {ENDPOINT} serves {v1}, which is Rejected" in out
    assert serving(aws) == "1" and len(logged(bucket)) == 5


def test_approval_update_keeps_time_comment_and_history(aws):  # noqa: F811
    arn = register(aws, "PendingManualApproval")
    review = Reviewer(aws)
    review(arn, "Approved", "looks good (98.1%), ship it")
    package = aws.describe_model_package(ModelPackageName=arn)
    meta = package["CustomerMetadataProperties"]
    assert package["ApprovalDescription"] == "looks good (98.1%), ship it"
    assert approvals.approval_time(package) == pytest.approx(review.now, abs=0.001)
    assert approvals.history(package) == [(pytest.approx(review.now, abs=0.001),
                                           "Approved by arn:aws:iam::123456789012:user/reviewer "
                                           "- looks good 98.1 ship it")]
    review(arn, "Rejected")
    package = aws.describe_model_package(ModelPackageName=arn)
    assert approvals.APPROVED_AT not in package["CustomerMetadataProperties"]
    assert [text.split(" by ")[0] for _, text in approvals.history(package)] == [
        "Rejected", "Approved"]
    for _ in range(approvals.HISTORY_KEEP + 3):
        review(arn, "Approved")
    rows = approvals.history(aws.describe_model_package(ModelPackageName=arn))
    assert len(rows) == approvals.HISTORY_KEEP and rows[0][0] == pytest.approx(review.now,
                                                                               abs=0.001)
    assert meta  # the first approval's stamp was there


def test_a_package_registered_approved_is_left_to_its_running_run(aws, bucket,  # noqa: F811
                                                                   tmp_path, capsys):
    """SageMaker emits the state-change event on creation too: while the registering run is
    still running, it deploys the package itself; once that run is over, an event deploys it."""
    aws.create_pipeline(PipelineName="p", RoleArn=ROLE, PipelineDefinition=json.dumps(
        {"Version": "2020-12-01", "Steps": []}))
    run = aws.start_pipeline_execution(PipelineName="p")["PipelineExecutionArn"]
    # moto finishes executions at once; the moto internal named here makes this one running
    execution = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].pipelines["p"].pipeline_executions[
        run]
    execution.pipeline_execution_status = "Executing"
    package = register(aws, CustomerMetadataProperties={
        "TestData": "s3://data/run1/test", "RegisteredApproval": "Approved",
        "PipelineExecutionArn": run})
    event_run("e1", tmp_path)
    assert "the pipeline run that registered it is still running" in capsys.readouterr().out
    assert aws.list_endpoints()["Endpoints"] == [] and logged(bucket) == []
    execution.pipeline_execution_status = "Succeeded"
    event_run("e2", tmp_path)
    assert [e["model_package_arn"] for e in logged(bucket)] == [package]


def test_cleanup_logs_the_deleted_endpoint(aws, bucket, tmp_path):  # noqa: F811
    import cleanup

    register(aws, CustomerMetadataProperties={"TestData": "s3://data/run1/test"})
    event_run("e1", tmp_path)
    assert cleanup.main(["--endpoint-name", ENDPOINT, "--keep-endpoint", "false",
                         "--execution-id", "c1", "--deployment-log", LOG]) == 0
    assert [(e["action"], e["execution"]) for e in logged(bucket)] == [
        (deployment_log.DEPLOYED, "e1"), (deployment_log.DELETED, "c1")]
