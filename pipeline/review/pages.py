"""The review as HTML, in Studio's terms: executions, one execution (its DAG, steps, gate,
evaluation, curves, package, endpoint), a job (log, hyperparameters, curves), a model package
(metrics, confusion matrix, lineage, approval), endpoints, and two executions compared.

Plain server-side HTML with inline SVG: no script, no build step, nothing loaded from elsewhere.
``links=False`` gives the self-contained form ``run_pipeline.py report`` writes.
"""
import time
from html import escape
from typing import List, Optional
from urllib.parse import quote

from botocore.exceptions import ClientError

from pipeline.config import STEPS
from pipeline.review import charts, dag
from pipeline.review.runs import (Execution, Sources, all_items, curves, epoch, execution,
                                  execution_arns, package_evaluation, per_class)

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem 2rem;color:#222}
a{color:#1d4ed8}nav a{margin-right:1rem}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.4rem 0 1rem}
td,th{border:1px solid #ddd;padding:.25rem .55rem;text-align:left;font-size:.88rem;
vertical-align:top}th{background:#f5f5f5}
.Succeeded,.InService,.Approved,.Completed{color:#16a34a}.Failed,.Rejected{color:#dc2626}
.Executing,.Creating,.Updating,.InProgress,.Starting{color:#2563eb}
.PendingManualApproval,.Stopped,.Stopping{color:#d97706}
pre.log{background:#111;color:#eee;padding:.8rem;max-height:32rem;overflow:auto;font-size:.8rem}
form{display:inline}button{margin-right:.5rem;padding:.3rem .9rem}"""
REFRESH_SECONDS = 2


def when(value) -> str:
    seconds = epoch(value)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""


def took(seconds) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def status(value) -> str:
    return f'<span class="{escape(value)}">{escape(value)}</span>'


def table(headers, rows, css="") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def page(title, body, live=False, links=True) -> bytes:
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if live else ""
    nav = ('<nav><a href="/">Executions</a><a href="/endpoints">Endpoints</a>'
           '<a href="/packages">Model registry</a></nav>') if links else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"{refresh}<style>{STYLE}</style></head><body>{nav}<h1>{escape(title)}</h1>"
            f"{body}</body></html>").encode("utf-8")


class Links:
    """Where things live in the run browser; with ``enabled=False`` (a report) plain text."""

    def __init__(self, enabled=True):
        self.enabled = enabled

    def _a(self, href, text):
        return f'<a href="{escape(href)}">{escape(text)}</a>' if self.enabled else escape(text)

    def execution(self, arn, text=None):
        pipeline, run_id = arn.split("/")[1], arn.split("/")[-1]
        return self._a(f"/executions/{quote(pipeline)}/{quote(run_id)}", text or run_id)

    def job(self, name):
        return self._a(f"/jobs/{quote(name)}", name) if name else ""

    def package(self, arn, text=None):
        return self._a(f"/packages/{quote(arn.split('/', 1)[1], safe='/')}", text or arn)


def accuracy_text(value) -> str:
    return f"{value:.4f}" if value is not None else ""


# ---------------------------------------------------------------------- executions
def executions_page(sources: Sources, pipelines: List[str]) -> bytes:
    sm, links = sources.sagemaker, Links()
    rows, live = [], False
    for summary in execution_arns(sm, pipelines):
        arn = summary["PipelineExecutionArn"]
        run = execution(sources, arn, detail=False)
        live |= run.status == "Executing"
        rows.append([links.execution(arn), escape(run.pipeline), status(run.status),
                     when(run.start), took(run.duration), accuracy_text(run.accuracy),
                     escape(", ".join(f"{k}={v}" for k, v in run.changed.items())),
                     escape(run.failure)])
    compare = ('<form method="get" action="/compare">Compare <input name="a" size="14" '
               'placeholder="execution id"> with <input name="b" size="14" '
               'placeholder="execution id"> <button>compare</button></form>')
    body = table(["execution", "pipeline", "status", "started", "duration", "test accuracy",
                  "parameters changed", "reason"], rows, "executions") + compare
    return page("Pipeline executions", body, live=live)


# ---------------------------------------------------------------------- one execution
def _step_rows(run: Execution, links: Links):
    rows = []
    for step in run.steps:
        io = []
        for item in step.job.get("ProcessingInputs", []):
            io.append(f"in {item['InputName']}: {item.get('S3Input', {}).get('S3Uri', '')}")
        for item in step.job.get("InputDataConfig", []):
            io.append(f"in {item['ChannelName']}: "
                      f"{item['DataSource']['S3DataSource']['S3Uri']}")
        for item in step.job.get("ProcessingOutputConfig", {}).get("Outputs", []):
            io.append(f"out {item['OutputName']}: {item['S3Output']['S3Uri']}")
        if step.job.get("ModelArtifacts"):
            io.append(f"out model: {step.job['ModelArtifacts']['S3ModelArtifacts']}")
        detail = [escape(line) for line in step.condition]
        if "RegisterModel" in step.metadata:
            detail.append(links.package(step.metadata["RegisterModel"]["Arn"]))
        rows.append([f'<span title="{escape(step.description)}">{escape(step.name)}</span>',
                     escape(step.kind), status(step.status), when(step.start),
                     took(step.duration), links.job(step.job_name),
                     "<br>".join(escape(line) for line in io),
                     "<br>".join(detail), escape(step.failure)])
    return rows


def _curves_of(sources, step) -> dict:
    try:
        return curves(sources.job_log(step.job_name)) if step else {}
    except Exception:  # noqa: BLE001 - no log (yet): no chart
        return {}


def metrics_section(metrics: Optional[dict]) -> str:
    if not metrics:
        return "<p>No evaluation.</p>"
    names = [n for n in metrics if isinstance(metrics[n], dict) and "value" in metrics[n]]
    summary = table(["metric", "value", "standard deviation"], [
        [escape(n), f"{metrics[n]['value']:.4f}", escape(str(metrics[n].get(
            "standard_deviation", "")))[:8]] for n in names], "metrics")
    classes = table(["digit", "support", "precision", "recall", "F1"], [
        [escape(r["label"]), str(r["support"]), f"{r['precision']:.4f}", f"{r['recall']:.4f}",
         f"{r['f1']:.4f}"] for r in per_class(metrics)], "per-class")
    heat = f'<div class="confusion">{charts.confusion_matrix(metrics["confusion_matrix"])}</div>'
    return (f'<div style="display:flex;gap:2rem;flex-wrap:wrap"><div>{summary}{classes}</div>'
            f"<div><h3>Confusion matrix</h3>{heat}</div></div>")


def execution_body(sources: Sources, run: Execution, links: Links) -> str:
    parts = [table(["execution", "pipeline", "status", "started", "duration", "test accuracy",
                    "experiment / run group"], [[
                        escape(run.arn), escape(run.pipeline), status(run.status),
                        when(run.start), took(run.duration), accuracy_text(run.accuracy),
                        escape(" / ".join(str(v) for v in run.experiment.values()))]])]
    if run.failure:
        parts.append(f'<p class="Failed">Failure: {escape(run.failure)}</p>')
    parts.append("<h2>Parameters</h2>" + table(["name", "value", "default"], [
        [escape(k), f"<b>{escape(v)}</b>" if run.defaults.get(k) != v else escape(v),
         escape(run.defaults.get(k, ""))] for k, v in run.parameters.items()]))
    names = [s.name for s in run.steps] + [
        n for pair in run.edges for n in pair if n not in {s.name for s in run.steps}]
    names = list(dict.fromkeys(names))
    parts.append("<h2>Graph</h2>" + dag.svg(names, run.edges,
                                              {s.name: s.status for s in run.steps}))
    parts.append("<h2>Steps</h2>" + table(
        ["step", "type", "status", "started", "duration", "job", "inputs / outputs",
         "outcome", "failure"], _step_rows(run, links), "steps"))
    series = _curves_of(sources, run.training)
    if series:
        parts.append("<h2>Training curves</h2>" + f'<div class="curves">'
                     f"{charts.training_curves({run.id: series})}</div>")
    parts.append("<h2>Evaluation (test set)</h2>" + metrics_section(run.metrics))
    if run.package:
        p = run.package
        parts.append("<h2>Model package</h2>" + table(
            ["package", "approval", "description"],
            [[links.package(p["ModelPackageArn"]), status(p["ModelApprovalStatus"]),
              escape(p.get("ModelPackageDescription", ""))]]))
        if p["ModelApprovalStatus"] == "PendingManualApproval":
            parts.append("<p>Waiting for approval: approving the package deploys it.</p>")
    if run.endpoint:
        e = run.endpoint
        parts.append("<h2>Endpoint</h2>" + table(["endpoint", "status", "config"], [[
            escape(e["EndpointName"]), status(e["EndpointStatus"]),
            escape(e.get("EndpointConfigName", ""))]]))
    return "".join(parts)


def execution_page(sources: Sources, arn: str) -> bytes:
    run = execution(sources, arn)
    return page(f"Execution {run.id} of {run.pipeline}",
                execution_body(sources, run, Links()), live=run.status == "Executing")


def report(sources: Sources, arn: str) -> bytes:
    """One self-contained file to share: the execution page without links."""
    run = execution(sources, arn)
    return page(f"Execution {run.id} of {run.pipeline}",
                execution_body(sources, run, Links(False)), links=False)


# ---------------------------------------------------------------------- a job
def job_page(sources: Sources, name: str) -> bytes:
    sm = sources.sagemaker
    job, kind, missing = {}, "", None
    for kind, call, key in (("Training", sm.describe_training_job, "TrainingJobName"),
                            ("Processing", sm.describe_processing_job, "ProcessingJobName")):
        try:
            job = call(**{key: name})
            break
        except ClientError as err:  # try the other kind
            missing = err
    if not job:
        raise missing
    state = job.get(f"{kind}JobStatus", "")
    try:
        log = sources.job_log(name)
    except Exception as err:  # noqa: BLE001
        log = f"(no log: {err})"
    parts = [table(["job", "kind", "status", "created", "ended", "failure"], [[
        escape(name), kind, status(state), when(job.get("CreationTime")),
        when(job.get(f"{kind}EndTime") or job.get("TrainingEndTime")),
        escape(job.get("FailureReason", ""))]])]
    if job.get("HyperParameters"):
        parts.append("<h2>Hyperparameters</h2>" + table(["name", "value"], [
            [escape(k), escape(v)] for k, v in sorted(job["HyperParameters"].items())
            if not k.startswith("sagemaker_")]))
    if job.get("FinalMetricDataList"):
        parts.append("<h2>Final metrics</h2>" + table(["metric", "value"], [
            [escape(m["MetricName"]), f"{m['Value']:.4f}"] for m in job["FinalMetricDataList"]]))
    series = curves(log)
    if series:
        parts.append("<h2>Curves</h2>" + f'<div class="curves">'
                     f"{charts.training_curves({name: series})}</div>")
    parts.append(f'<h2>Log</h2><pre class="log">{escape(log[-200_000:])}</pre>')
    return page(f"{kind} job {name}", "".join(parts), live=state == "InProgress")


# ---------------------------------------------------------------------- the registry
def packages_page(sources: Sources) -> bytes:
    sm, links = sources.sagemaker, Links()
    rows = []
    for p in all_items(sm.list_model_packages, "ModelPackageSummaryList",
                       ModelPackageType="Both", SortBy="CreationTime", SortOrder="Descending"):
        rows.append([links.package(p["ModelPackageArn"], package_title(p)),
                     status(p.get("ModelApprovalStatus", "")), when(p["CreationTime"])])
    return page("Model registry", table(["package", "approval", "created"], rows, "packages"))


def package_page(sources: Sources, arn: str, message: str = "") -> bytes:
    p = sources.sagemaker.describe_model_package(ModelPackageName=arn)
    links = Links()
    lineage = p.get("CustomerMetadataProperties", {})
    parts = [f'<p class="notice">{escape(message)}</p>' if message else "",
             table(["package", "approval", "created", "description"], [[
                 escape(p["ModelPackageArn"]), status(p.get("ModelApprovalStatus", "")),
                 when(p["CreationTime"]), escape(p.get("ModelPackageDescription", ""))]])]
    if "ModelPackageGroupName" in p:  # approval applies to versions only
        parts.append(
            '<form method="post" action="/packages/approval">'
            f'<input type="hidden" name="arn" value="{escape(p["ModelPackageArn"])}">'
            '<button name="status" value="Approved" id="approve">Approve</button>'
            '<button name="status" value="Rejected" id="reject">Reject</button></form>'
            "<p>Approving fires the model package state-change event: the approve -> deploy "
            "rule starts the deploy pipeline, as on AWS.</p>")
    rows = []
    for key, value in sorted(lineage.items()):
        shown = links.execution(value) if key == "PipelineExecutionArn" else (
            links.job(value) if key == "TrainingJobName" else escape(value))
        rows.append([escape(key), shown])
    parts.append("<h2>Lineage</h2>" + table(["property", "value"], rows, "lineage"))
    evaluation = package_evaluation(sources, p) or {}
    metrics = next(iter(evaluation.values()), None) if evaluation else None
    parts.append("<h2>Model quality</h2>" + metrics_section(metrics))
    return page(f"Model package {package_title(p)}", "".join(parts))


def package_title(p) -> str:
    """A version as "GROUP vN"; an unversioned package by its name."""
    if "ModelPackageGroupName" in p:
        return f"{p['ModelPackageGroupName']} v{p.get('ModelPackageVersion', '')}"
    return p["ModelPackageName"]


# ---------------------------------------------------------------------- endpoints
def deployments(sources: Sources, pipelines: List[str]) -> List[tuple]:
    """(endpoint, execution ARN, when) of every DeployModel that succeeded, newest first: an
    endpoint's history (AWS keeps none; Cleanup deletes the configs it replaced)."""
    sm, found = sources.sagemaker, []
    for summary in execution_arns(sm, pipelines):
        arn = summary["PipelineExecutionArn"]
        steps = all_items(sm.list_pipeline_execution_steps, "PipelineExecutionSteps",
                          PipelineExecutionArn=arn)
        deploy = next((s for s in steps if s["StepName"] == STEPS.deploy
                       and s["StepStatus"] == "Succeeded"), None)
        if deploy:
            parameters = {p["Name"]: p["Value"] for p in all_items(
                sm.list_pipeline_parameters_for_execution, "PipelineParameters",
                PipelineExecutionArn=arn)}
            found.append((parameters.get("EndpointName"), arn, deploy.get("EndTime")))
    return found


def endpoints_page(sources: Sources, pipelines: List[str]) -> bytes:
    sm = sources.sagemaker
    history = deployments(sources, pipelines)
    parts, live = [], False
    for e in all_items(sm.list_endpoints, "Endpoints"):
        name = e["EndpointName"]
        desc = sm.describe_endpoint(EndpointName=name)
        live |= desc["EndpointStatus"] in ("Creating", "Updating")
        serving = _serving(sm, desc)
        trained_by = _trained_by(sm, serving)
        parts.append(table(["endpoint", "status", "config", "serves", "trained by", "updated",
                            ""], [[
            escape(name), status(desc["EndpointStatus"]),
            escape(desc.get("EndpointConfigName", "")),
            Links().package(serving) if serving else "",
            Links().execution(trained_by) if trained_by else "",
            when(desc.get("LastModifiedTime")),
            f'<a href="/draw/{quote(name)}">draw a digit</a> '
            f'<form method="post" action="/endpoints/delete"><input type="hidden" name="name" '
            f'value="{escape(name)}"><button>delete</button></form>']], "endpoints"))
        mine = [(arn, at) for endpoint, arn, at in history if endpoint == name]
        if mine:
            parts.append(f"<p>Deployed to {escape(name)} by (newest first): " + ", ".join(
                f"{Links().execution(arn)} at {when(at)}" for arn, at in mine) + "</p>")
    return page("Endpoints", "".join(parts) or "<p>No endpoints.</p>", live=live)


def _trained_by(sm, package_arn) -> Optional[str]:
    """The execution that registered a package (its lineage), if known."""
    if not package_arn:
        return None
    try:
        package = sm.describe_model_package(ModelPackageName=package_arn)
    except ClientError:
        return None
    arn = package.get("CustomerMetadataProperties", {}).get("PipelineExecutionArn", "")
    return arn if arn.startswith("arn:") else None


def _serving(sm, desc) -> Optional[str]:
    """The model package an endpoint serves, from its model's tag (set by DeployModel)."""
    try:
        config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
        model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        tags = sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]
    except ClientError:
        return None
    return next((t["Value"] for t in tags if t["Key"].endswith(":model-package")), None)


# ---------------------------------------------------------------------- compare
def compare_body(sources: Sources, a: Execution, b: Execution, links: Links) -> str:
    names = list(dict.fromkeys([*a.parameters, *b.parameters]))
    params = table(["parameter", a.id, b.id], [
        [escape(n), escape(a.parameters.get(n, "")), escape(b.parameters.get(n, ""))]
        for n in names if a.parameters.get(n) != b.parameters.get(n)] or [["(same)", "", ""]])
    metric_names = [n for n in (a.metrics or {}) if isinstance(a.metrics[n], dict)
                    and "value" in a.metrics[n]]
    metrics = table(["metric", a.id, b.id], [
        [escape(n), f"{a.metrics[n]['value']:.4f}",
         f"{(b.metrics or {}).get(n, {}).get('value', float('nan')):.4f}"]
        for n in metric_names])
    overview = table(["", a.id, b.id], [
        ["execution", links.execution(a.arn), links.execution(b.arn)],
        ["status", status(a.status), status(b.status)],
        ["duration", took(a.duration), took(b.duration)],
        ["test accuracy", accuracy_text(a.accuracy), accuracy_text(b.accuracy)]])
    series = {r.id: _curves_of(sources, r.training) for r in (a, b)}
    chart = charts.training_curves({k: v for k, v in series.items() if v})
    return (overview + "<h2>Parameters that differ</h2>" + params + "<h2>Metrics</h2>" +
            metrics + f'<h2>Training curves</h2><div class="curves">{chart}</div>')


def compare_page(sources: Sources, arn_a: str, arn_b: str) -> bytes:
    a, b = execution(sources, arn_a), execution(sources, arn_b)
    return page(f"Compare {a.id} and {b.id}", compare_body(sources, a, b, Links()))

