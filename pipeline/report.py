"""What the CLI prints about executions: live step status and training progress, the summary
after a run, one execution in detail, the list, two executions side by side, a job's log.
Everything is read through ``pipeline.review.runs``, on AWS and locally alike."""
import time

from botocore.exceptions import ClientError

from pipeline.config import STEPS
from pipeline.review import comparison, deployments, runs, trials
from pipeline.review.text import accuracy_text, short_when, took, when

FINAL_STATUSES = runs.FINAL_STATUSES


def step_line(step):
    line = f"  {step['StepName']:<24} {step['StepStatus']}"
    if step.get("FailureReason"):
        line += f": {step['FailureReason']}"
    source = step.get("CacheHitResult", {}).get("SourcePipelineExecutionArn")
    if source:
        job = next((m["Arn"].split("/")[-1] for kind, m in step.get("Metadata", {}).items()
                    if kind.endswith("Job") and "Arn" in m), "")
        line += f" - {runs.cache_hit_text(step['StepName'], source, job)}"
    return line


class TrainingProgress:
    """Prints each new epoch of a training job from its log: epoch n/N, loss, accuracy."""

    def __init__(self, target, sm):
        self.target, self.sm, self.shown, self.epochs = target, sm, {}, {}

    def update(self, step, started):
        job = step.get("Metadata", {}).get("TrainingJob", {}).get("Arn", "").split("/")[-1]
        if not job:
            return
        if job not in self.epochs:
            hyper = self.sm.describe_training_job(TrainingJobName=job).get("HyperParameters", {})
            self.epochs[job] = hyper.get("epochs", "?").strip('"')
        try:
            series = runs.curves(self.target.job_log(job))
        except Exception:  # noqa: BLE001 - the log may not exist yet
            return
        for index in range(self.shown.get(job, 0), len(series.get("epoch", []))):
            values = ", ".join(f"{name}={series[name][index]:.4f}" for name in (
                "train_loss", "validation_loss", "validation_accuracy") if name in series)
            print(f"[{time.time() - started:6.1f}s]    epoch {series['epoch'][index]}/"
                  f"{self.epochs[job]}: {values}", flush=True)
        self.shown[job] = len(series.get("epoch", []))


def wait(target, arn, poll):
    """Print step status changes and training epochs until the execution ends."""
    sm = target.clients.sagemaker
    seen, started = {}, time.time()
    progress = TrainingProgress(target, sm)
    while True:
        desc = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
        steps = runs.all_items(sm.list_pipeline_execution_steps, "PipelineExecutionSteps",
                               PipelineExecutionArn=arn, SortOrder="Ascending")
        for step in steps:
            if "TrainingJob" in step.get("Metadata", {}) and "CacheHitResult" not in step:
                progress.update(step, started)  # a cache hit's epochs are another run's
            if seen.get(step["StepName"]) != step["StepStatus"]:
                seen[step["StepName"]] = step["StepStatus"]
                print(f"[{time.time() - started:6.1f}s]{step_line(step)}", flush=True)
        if desc["PipelineExecutionStatus"] in FINAL_STATUSES:
            break
        time.sleep(poll)
    print(f"execution {desc['PipelineExecutionStatus']} after {time.time() - started:.1f}s")
    if desc.get("FailureReason"):
        print(f"reason: {desc['FailureReason']}")
    return desc


def _gate(run):
    check = run.step(STEPS.check)
    return check.condition[0] if check and check.condition else None


def summarize(target, arn):
    """What a person wants after a run: accuracy and the gate, the package, the endpoint, and
    where to review it."""
    run = runs.execution(target.review_sources(), arn)
    page = target.review_url(arn)
    if page:
        print(f"review it: {page}")
    print(f"report: {target.command(f'report {run.id} -o run.html')}")
    if run.accuracy is not None:
        print(f"test accuracy: {run.accuracy:.4f} (threshold "
              f"{run.parameters.get('AccuracyThreshold')})")
    if run.package:
        print(f"model package: {run.package['ModelPackageArn']} "
              f"({run.package['ModelApprovalStatus']})")
        if run.package["ModelApprovalStatus"] == "PendingManualApproval":
            arn = run.package["ModelPackageArn"]
            print(f"  waiting for approval: {target.command(f'approve {arn}')} deploys it")
    name = run.parameters.get("EndpointName")
    deploy = run.step(STEPS.deploy)
    if not deploy or deploy.status != "Succeeded" or not name:
        return
    for line in deployment_lines(target, run):
        print(line)
    if run.endpoint_now is None:
        return
    for line in target.invoke_hints(name):
        print(f"  {line}")
    print(f"  delete it: {target.command(f'delete-endpoint {name}')}")


def describe(target, arn):
    """One execution: status, parameters, steps with durations, jobs, the gate's values, the
    evaluation, the package and its approval, the endpoint."""
    run = runs.execution(target.review_sources(), arn)
    print(f"execution {arn}")
    print(f"status    {run.status}  (started {when(run.start)}, took {took(run.duration)})")
    if run.failure:
        print(f"reason    {run.failure}")
    print("parameters: " + ", ".join(f"{k}={v}" for k, v in run.parameters.items()))
    print("steps:")
    for step in run.steps:
        print(f"  {step.name:<24} {step.status:<10} "
              f"{'cached' if step.cache_source else took(step.duration):>8}"
              + (f"  {step.failure}" if step.failure else ""))
        if step.cache_source:
            print(f"    {step.cache_text}")
        elif step.job_kind == "TuningJob":
            for line in trials.lines(trials.tuning(target.clients.sagemaker, step.job_name)):
                print(f"    {line}")
        elif step.job_name:
            print(f"    {step.job_kind}: {step.job_name}")
        metrics = ", ".join(f"{m['MetricName']}={m['Value']:.4f}"
                            for m in step.job.get("FinalMetricDataList", []))
        if metrics:
            print(f"    final metrics: {metrics}")
        for line in step.condition:
            print(f"    condition: {line}")
    if run.metrics:
        m = run.metrics
        print("evaluation: " + ", ".join(f"{name}={m[name]['value']:.4f}" for name in (
            "accuracy", "weighted_precision", "weighted_recall", "weighted_f1") if name in m))
    if run.package:
        print(f"model package: {run.package['ModelPackageArn']} "
              f"({run.package['ModelApprovalStatus']})")
    for line in deployment_lines(target, run):
        print(line)
    return run


def deployment_lines(target, run):
    """What the run did to its endpoint, then, and what the endpoint serves now."""
    lines = [f"deployment: {line}" for line in deployments.run_lines(run)]
    name, now = run.parameters.get("EndpointName"), run.endpoint_now
    if now:
        sm = target.clients.sagemaker
        package = deployments.serving(sm, name)
        status = deployments.package_status(sm, package)
        lines.append(f"endpoint now: {name} {now['EndpointStatus']}, serving "
                     f"{package or 'an unrecorded model'}" + (f" ({status})" if status else ""))
        if package and status != "Approved":
            lines.append(f"WARNING: {name} is serving a {status or 'deleted'} model: approve a "
                         f"version to deploy it, or {target.command(f'delete-endpoint {name}')}")
    elif run.step(STEPS.deploy):
        lines.append(f"endpoint now: {name} does not exist")
    return lines


def executions(target, pipeline_names, limit):
    sources = target.review_sources()
    rows = runs.execution_arns(sources.sagemaker, pipeline_names, limit)
    if not rows:
        print(f"no executions of {', '.join(pipeline_names)}")
        return
    print(f"{'execution':<14} {'pipeline':<20} {'status':<10} {'started':<14} "
          f"{'duration':>9} {'accuracy':>8}  outcome")
    for row in rows:
        arn = row["PipelineExecutionArn"]
        try:
            run = runs.execution(sources, arn, detail=False)
            duration, accuracy = took(run.duration), accuracy_text(run.accuracy)
            outcome = "; ".join(_package_words(run) + deployments.run_lines(run))
        except (ClientError, NotImplementedError):  # an API without step listing (moto)
            duration = accuracy = outcome = ""
        print(f"{arn.split('/')[-1]:<14} {arn.split('/')[1]:<20} "
              f"{row['PipelineExecutionStatus']:<10} {short_when(row['StartTime']):<14} "
              f"{duration:>9} {accuracy:>8}  {outcome}".rstrip())


def _package_words(run):
    if not run.package:
        return []
    return [f"registered v{run.package.get('ModelPackageVersion', '?')} "
            f"({run.package['ModelApprovalStatus']})"]


def compare(target, arns):
    """Executions side by side (pipeline.review.comparison's rows), one column each."""
    sources = target.review_sources()
    found = [runs.execution(sources, arn) for arn in arns]
    table = comparison.rows(found)
    width = max(len(cell) for _, cells in table for cell in cells + [r.id for r in found])
    label_width = max(len(label) for label, _ in table)
    print(f"{'':<{label_width}}  " + "  ".join(f"{r.id:<{width}}" for r in found).rstrip())
    for label, cells in table:
        print(f"{label:<{label_width}}  " + "  ".join(f"{c:<{width}}" for c in cells).rstrip())
    return found


def packages(target, group):
    """The group's versions, newest first: approval, test accuracy, source run, where live."""
    sources = target.review_sources()
    sm = sources.sagemaker
    summaries = runs.all_items(sm.list_model_packages, "ModelPackageSummaryList",
                               ModelPackageGroupName=group, SortBy="CreationTime",
                               SortOrder="Descending")
    if not summaries:
        print(f"no model packages in group {group}")
        return
    live = deployments.live_endpoints(sources)
    print(f"{'version':<8} {'approval':<22} {'accuracy':>8}  {'source execution':<14} "
          f"{'created':<19} live")
    for summary in summaries:
        p = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        source = p.get("CustomerMetadataProperties", {}).get("PipelineExecutionArn", "")
        where = ", ".join(f"{e.endpoint} since {when(e.since)}" if e.since else e.endpoint
                          for e in live.values() if e.package == p["ModelPackageArn"])
        print(f"v{p.get('ModelPackageVersion', '?'):<7} {p['ModelApprovalStatus']:<22} "
              f"{accuracy_text(runs.package_accuracy(sources, p)):>8}  "
              f"{source.split('/')[-1]:<14} {when(p['CreationTime']):<19} {where}".rstrip())


def endpoints(target) -> bool:
    """Every endpoint: what it serves since when, warnings, its last deployments. False when
    one serves a model that is not Approved."""
    live = deployments.live_endpoints(target.review_sources())
    if not live:
        print("no endpoints")
    for endpoint in live.values():
        serving = endpoint.package or "a model no deployment recorded"
        print(f"{endpoint.endpoint}: serving {serving}"
              + (f" ({endpoint.status})" if endpoint.status else "")
              + (f" since {when(endpoint.since)}" if endpoint.since else ""))
        if endpoint.warning:
            print(f"  WARNING: {endpoint.warning}")
            print(f"  delete it: {target.command(f'delete-endpoint {endpoint.endpoint}')}")
        for deployment in endpoint.deployments[:5]:
            print(f"  {deployment.text} (execution {deployment.execution.split('/')[-1]})")
    return not any(e.warning for e in live.values())
