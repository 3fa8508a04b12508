"""``run_pipeline.py``: build, upsert, start and review the MNIST pipeline on AWS or locally.

Exit codes: 0 success, 1 the execution (or the operation) failed, 2 usage or input error.
"""
import argparse
import json
import os
import sys
import time

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from pipeline import aws
from pipeline.local import launcher
from pipeline.config import (DEFAULT_MODEL_PACKAGE_GROUP, DEFAULT_PIPELINE_NAME, DEFAULT_PREFIX,
                             PARAMETERS, PLACEHOLDER_ROLE, PipelineConfig)

FINAL_STATUSES = {"Succeeded", "Failed", "Stopped"}
LOCAL_BUCKET = "sagemaker-local"
LOCAL_MNIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "data", "mnist")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: exit code 2."""


def parse_param(text):
    """'Name=Value' -> (Name, typed value), checked against the pipeline's parameters."""
    name, sep, raw = text.partition("=")
    if not sep:
        raise UsageError(f"--param expects Name=Value, got {text!r}")
    if name not in PARAMETERS:
        raise UsageError(f"unknown parameter {name!r}; known: {', '.join(PARAMETERS)}")
    kind = PARAMETERS[name][0]
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError
            return name, raw.lower() == "true"
        return name, kind(raw)
    except ValueError:
        raise UsageError(f"parameter {name} needs a {kind.__name__}, got {raw!r}")


def _render(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


class Context:
    """Resolved settings and clients for one command."""

    def __init__(self, args):
        self.args = args
        self._clients = None

    @property
    def local(self):
        return self.args.local

    @property
    def clients(self):
        if self._clients is None:
            url = self.args.endpoint_url
            if self.local and not url:
                url = launcher.ensure_running(self.args.local_home)
            self._clients = aws.Clients.create(self.args.profile, self.args.region, url,
                                               local=self.local)
        return self._clients

    def bucket(self, offline=False):
        if self.args.bucket:
            return self.args.bucket
        if self.local:
            return LOCAL_BUCKET
        if offline:
            return f"sagemaker-{self.args.region or 'us-east-1'}-ACCOUNT"
        return aws.default_bucket(self.clients)

    def role(self, required):
        role = self.args.role_arn or aws.role_from_environment()
        if role is None and required:
            raise UsageError("an execution role is needed: pass --role-arn or set "
                             "SAGEMAKER_ROLE_ARN")
        return role or PLACEHOLDER_ROLE

    def config(self, offline=False, role_required=False):
        return PipelineConfig(bucket=self.bucket(offline), role_arn=self.role(role_required),
                              region=self.args.region or (None if offline else self.clients.region)
                              or "us-east-1",
                              pipeline_name=self.args.pipeline_name, prefix=self.args.prefix)

    def pipeline_arn(self):
        desc = self.clients.sagemaker.describe_pipeline(PipelineName=self.args.pipeline_name)
        return desc["PipelineArn"]

    def execution_arn(self, ref):
        if ref.startswith("arn:"):
            return ref
        return f"{self.pipeline_arn()}/execution/{ref}"


def cmd_definition(ctx):
    from pipeline.definition import definition_json  # the SDK: imported only when needed

    text = definition_json(ctx.config(offline=True))
    if ctx.args.output:
        with open(ctx.args.output, "w") as handle:
            handle.write(text)
        print(f"wrote {ctx.args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def upsert(ctx):
    """Upload code, then create or update the pipeline with exactly our definition JSON."""
    config = ctx.config(role_required=not ctx.local and ctx.clients.endpoint_url is None)
    arn, action, uploaded = aws.install_pipeline(ctx.clients, config)
    for uri in uploaded:
        print(f"uploaded {uri}")
    print(f"{action} pipeline {arn}")
    return arn


def cmd_upsert(ctx):
    upsert(ctx)
    return EXIT_OK


def cmd_start(ctx):
    overrides = dict(parse_param(p) for p in ctx.args.param or [])
    if ctx.local and "MnistSourceUri" not in overrides:
        overrides["MnistSourceUri"] = LOCAL_MNIST  # the shipped copy: no network needed
    if not ctx.args.no_upsert:
        upsert(ctx)
    response = ctx.clients.sagemaker.start_pipeline_execution(
        PipelineName=ctx.args.pipeline_name,
        PipelineParameters=[{"Name": k, "Value": _render(v)} for k, v in overrides.items()],
        PipelineExecutionDisplayName=ctx.args.display_name or f"run-{int(time.time())}")
    arn = response["PipelineExecutionArn"]
    print(f"started {arn}")
    if not ctx.args.wait:
        return EXIT_OK
    return wait_and_report(ctx, arn)


def list_steps(sm, arn):
    steps, token = [], None
    while True:
        kwargs = {"PipelineExecutionArn": arn, "SortOrder": "Ascending"}
        if token:
            kwargs["NextToken"] = token
        page = sm.list_pipeline_execution_steps(**kwargs)
        steps += page["PipelineExecutionSteps"]
        token = page.get("NextToken")
        if not token:
            return steps


def _step_line(step):
    line = f"  {step['StepName']:<24} {step['StepStatus']}"
    if step.get("FailureReason"):
        line += f": {step['FailureReason']}"
    return line


def wait_and_report(ctx, arn, poll=None):
    """Show step status changes live until the execution ends; exit code from its status."""
    sm = ctx.clients.sagemaker
    poll = poll or ctx.args.poll_seconds or (1.0 if ctx.local else 10.0)
    seen, started = {}, time.time()
    while True:
        desc = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
        for step in list_steps(sm, arn):
            key = step["StepName"]
            if seen.get(key) != step["StepStatus"]:
                seen[key] = step["StepStatus"]
                print(f"[{time.time() - started:6.1f}s]{_step_line(step)}", flush=True)
        status = desc["PipelineExecutionStatus"]
        if status in FINAL_STATUSES:
            break
        time.sleep(poll)
    print(f"execution {status} after {time.time() - started:.1f}s")
    if desc.get("FailureReason"):
        print(f"reason: {desc['FailureReason']}")
    summarize(ctx, arn)
    return EXIT_OK if status == "Succeeded" else EXIT_FAILED


def _read_s3_json(ctx, uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return json.loads(ctx.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def summarize(ctx, arn):
    """What a person wants after a run: accuracy, the model package, the endpoint."""
    sm = ctx.clients.sagemaker
    steps = {s["StepName"]: s for s in list_steps(sm, arn)}
    params = {p["Name"]: p["Value"] for p in sm.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=arn)["PipelineParameters"]}
    evaluate = steps.get("EvaluateModel", {}).get("Metadata", {}).get("ProcessingJob")
    if evaluate and steps["EvaluateModel"]["StepStatus"] == "Succeeded":
        job = sm.describe_processing_job(ProcessingJobName=evaluate["Arn"].split("/")[-1])
        out = next(o for o in job["ProcessingOutputConfig"]["Outputs"]
                   if o["OutputName"] == "evaluation")
        try:
            metrics = _read_s3_json(ctx, out["S3Output"]["S3Uri"].rstrip("/")
                                    + "/evaluation.json")["metrics"]
            print(f"test accuracy: {metrics['accuracy']['value']:.4f} "
                  f"(threshold {params.get('AccuracyThreshold')})")
        except (ClientError, KeyError, ValueError) as err:
            print(f"test accuracy: unavailable ({err})")
    register = next((s["Metadata"]["RegisterModel"]["Arn"] for s in steps.values()
                     if "RegisterModel" in s.get("Metadata", {})), None)
    if register:
        print(f"model package: {register}")
    deployed = steps.get("DeployModel", {}).get("StepStatus") == "Succeeded"
    name = params.get("EndpointName")
    if deployed and name:
        try:
            endpoint = sm.describe_endpoint(EndpointName=name)
        except ClientError:
            print(f"endpoint {name}: deleted by Cleanup (KeepEndpoint=false)")
            return
        print(f"endpoint: {name} ({endpoint['EndpointStatus']}, config "
              f"{endpoint['EndpointConfigName']})")
        base = ctx.clients.endpoint_url
        if base:
            print(f"  call it: curl -s -X POST {base}/endpoints/{name}/invocations "
                  "-H 'Content-Type: application/json' -d @digit.json")
            print(f"  or boto3: AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={base} and "
                  f"invoke_endpoint(EndpointName='{name}', ...)")
        else:
            print(f"  call it: boto3.client('sagemaker-runtime').invoke_endpoint("
                  f"EndpointName='{name}', ContentType='application/json', Body=...)")
        print(f"  delete it: run_pipeline.py{' --local' if ctx.local else ''} "
              f"delete-endpoint {name}")


def cmd_executions(ctx):
    sm = ctx.clients.sagemaker
    page = sm.list_pipeline_executions(PipelineName=ctx.args.pipeline_name,
                                       SortBy="CreationTime", SortOrder="Descending",
                                       MaxResults=ctx.args.limit)
    rows = page["PipelineExecutionSummaries"]
    if not rows:
        print(f"no executions of {ctx.args.pipeline_name}")
    for row in rows:
        print(f"{row['PipelineExecutionArn'].split('/')[-1]:<16} "
              f"{row['PipelineExecutionStatus']:<10} {row['StartTime']:%Y-%m-%d %H:%M:%S} "
              f"{row.get('PipelineExecutionDisplayName', '')}")
    return EXIT_OK


def cmd_describe(ctx):
    sm = ctx.clients.sagemaker
    arn = ctx.execution_arn(ctx.args.execution)
    desc = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)
    print(f"execution {arn}")
    print(f"status    {desc['PipelineExecutionStatus']}")
    if desc.get("FailureReason"):
        print(f"reason    {desc['FailureReason']}")
    print("parameters: " + ", ".join(f"{p['Name']}={p['Value']}"
                                     for p in params["PipelineParameters"]))
    print("steps:")
    for step in list_steps(sm, arn):
        print(_step_line(step))
        meta = step.get("Metadata", {})
        for kind, value in meta.items():
            if isinstance(value, dict) and "Arn" in value:
                print(f"    {kind}: {value['Arn']}")
        if "TrainingJob" in meta:
            job = sm.describe_training_job(
                TrainingJobName=meta["TrainingJob"]["Arn"].split("/")[-1])
            metrics = ", ".join(f"{m['MetricName']}={m['Value']:.4f}"
                                for m in job.get("FinalMetricDataList", []))
            if metrics:
                print(f"    final metrics: {metrics}")
        if "Condition" in meta:
            print(f"    outcome: {meta['Condition'].get('Outcome')}")
    return EXIT_OK if desc["PipelineExecutionStatus"] != "Failed" else EXIT_FAILED


def _package_arn(ctx, ref):
    if ref != "latest":
        return ref
    page = ctx.clients.sagemaker.list_model_packages(
        ModelPackageGroupName=ctx.args.model_package_group, SortBy="CreationTime",
        SortOrder="Descending", MaxResults=1)
    if not page["ModelPackageSummaryList"]:
        raise UsageError(f"no model packages in group {ctx.args.model_package_group}")
    return page["ModelPackageSummaryList"][0]["ModelPackageArn"]


def _set_approval(ctx, status):
    arn = _package_arn(ctx, ctx.args.package)
    kwargs = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if ctx.args.description:
        kwargs["ApprovalDescription"] = ctx.args.description
    ctx.clients.sagemaker.update_model_package(**kwargs)
    print(f"{arn}: {status}")
    return EXIT_OK


def cmd_approve(ctx):
    return _set_approval(ctx, "Approved")


def cmd_reject(ctx):
    return _set_approval(ctx, "Rejected")


def cmd_delete_endpoint(ctx):
    sm = ctx.clients.sagemaker
    name = ctx.args.endpoint
    desc = sm.describe_endpoint(EndpointName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    sm.delete_endpoint(EndpointName=name)
    sm.delete_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    for variant in config["ProductionVariants"]:
        sm.delete_model(ModelName=variant["ModelName"])
    print(f"deleted endpoint {name}, its config {desc['EndpointConfigName']} and "
          f"{len(config['ProductionVariants'])} model(s)")
    return EXIT_OK


def _add_global_options(parser, defaults):
    def d(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--profile", default=d(None),
                        help="AWS profile (default: the standard AWS chain)")
    parser.add_argument("--region", default=d(None),
                        help="AWS region (default: the profile's, else us-east-1)")
    parser.add_argument("--role-arn", default=d(None),
                        help="SageMaker execution role (or SAGEMAKER_ROLE_ARN)")
    parser.add_argument("--bucket", default=d(None),
                        help="S3 bucket for code and data (default: sagemaker-REGION-ACCOUNT)")
    parser.add_argument("--prefix", default=d(DEFAULT_PREFIX), help="S3 key prefix")
    parser.add_argument("--pipeline-name", default=d(DEFAULT_PIPELINE_NAME))
    parser.add_argument("--model-package-group", default=d(DEFAULT_MODEL_PACKAGE_GROUP))
    parser.add_argument("--endpoint-url", default=d(None),
                        help="SageMaker API endpoint URL (e.g. a local service)")
    parser.add_argument("--local", action="store_true", default=d(False),
                        help="use the local SageMaker service (started in the background "
                             "when none runs)")
    parser.add_argument("--local-home", default=d(launcher.default_home()),
                        help="the local service's state folder (or MNIST_LOCAL_HOME)")


def cmd_local(ctx):
    home = ctx.args.local_home
    if ctx.args.action == "status":
        info = launcher.running(home)
        if not info:
            print(f"local service: not running (home {home})")
            return EXIT_FAILED
        print(f"local service: running at {info['url']} (pid {info['pid']}, home {home})")
        return EXIT_OK
    if ctx.args.action == "start":
        print(launcher.ensure_running(home))
        return EXIT_OK
    print("stopped" if launcher.stop(home) else "not running")
    return EXIT_OK


CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                 ".npy": "application/x-npy", ".json": "application/json", ".csv": "text/csv"}


def cmd_predict(ctx):
    """Send picture or array files to an endpoint; print the digit and the probabilities."""
    requests = []
    for path in ctx.args.files:
        content_type = CONTENT_TYPES.get(os.path.splitext(path)[1].lower())
        if content_type is None:
            raise UsageError(f"{path}: unsupported file type; use "
                             f"{', '.join(sorted(CONTENT_TYPES))}")
        try:
            with open(path, "rb") as handle:
                requests.append((path, content_type, handle.read()))
        except OSError as err:
            raise UsageError(f"{path}: {err.strerror}")
    failed = 0
    for path, content_type, body in requests:
        try:
            answer = ctx.clients.runtime.invoke_endpoint(
                EndpointName=ctx.args.endpoint, ContentType=content_type,
                Accept="application/json", Body=body)
        except ClientError as err:
            error = err.response["Error"]
            if error.get("Code") == "ModelError" and "client error" in error.get("Message", ""):
                print(f"{path}: rejected: {error.get('Message')}", file=sys.stderr)
                failed += 1
                continue
            raise
        for index, p in enumerate(json.loads(answer["Body"].read())["predictions"]):
            top = sorted(range(10), key=lambda d: -p["probabilities"][d])[:3]
            label = path if index == 0 else f"{path}[{index}]"
            print(f"{label}: {p['digit']}  (" + ", ".join(
                f"{d}: {p['probabilities'][d]:.3f}" for d in top) + ")")
    return EXIT_USAGE if failed else EXIT_OK


def cmd_draw(ctx):
    """The drawing pad for an endpoint: the local service serves it; for SageMaker endpoints
    a loopback proxy signs the calls with your credentials."""
    name = ctx.args.endpoint
    ctx.clients.sagemaker.describe_endpoint(EndpointName=name)  # a clear error if it is missing
    if ctx.local and not ctx.args.proxy:
        print(f"open {ctx.clients.endpoint_url}/draw/{name}")
        return EXIT_OK
    from pipeline.drawpad.proxy import make_server
    server = make_server(ctx.clients.runtime, name, ctx.args.port)
    print(f"drawing pad for {name}: open http://127.0.0.1:{server.server_address[1]}/ "
          "(Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def cmd_logs(ctx):
    """A job's log, as kept by the local service (on AWS: CloudWatch /aws/sagemaker/*Jobs)."""
    if not ctx.local:
        raise UsageError("logs reads the local service's job logs; on AWS use CloudWatch "
                         "(log groups /aws/sagemaker/ProcessingJobs and TrainingJobs)")
    path = os.path.join(ctx.args.local_home, "logs", f"{ctx.args.job}.log")
    if not os.path.isfile(path):
        raise UsageError(f"no log for job {ctx.args.job!r} (job names are in `describe`)")
    with open(path, errors="replace") as handle:
        sys.stdout.write(handle.read())
    return EXIT_OK


def build_parser():
    parser = argparse.ArgumentParser(
        prog="run_pipeline.py", description="Run and review the MNIST SageMaker pipeline.")
    _add_global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, defaults=False)  # the same options also after the command
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("definition", parents=[common], 
                       help="print (or write) the pipeline definition JSON")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_definition)

    p = sub.add_parser("upsert", parents=[common], 
                       help="upload the code and create or update the pipeline")
    p.set_defaults(func=cmd_upsert)

    p = sub.add_parser("start", parents=[common], help="upsert, then start an execution")
    p.add_argument("--param", action="append", metavar="Name=Value",
                   help="override a pipeline parameter (repeatable)")
    p.add_argument("--wait", action="store_true", help="show live step status until it ends")
    p.add_argument("--no-upsert", action="store_true", help="start the pipeline as it is")
    p.add_argument("--display-name", help="execution display name")
    p.add_argument("--poll-seconds", type=float, default=None,
                   help="status poll interval (default 1 locally, 10 on AWS)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("executions", parents=[common], help="list recent executions")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_executions)

    p = sub.add_parser("describe", parents=[common], 
                       help="status, parameters and steps of one execution")
    p.add_argument("execution", help="execution ARN or id")
    p.set_defaults(func=cmd_describe)

    for name, func, verb in (("approve", cmd_approve, "Approved"),
                             ("reject", cmd_reject, "Rejected")):
        p = sub.add_parser(name, parents=[common], help=f"mark a model package {verb}")
        p.add_argument("package", help="model package ARN, or 'latest' in the group")
        p.add_argument("--description", help="approval description")
        p.set_defaults(func=func)

    p = sub.add_parser("delete-endpoint", parents=[common], 
                       help="delete an endpoint with its config and model")
    p.add_argument("endpoint", help="endpoint name")
    p.set_defaults(func=cmd_delete_endpoint)

    p = sub.add_parser("predict", parents=[common],
                       help="classify PNG, JPEG, NPY, JSON or CSV files with an endpoint")
    p.add_argument("--endpoint", required=True, help="endpoint name")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("draw", parents=[common], help="a page to draw digits for an endpoint")
    p.add_argument("--endpoint", required=True, help="endpoint name")
    p.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    p.add_argument("--proxy", action="store_true",
                   help="with --local: serve through the proxy too (as for AWS)")
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("logs", parents=[common], help="print a job's log (local service)")
    p.add_argument("job", help="processing or training job name")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("local", parents=[common], help="the local service: status|start|stop")
    p.add_argument("action", choices=["status", "start", "stop"])
    p.set_defaults(func=cmd_local)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits with 2 on bad usage
    try:
        return args.func(Context(args))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except NoCredentialsError:
        print("error: no AWS credentials found (configure a profile or use --local)",
              file=sys.stderr)
        return EXIT_USAGE
    except ClientError as err:
        code = err.response["Error"]["Code"]
        print(f"error: {code}: {err.response['Error'].get('Message', '')}", file=sys.stderr)
        return EXIT_USAGE if code in ("ValidationException", "ResourceNotFound") else EXIT_FAILED
    except BotoCoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except RuntimeError as err:  # the local service could not start
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
