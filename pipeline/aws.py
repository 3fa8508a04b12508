"""AWS client helpers: one place that knows about profiles, regions, endpoints and buckets."""
import os
import uuid
from dataclasses import dataclass
from typing import Optional

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


@dataclass
class Clients:
    """The boto3 clients the CLI needs, all from one session (and one endpoint when local)."""

    session: boto3.Session
    sagemaker: object
    runtime: object
    s3: object
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


def install_pipeline(clients: Clients, config):
    """Upload the job code (what is missing), then create or update the pipeline with exactly
    our definition JSON. Returns (pipeline ARN, "created" or "updated", URIs uploaded)."""
    from pipeline.definition import definition_json
    from pipeline.packaging import build_artifacts, upload_artifacts

    artifacts = build_artifacts(config.prefix)
    ensure_bucket(clients, config.bucket)
    uploaded = upload_artifacts(clients.s3, config.bucket, artifacts)
    body = definition_json(config, artifacts)
    sm = clients.sagemaker
    try:
        arn = sm.update_pipeline(PipelineName=config.pipeline_name, PipelineDefinition=body,
                                 RoleArn=config.role_arn)["PipelineArn"]
        return arn, "updated", uploaded
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("ResourceNotFound", "ValidationException"):
            raise
    arn = sm.create_pipeline(
        PipelineName=config.pipeline_name, PipelineDefinition=body, RoleArn=config.role_arn,
        ClientRequestToken=str(uuid.uuid4()),
        PipelineDescription="MNIST with MXNet: prepare, train, evaluate, gate, register, "
                            "deploy, clean up")["PipelineArn"]
    return arn, "created", uploaded
