"""Where commands run: SageMaker on AWS, or the local service. Everything that differs between
the two lives here (clients, bucket, role, the data source, polling, job logs, the drawing pad's
URL, how to call an endpoint); the commands themselves are the same code."""
import getpass
import os
import shlex
import sys
from typing import Dict, List, Optional

from botocore.exceptions import BotoCoreError, ClientError

from pipeline import aws
from pipeline.config import (DEFAULT_MODEL_PACKAGE_GROUP, DEFAULT_PIPELINE_NAME, DEFAULT_PREFIX,
                             LOCAL_MNIST, PLACEHOLDER_ROLE, TUNING_MODEL_PACKAGE_GROUP,
                             TUNING_PIPELINE_NAME, PipelineConfig)
from pipeline.errors import UsageError
from pipeline.local import launcher
from pipeline.local.home import ServiceHome
from pipeline.packaging import source_commit
from pipeline.review.runs import Sources

LOCAL_BUCKET = "sagemaker-local"


class Target:
    local = False
    poll_seconds = 10.0

    def __init__(self, args):
        self.args = args
        self._clients = None

    def endpoint_url(self) -> Optional[str]:
        return self.args.endpoint_url

    @property
    def clients(self) -> aws.Clients:
        if self._clients is None:
            self._clients = aws.Clients.create(self.args.profile, self.client_region(),
                                               self.endpoint_url(), local=self.local)
        return self._clients

    def client_region(self) -> Optional[str]:
        return self.args.region

    def bucket(self, offline=False) -> str:
        if self.args.bucket:
            return self.args.bucket
        if offline:
            return f"sagemaker-{self.args.region or 'us-east-1'}-ACCOUNT"
        return aws.default_bucket(self.clients)

    def role_required(self) -> bool:
        """AWS needs a real role; a local service (any endpoint URL) takes any."""
        return self.args.endpoint_url is None

    def role(self, required=False) -> str:
        role = self.args.role_arn or aws.role_from_environment()
        if role is None and required:
            raise UsageError("an execution role is needed: pass --role-arn or set "
                             "SAGEMAKER_ROLE_ARN")
        return role or PLACEHOLDER_ROLE

    def pipeline_config(self, offline=False, role_required=False) -> PipelineConfig:
        region = self.args.region or (None if offline else self.clients.region) or "us-east-1"
        return PipelineConfig(bucket=self.bucket(offline), role_arn=self.role(role_required),
                              region=region, pipeline_name=self.args.pipeline_name,
                              tuning=self.args.tuning,
                              prefix=self.args.prefix,
                              model_package_group=self.args.model_package_group)

    def parameter_overrides(self) -> Dict[str, object]:
        """Parameters this target sets unless the user does: the code's commit, when known."""
        commit = source_commit()
        return {"CodeCommit": commit} if commit else {}

    def job_log(self, job: str) -> str:
        """A job's log from CloudWatch Logs (SageMaker writes one stream per instance, named
        after the job, in /aws/sagemaker/TrainingJobs or /aws/sagemaker/ProcessingJobs)."""
        logs = self.clients.logs
        for group in ("/aws/sagemaker/TrainingJobs", "/aws/sagemaker/ProcessingJobs"):
            try:
                streams = logs.describe_log_streams(
                    logGroupName=group, logStreamNamePrefix=f"{job}/")["logStreams"]
            except logs.exceptions.ResourceNotFoundException:
                continue
            lines = []
            for stream in sorted(s["logStreamName"] for s in streams):
                token = None
                while True:
                    page = logs.get_log_events(logGroupName=group, logStreamName=stream,
                                               startFromHead=True,
                                               **({"nextToken": token} if token else {}))
                    lines += [event["message"] for event in page["events"]]
                    if not page["events"] or page.get("nextForwardToken") == token:
                        break
                    token = page.get("nextForwardToken")
            if lines:
                return "\n".join(lines) + "\n"
        raise UsageError(f"no CloudWatch log for job {job!r}")

    def read_s3(self, uri: str) -> bytes:
        bucket, _, key = uri[len("s3://"):].partition("/")
        return self.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def list_s3(self, uri: str) -> List[str]:
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        try:
            pages = self.clients.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix)
            return [f"s3://{bucket}/{o['Key']}" for page in pages
                    for o in page.get("Contents", [])]
        except ClientError as err:
            if err.response["Error"]["Code"] == "NoSuchBucket":
                return []
            raise

    def review_sources(self) -> Sources:
        return Sources(self.clients.sagemaker, self.read_s3, self.job_log, self.list_s3)

    def drawing_pad_url(self, endpoint: str) -> Optional[str]:
        """A page that already serves the pad for this endpoint, if the target has one."""
        return None

    def review_url(self, arn: str) -> Optional[str]:
        """A page reviewing the execution, where the target serves one (Studio is the AWS
        console's, behind a login: not linked)."""
        return None

    def invoke_hints(self, endpoint: str) -> List[str]:
        base = self.clients.endpoint_url
        if base:
            return [f"call it: curl -s -X POST {base}/endpoints/{endpoint}/invocations "
                    "-H 'Content-Type: application/json' -d @digit.json",
                    f"or boto3: AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={base} and "
                    f"invoke_endpoint(EndpointName='{endpoint}', ...)"]
        return [f"call it: boto3.client('sagemaker-runtime').invoke_endpoint("
                f"EndpointName='{endpoint}', ContentType='application/json', Body=...)"]

    def identity(self) -> str:
        """Who acts, for the approval history: the caller's IAM identity."""
        try:
            return self.clients.session.client("sts").get_caller_identity()["Arn"]
        except (ClientError, BotoCoreError):
            return "unknown caller"

    def command(self, words: str) -> str:
        """An exact command line that repeats this one's options (a hint to copy)."""
        return " ".join([*invocation(), *self._options(), words])

    def _options(self) -> List[str]:
        tuning = getattr(self.args, "tuning", False)
        given = [(flag, getattr(self.args, attr, None), default) for flag, attr, default in (
            ("--profile", "profile", None), ("--region", "region", None),
            ("--endpoint-url", "endpoint_url", None), ("--bucket", "bucket", None),
            ("--prefix", "prefix", DEFAULT_PREFIX),
            ("--pipeline-name", "pipeline_name",
             TUNING_PIPELINE_NAME if tuning else DEFAULT_PIPELINE_NAME),
            ("--model-package-group", "model_package_group",
             TUNING_MODEL_PACKAGE_GROUP if tuning else DEFAULT_MODEL_PACKAGE_GROUP))]
        return ["--tuning"] * tuning + [f"{flag} {shlex.quote(str(value))}"
                                         for flag, value, default in given
                                         if value not in (None, default)]


class LocalTarget(Target):
    """The local service on ``--local-home``, started in the background when none runs."""

    local = True
    poll_seconds = 1.0

    _service = None  # the running service's service.json, once found or started

    def service(self) -> dict:
        """The service on ``--local-home`` (url, region), started when none runs."""
        if self._service is None:
            try:
                self._service = launcher.ensure_running(self.args.local_home, self.args.region)
            except ValueError as err:  # another region's home, or not a region name
                raise UsageError(str(err))
        return self._service

    def endpoint_url(self):
        return self.args.endpoint_url or self.service()["url"]

    def client_region(self):
        """The region the service serves: requests signed for another are refused."""
        if self.args.region or self.args.endpoint_url:
            return self.args.region
        return self.service().get("region")

    def bucket(self, offline=False):
        return self.args.bucket or LOCAL_BUCKET

    def role_required(self):
        return False

    def parameter_overrides(self):
        # the shipped copy: no network needed
        return {**super().parameter_overrides(), "MnistSourceUri": LOCAL_MNIST}

    def job_log(self, job):
        try:
            path = ServiceHome(self.args.local_home).job_log(job)
        except ValueError as err:
            raise UsageError(f"no log for job {job!r}: {err}")
        if not os.path.isfile(path):
            raise UsageError(f"no log for job {job!r} (job names are in `describe`)")
        with open(path, errors="replace") as handle:
            return handle.read()

    def drawing_pad_url(self, endpoint):
        return f"{self.clients.endpoint_url}/draw/{endpoint}"

    def review_url(self, arn):
        pipeline, execution = arn.split("/")[1], arn.split("/")[-1]
        return f"{self.clients.endpoint_url}/executions/{pipeline}/{execution}"

    def identity(self):
        return f"local user {getpass.getuser()}"

    def _options(self):
        home = self.args.local_home
        return ["--local", *([f"--local-home {shlex.quote(home)}"]
                             if home != launcher.default_home() else []), *super()._options()]


def invocation() -> List[str]:
    """How this program was run: the interpreter (relative when it is under the working
    folder, as a virtualenv's usually is) and the script as typed."""
    python = sys.executable
    relative = os.path.relpath(python)
    if not relative.startswith(".."):
        python = relative if os.sep in relative else f".{os.sep}{relative}"
    script = sys.argv[0] if os.path.basename(sys.argv[0]) == "run_pipeline.py" else \
        "run_pipeline.py"  # (run another way, e.g. cli.main from a test: the usual script)
    return [shlex.quote(python), shlex.quote(script)]


def target_for(args) -> Target:
    return LocalTarget(args) if args.local else Target(args)
