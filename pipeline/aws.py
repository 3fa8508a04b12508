"""AWS client helpers: one place that knows about profiles, regions, endpoints and buckets."""
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from pipeline.iam import events_role_policy


@dataclass
class Clients:
    """The boto3 clients the CLI needs, all from one session (and one endpoint when local)."""

    session: boto3.Session
    sagemaker: Any  # a boto3 client (or the local backend in its shape)
    runtime: Any  # a boto3 client (or the local backend in its shape)
    s3: Any  # a boto3 client (or the local backend in its shape)
    events: Any  # a boto3 client (or the local backend in its shape)
    logs: Any  # a boto3 client (or the local backend in its shape)
    endpoint_url: Optional[str] = None

    @classmethod
    def create(cls, profile=None, region=None, endpoint_url=None, local=False):
        """AWS clients; with ``local`` every client talks to the local service at
        ``endpoint_url`` with placeholder credentials (it does not check them)."""
        if local:
            session = boto3.Session(region_name=region or "us-east-1",
                                    aws_access_key_id="local", aws_secret_access_key="local")
        else:
            session = boto3.Session(profile_name=profile, region_name=region)
            if session.region_name is None:
                session = boto3.Session(profile_name=profile, region_name="us-east-1")
        retry = Config(retries={"max_attempts": 5, "mode": "standard"},
                       request_checksum_calculation="when_required",
                       response_checksum_validation="when_required")
        kwargs = {"config": retry}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        s3_kwargs = dict(kwargs)
        if endpoint_url:
            s3_kwargs["config"] = retry.merge(Config(s3={"addressing_style": "path"}))
        return cls(session=session,
                   sagemaker=session.client("sagemaker", **kwargs),
                   runtime=session.client("sagemaker-runtime", **kwargs),
                   s3=session.client("s3", **s3_kwargs),
                   events=session.client("events", **kwargs),
                   logs=session.client("logs", **kwargs),
                   endpoint_url=endpoint_url)

    @property
    def region(self):
        return self.session.region_name


def default_bucket(clients: Clients) -> str:
    """SageMaker's default bucket name for the caller's account and region (one STS call)."""
    account = clients.session.client("sts").get_caller_identity()["Account"]
    return f"sagemaker-{clients.region}-{account}"


def ensure_bucket(clients: Clients, bucket: str):
    try:
        clients.s3.head_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
        if clients.region == "us-east-1":
            clients.s3.create_bucket(Bucket=bucket)
        else:
            clients.s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": clients.region})


def role_from_environment() -> Optional[str]:
    return os.environ.get("SAGEMAKER_ROLE_ARN")


PIPELINE_TAGS = [{"Key": "project", "Value": "mnist-mxnet"}]
DESCRIPTIONS = {
    "main": "MNIST with MXNet: prepare, train, evaluate, gate on test accuracy, register, "
            "deploy when Approved, clean up",
    "deploy": "Approve -> deploy: put the group's most recently approved model package behind "
              "the endpoint, then clean up (started by an EventBridge rule on approvals and "
              "rejections)",
}
# What EventBridge may do with the role upsert gives it: start the deploy pipeline, no more.
EVENTS_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


def approval_pattern(group: str) -> dict:
    """The rule's pattern: a package of the group changed state and is Approved or Rejected
    (rejecting the live version rolls the endpoint back to the most recently approved one)."""
    return {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
            "detail": {"ModelPackageGroupName": [group],
                       "ModelApprovalStatus": ["Approved", "Rejected"]}}


def pipeline_missing(err: ClientError) -> bool:
    """Whether an error says the pipeline does not exist: AWS answers ResourceNotFound; some
    implementations (moto) a ValidationException that says so. Any other error, a definition
    refused for one, is not a reason to create."""
    error = err.response["Error"]
    if error.get("Code") == "ResourceNotFound":
        return True
    message = error.get("Message", "").lower()
    return error.get("Code") == "ValidationException" and (
        "does not exist" in message or "could not find pipeline" in message)


def _upsert_pipeline(sm, name, body, role_arn, description):
    """Update the pipeline; create it only when it does not exist."""
    try:
        arn = sm.update_pipeline(PipelineName=name, PipelineDefinition=body, RoleArn=role_arn,
                                 PipelineDescription=description)["PipelineArn"]
        return arn, "updated"
    except ClientError as err:
        if not pipeline_missing(err):
            raise
    arn = sm.create_pipeline(
        PipelineName=name, PipelineDefinition=body, RoleArn=role_arn,
        ClientRequestToken=str(uuid.uuid4()), PipelineDescription=description,
        Tags=PIPELINE_TAGS)["PipelineArn"]
    return arn, "created"


def events_role(clients: Clients, config, deploy_pipeline_arn) -> str:
    """The role EventBridge assumes to start the deploy pipeline (created or updated)."""
    iam = clients.session.client("iam")
    name = f"{config.pipeline_name}-events"[:64]
    try:
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    except ClientError as err:
        if err.response["Error"]["Code"] != "NoSuchEntity":
            raise
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EVENTS_TRUST),
                              Description="EventBridge starts the approve -> deploy pipeline",
                              Tags=PIPELINE_TAGS)["Role"]["Arn"]
    policy = events_role_policy(config, account=deploy_pipeline_arn.split(":")[4])
    iam.put_role_policy(RoleName=name, PolicyName="start-deploy-pipeline",
                        PolicyDocument=json.dumps(policy))
    return arn


def install_approval_rule(clients: Clients, config, deploy_pipeline_arn, role_arn) -> str:
    """The EventBridge rule: an Approved package of the group starts the deploy pipeline."""
    events = clients.events
    rule_arn = events.put_rule(
        Name=config.approval_rule_name, EventPattern=json.dumps(
            approval_pattern(config.model_package_group)), State="ENABLED",
        Description=f"Deploy approved packages of {config.model_package_group}",
        Tags=PIPELINE_TAGS)["RuleArn"]
    answer = events.put_targets(Rule=config.approval_rule_name, Targets=[{
        "Id": "deploy-pipeline", "Arn": deploy_pipeline_arn, "RoleArn": role_arn,
        "SageMakerPipelineParameters": {"PipelineParameterList": [
            {"Name": "ApprovalEvent", "Value": "true"}]}}])
    if answer["FailedEntryCount"]:
        raise RuntimeError(f"EventBridge refused the target: {answer['FailedEntries']}")
    return rule_arn


def install_pipeline(clients: Clients, config, local=False):
    """Upload the job code (what is missing), then create or update both pipelines with exactly
    our definitions, and the approve -> deploy rule (with its role on AWS). Returns the lines
    to report: what was uploaded, created and updated."""
    from pipeline.definition import definition_json, deploy_definition_json
    from pipeline.packaging import build_artifacts, upload_artifacts

    artifacts = build_artifacts(config.prefix)
    ensure_bucket(clients, config.bucket)
    report = [f"uploaded {uri}" for uri in upload_artifacts(clients.s3, config.bucket, artifacts)]
    sm = clients.sagemaker
    arn, action = _upsert_pipeline(sm, config.pipeline_name, definition_json(config, artifacts),
                                   config.role_arn, DESCRIPTIONS["main"])
    report.append(f"{action} pipeline {arn}")
    deploy_arn, action = _upsert_pipeline(
        sm, config.deploy_pipeline_name, deploy_definition_json(config, artifacts),
        config.role_arn, DESCRIPTIONS["deploy"])
    report.append(f"{action} pipeline {deploy_arn}")
    role = config.role_arn if local else events_role(clients, config, deploy_arn)
    rule = install_approval_rule(clients, config, deploy_arn, role)
    report.append(f"approve -> deploy: rule {rule} starts {config.deploy_pipeline_name}")
    return report
