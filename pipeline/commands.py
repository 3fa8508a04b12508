"""The CLI's commands, one function each: ``cmd_NAME(target) -> exit code``. What differs
between AWS and the local service is the target's (``pipeline.target``); what is printed about
runs is the report's (``pipeline.report``)."""
import json
import math
import sys
import time
from typing import Optional

from botocore.exceptions import ClientError

from pipeline import aws, iam, report
from pipeline.config import (DEPLOY_PIPELINE_SUFFIX, check_limits, parse_bool,
                             pipeline_parameters, render_value)
from pipeline.errors import UsageError
from pipeline.local import launcher
from pipeline.payloads import read_payloads
from pipeline.review import pages, runs
from pipeline.review.runs import find_execution
from steps import approvals

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_param(text, tuning=False):
    """'Name=Value' -> (Name, typed value), checked against the pipeline's parameters (the
    tuned variant's with ``tuning``)."""
    name, sep, raw = text.partition("=")
    if not sep:
        raise UsageError(f"--param expects Name=Value, got {text!r}")
    declared = pipeline_parameters(tuning)
    if name not in declared:
        raise UsageError(f"unknown parameter {name!r}; known: {', '.join(declared)}")
    kind = declared[name][0]
    try:
        value = parse_bool(raw) if kind is bool else kind(raw)
    except ValueError:
        raise UsageError(f"parameter {name} needs a {kind.__name__}, got {raw!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"parameter {name} needs a finite number, got {raw!r}")
    try:
        check_limits(name, value)
    except ValueError as err:
        raise UsageError(str(err))
    return name, value


def _pipelines(target):
    """The project's two pipelines: the main one and its approve -> deploy pipeline."""
    name = target.args.pipeline_name
    return [name, f"{name}{DEPLOY_PIPELINE_SUFFIX}"]


def execution_arn(target, ref):
    """An execution by ARN, or by id in either of the project's pipelines."""
    sm = target.clients.sagemaker
    arn = find_execution(sm, _pipelines(target), ref)
    if arn:
        return arn
    sm.describe_pipeline(PipelineName=target.args.pipeline_name)  # says so if it is missing
    raise UsageError(f"no execution {ref!r} of {' or '.join(_pipelines(target))}")


def cmd_definition(target):
    from pipeline.definition import definition_json  # the SDK: imported only when needed

    text = definition_json(target.pipeline_config(offline=True))
    if target.args.output:
        with open(target.args.output, "w") as handle:
            handle.write(text)
        print(f"wrote {target.args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_upsert(target):
    """Upload code, then create or update the pipeline with exactly our definition JSON."""
    config = target.pipeline_config(role_required=target.role_required())
    for line in aws.install_pipeline(target.clients, config, local=target.local):
        print(line)
    return EXIT_OK


def cmd_start(target):
    args = target.args
    overrides = {**target.parameter_overrides(),
                 **dict(parse_param(p, args.tuning) for p in args.param or [])}
    if not args.no_upsert:
        cmd_upsert(target)
    arn = target.clients.sagemaker.start_pipeline_execution(
        PipelineName=args.pipeline_name,
        PipelineParameters=[{"Name": k, "Value": render_value(v)} for k, v in overrides.items()],
        PipelineExecutionDisplayName=args.display_name or f"run-{int(time.time())}",
    )["PipelineExecutionArn"]
    print(f"started {arn}")
    if not args.wait:
        print(_watch_hint(target, arn))
        return EXIT_OK
    return _follow(target, arn)


def _watch_hint(target, arn) -> str:
    run_id = arn.split("/")[-1]
    return f"follow it: {target.command(f'watch {run_id}')}"


def _follow(target, arn):
    """Print the run's progress until it ends, then its summary; exit 0 only on success."""
    desc = report.wait(target, arn, getattr(target.args, "poll_seconds", None)
                       or target.poll_seconds)
    report.summarize(target, arn)
    return EXIT_OK if desc["PipelineExecutionStatus"] == "Succeeded" else EXIT_FAILED


def cmd_watch(target):
    """Follow an execution (running or not) as ``start --wait`` does."""
    return _follow(target, execution_arn(target, target.args.execution))


def cmd_stop(target):
    arn = execution_arn(target, target.args.execution)
    target.clients.sagemaker.stop_pipeline_execution(PipelineExecutionArn=arn)
    print(f"stopping {arn}")
    print(_watch_hint(target, arn))
    return EXIT_OK


def cmd_retry(target):
    """Run a failed or stopped execution's unfinished steps again (RetryPipelineExecution)."""
    arn = execution_arn(target, target.args.execution)
    target.clients.sagemaker.retry_pipeline_execution(PipelineExecutionArn=arn)
    print(f"retrying {arn}")
    if target.args.wait:
        return _follow(target, arn)
    print(_watch_hint(target, arn))
    return EXIT_OK


def cmd_packages(target):
    report.packages(target, target.args.model_package_group)
    return EXIT_OK


def cmd_endpoints(target):
    return EXIT_OK if report.endpoints(target) else EXIT_FAILED


def cmd_executions(target):
    report.executions(target, _pipelines(target), target.args.limit)
    return EXIT_OK


def cmd_describe(target):
    run = report.describe(target, execution_arn(target, target.args.execution))
    return EXIT_OK if run.status != "Failed" else EXIT_FAILED


def cmd_compare(target):
    if len(target.args.executions) < 2:
        raise UsageError("compare needs two or more executions")
    report.compare(target, [execution_arn(target, ref) for ref in target.args.executions])
    return EXIT_OK


def cmd_report(target):
    """One self-contained HTML file: DAG, steps, curves, evaluation, package."""
    html = pages.report(target.review_sources(), execution_arn(target, target.args.execution))
    with open(target.args.output, "wb") as handle:
        handle.write(html)
    print(f"wrote {target.args.output} ({len(html) // 1024} KiB)")
    return EXIT_OK


def _package_arn(target, ref):
    if ref != "latest":
        return ref
    group = target.args.model_package_group
    page = target.clients.sagemaker.list_model_packages(
        ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending",
        MaxResults=1)
    if not page["ModelPackageSummaryList"]:
        raise UsageError(f"no model packages in group {group}")
    return page["ModelPackageSummaryList"][0]["ModelPackageArn"]


def set_approval(target, status):
    """Approve or reject a package: the status with the reviewer's comment, the approval time
    the deploy pipeline ranks by, and a history entry (steps/approvals.py)."""
    sm = target.clients.sagemaker
    arn = _package_arn(target, target.args.package)
    package = sm.describe_model_package(ModelPackageName=arn)
    before = _deploy_runs(target)
    sm.update_model_package(**approvals.approval_update(
        arn, status, target.identity(), target.args.description or "", package, time.time()))
    version = package.get("ModelPackageVersion")
    print(f"{arn}: {status}" + (f" (version {version})" if version else ""))
    if "ModelPackageGroupName" not in package:
        return EXIT_OK
    if before is None:
        print(f"no approve -> deploy pipeline ({_pipelines(target)[1]}) here: nothing deploys "
              f"it until {target.command('upsert')} installs it and its rule")
        return EXIT_OK
    print(f"the approve -> deploy pipeline ({_pipelines(target)[1]}) now serves the most "
          f"recently approved version of {package['ModelPackageGroupName']}")
    started = _new_deploy_run(target, before)
    if started:
        print(f"deploy run started: {started}")
        print(_watch_hint(target, started))
    else:
        print("no deploy run has started yet (EventBridge delivers within seconds); see "
              f"{target.command('executions')}")
    return EXIT_OK


DEPLOY_RUN_WAIT = 15.0  # seconds to look for the deploy run an approval starts


def _deploy_runs(target) -> Optional[set]:
    """The deploy pipeline's latest executions; None when there is no deploy pipeline."""
    try:
        return {r["PipelineExecutionArn"] for r in target.clients.sagemaker.
                list_pipeline_executions(PipelineName=_pipelines(target)[1], MaxResults=20)[
                    "PipelineExecutionSummaries"]}
    except ClientError as err:
        if aws.pipeline_missing(err):
            return None
        raise


def _new_deploy_run(target, before: set):
    """The deploy pipeline's execution the state change started, once it shows up."""
    deadline = time.time() + DEPLOY_RUN_WAIT
    while True:
        new = (_deploy_runs(target) or set()) - before
        if new or time.time() > deadline:
            return sorted(new)[0] if new else None
        time.sleep(0.5)


def cmd_delete_endpoint(target):
    sm, name = target.clients.sagemaker, target.args.endpoint
    desc = sm.describe_endpoint(EndpointName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    sm.delete_endpoint(EndpointName=name)
    sm.delete_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    for variant in config["ProductionVariants"]:
        sm.delete_model(ModelName=variant["ModelName"])
    print(f"deleted endpoint {name}, its config {desc['EndpointConfigName']} and "
          f"{len(config['ProductionVariants'])} model(s)")
    return EXIT_OK


def cmd_iam_policy(target):
    """The roles' policies for these names (bucket, prefix, pipelines, group, endpoint)."""
    args = target.args
    config = target.pipeline_config(offline=True)
    sys.stdout.write(iam.render(config, args.endpoint_name, args.account))
    return EXIT_OK


def cmd_local(target):
    home, action = target.args.local_home, target.args.action
    if action == "start":
        print(launcher.ensure_running(home, target.args.region)["url"])
    elif action == "stop":
        print("stopped" if launcher.stop(home) else "not running")
    elif launcher.running(home):
        info = launcher.running(home)
        print(f"local service: running at {info['url']} (pid {info['pid']}, region "
              f"{info.get('region')}, home {home})")
    else:
        print(f"local service: not running (home {home})")
        return EXIT_FAILED
    return EXIT_OK


def cmd_predict(target):
    """Send picture or array files to an endpoint; print the digit and the probabilities."""
    failed = 0
    for path, content_type, body in read_payloads(target.args.files):  # UsageError: exit 2
        try:
            answer = target.clients.runtime.invoke_endpoint(
                EndpointName=target.args.endpoint, ContentType=content_type,
                Accept="application/json", Body=body)
        except ClientError as err:
            if _refused_by_the_model(err):
                print(f"{path}: rejected: {err.response.get('OriginalMessage') or err}",
                      file=sys.stderr)
                failed += 1
                continue
            raise
        for index, p in enumerate(json.loads(answer["Body"].read())["predictions"]):
            top = sorted(range(10), key=lambda d: -p["probabilities"][d])[:3]
            label = path if index == 0 else f"{path}[{index}]"
            print(f"{label}: {p['digit']}  (" + ", ".join(
                f"{d}: {p['probabilities'][d]:.3f}" for d in top) + ")")
    return EXIT_USAGE if failed else EXIT_OK


def _refused_by_the_model(err: ClientError) -> bool:
    """SageMaker's ModelError for a 4xx from the model's container (bad input), by its
    documented OriginalStatusCode member."""
    code = err.response.get("OriginalStatusCode")
    return err.response["Error"].get("Code") == "ModelError" and isinstance(code, int) and \
        400 <= code < 500


def cmd_draw(target):
    """The drawing pad: a page the target serves, else a loopback proxy signing the calls."""
    name = target.args.endpoint
    target.clients.sagemaker.describe_endpoint(EndpointName=name)  # a clear error if missing
    url = None if target.args.proxy else target.drawing_pad_url(name)
    if url:
        print(f"open {url}")
        return EXIT_OK
    from pipeline.drawpad.proxy import make_server
    server = make_server(target.clients.runtime, name, target.args.port)
    print(f"drawing pad for {name}: open http://127.0.0.1:{server.server_address[1]}/ "
          "(Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def cmd_logs(target):
    """The job logs of an execution's steps (one step, or all that ran a job): the local
    service's log files, CloudWatch Logs on AWS."""
    run = runs.execution(target.review_sources(), execution_arn(target, target.args.execution))
    steps = [s for s in run.steps if s.job_name]
    if target.args.step:
        steps = [s for s in run.steps if s.name == target.args.step]
        if not steps:
            raise UsageError(f"no step {target.args.step!r} in {run.id}; steps: "
                             f"{', '.join(s.name for s in run.steps)}")
        if not steps[0].job_name:
            raise UsageError(f"step {target.args.step} ran no job ({steps[0].kind})")
    for step in steps:
        if len(steps) > 1:
            print(f"===== {step.name} ({step.job_name})", flush=True)
        if step.cache_source:  # the log is the reused job's, from the other run
            print(f"===== {step.cache_text}", flush=True)
        sys.stdout.write(target.job_log(step.job_name))
    return EXIT_OK
