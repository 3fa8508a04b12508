"""The review as HTML, in Studio's terms: executions, one execution (its DAG, steps, gate,
evaluation, curves, package, endpoint), a job (log, hyperparameters, curves), a model package
(metrics, confusion matrix, lineage, approval), endpoints, and two executions compared.

This module only gathers what each page shows; the HTML is in ``templates/`` (Jinja2, with
autoescape on for every template: a name, description or tag is text wherever it lands).
Charts are SVG made by matplotlib and passed as markup. Plain server-side HTML: no script, no
build step, nothing loaded from elsewhere. ``Links(False)`` gives the self-contained form
``run_pipeline.py report`` writes.
"""
import os
from typing import List, Optional
from urllib.parse import quote

import jinja2
from botocore.exceptions import ClientError
from markupsafe import Markup

from pipeline.config import STEPS
from pipeline.review import charts, dag
from pipeline.review.runs import (Execution, curves, execution, execution_arns,
                                  package_evaluation, per_class)
from pipeline.review.sources import Sources, all_items
from pipeline.review.text import accuracy_text, took, when

REFRESH_SECONDS = 2
LOG_TAIL = 200_000  # characters of a job's log shown on its page


TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
TEMPLATES.filters.update(when=when, took=took, accuracy=accuracy_text)


class Links:
    """Where things live in the run browser (hrefs); with ``enabled=False`` (a report) none,
    and the templates show plain text."""

    def __init__(self, enabled=True):
        self.enabled = enabled

    def _href(self, path: str) -> Optional[str]:
        return path if self.enabled else None

    def execution(self, arn):
        pipeline, run_id = arn.split("/")[1], arn.split("/")[-1]
        return self._href(f"/executions/{quote(pipeline)}/{quote(run_id)}")

    def job(self, name):
        return self._href(f"/jobs/{quote(name)}")

    def package(self, arn):
        return self._href(f"/packages/{quote(arn.split('/', 1)[1], safe='/')}")


def render(template: str, title: str, links: Optional[Links] = None, live=False,
           **data) -> bytes:
    return TEMPLATES.get_template(template).render(
        title=title, links=links or Links(), live=live, refresh_seconds=REFRESH_SECONDS,
        **data).encode("utf-8")


def message_page(title: str, message: str) -> bytes:
    """A page that says one thing (not found, refused)."""
    return render("base.html", title, message=message)


# ---------------------------------------------------------------------- executions
def executions_page(sources: Sources, pipelines: List[str]) -> bytes:
    runs = [execution(sources, summary["PipelineExecutionArn"], detail=False)
            for summary in execution_arns(sources.sagemaker, pipelines)]
    return render("executions.html", "Pipeline executions", runs=runs,
                  live=any(run.status == "Executing" for run in runs))


# ---------------------------------------------------------------------- one execution
def _inputs_and_outputs(job: dict) -> List[str]:
    lines = [f"in {item['InputName']}: {item.get('S3Input', {}).get('S3Uri', '')}"
             for item in job.get("ProcessingInputs", [])]
    lines += [f"in {item['ChannelName']}: {item['DataSource']['S3DataSource']['S3Uri']}"
              for item in job.get("InputDataConfig", [])]
    lines += [f"out {item['OutputName']}: {item['S3Output']['S3Uri']}"
              for item in job.get("ProcessingOutputConfig", {}).get("Outputs", [])]
    if job.get("ModelArtifacts"):
        lines.append(f"out model: {job['ModelArtifacts']['S3ModelArtifacts']}")
    return lines


def _curves_of(sources, step) -> dict:
    try:
        return curves(sources.job_log(step.job_name)) if step else {}
    except Exception:  # noqa: BLE001 - no log (yet): no chart
        return {}


def metrics_view(metrics: Optional[dict]) -> Optional[dict]:
    """What the metrics section shows: the headline metrics, per class, the confusion matrix."""
    if not metrics:
        return None
    names = [n for n in metrics if isinstance(metrics[n], dict) and "value" in metrics[n]]
    return {"summary": [{"name": n, "value": metrics[n]["value"],
                         "deviation": str(metrics[n].get("standard_deviation", ""))[:8]}
                        for n in names],
            "classes": per_class(metrics),
            "confusion": Markup(charts.confusion_matrix(metrics["confusion_matrix"]))}


def _execution_page(sources: Sources, run: Execution, links: Links, title: str) -> bytes:
    names = list(dict.fromkeys([s.name for s in run.steps] +
                               [n for pair in run.edges for n in pair]))
    steps = [{"step": step, "io": _inputs_and_outputs(step.job),
              "package": step.metadata.get("RegisterModel", {}).get("Arn")}
             for step in run.steps]
    series = _curves_of(sources, run.training)
    return render("execution.html", title, links, live=run.status == "Executing" and
                  links.enabled, run=run, steps=steps, metrics=metrics_view(run.metrics),
                  dag=dag.drawing(names, run.edges, {s.name: s.status for s in run.steps}),
                  curves=Markup(charts.training_curves({run.id: series})) if series else None)


def execution_page(sources: Sources, arn: str) -> bytes:
    run = execution(sources, arn)
    return _execution_page(sources, run, Links(), f"Execution {run.id} of {run.pipeline}")


def report(sources: Sources, arn: str) -> bytes:
    """One self-contained file to share: the execution page without links."""
    run = execution(sources, arn)
    return _execution_page(sources, run, Links(False), f"Execution {run.id} of {run.pipeline}")


# ---------------------------------------------------------------------- a job
def _describe_job(sm, name):
    """(kind, description) of a training or processing job."""
    missing = None
    for kind, call, key in (("Training", sm.describe_training_job, "TrainingJobName"),
                            ("Processing", sm.describe_processing_job, "ProcessingJobName")):
        try:
            return kind, call(**{key: name})
        except ClientError as err:  # try the other kind
            missing = err
    raise missing


def job_page(sources: Sources, name: str) -> bytes:
    kind, job = _describe_job(sources.sagemaker, name)
    state = job.get(f"{kind}JobStatus", "")
    try:
        log = sources.job_log(name)
    except Exception as err:  # noqa: BLE001
        log = f"(no log: {err})"
    series = curves(log)
    return render("job.html", f"{kind} job {name}", live=state == "InProgress", name=name,
                  kind=kind, job=job, state=state,
                  ended=job.get(f"{kind}EndTime") or job.get("TrainingEndTime"),
                  hyperparameters=[(k, v) for k, v in sorted(job.get("HyperParameters",
                                                                     {}).items())
                                   if not k.startswith("sagemaker_")],
                  curves=Markup(charts.training_curves({name: series})) if series else None,
                  log=log[-LOG_TAIL:])


# ---------------------------------------------------------------------- the registry
def packages_page(sources: Sources) -> bytes:
    packages = [dict(p, title=package_title(p)) for p in all_items(
        sources.sagemaker.list_model_packages, "ModelPackageSummaryList",
        ModelPackageType="Both", SortBy="CreationTime", SortOrder="Descending")]
    return render("packages.html", "Model registry", packages=packages)


def package_page(sources: Sources, arn: str, message: str = "") -> bytes:
    p = sources.sagemaker.describe_model_package(ModelPackageName=arn)
    evaluation = package_evaluation(sources, p) or {}
    metrics = next(iter(evaluation.values()), None) if evaluation else None
    return render("package.html", f"Model package {package_title(p)}", p=p, message=message,
                  lineage=sorted(p.get("CustomerMetadataProperties", {}).items()),
                  metrics=metrics_view(metrics))


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
    endpoints = []
    for e in all_items(sm.list_endpoints, "Endpoints"):
        name = e["EndpointName"]
        desc = sm.describe_endpoint(EndpointName=name)
        serving = _serving(sm, desc)
        endpoints.append({
            "name": name, "status": desc["EndpointStatus"],
            "config": desc.get("EndpointConfigName", ""), "serving": serving,
            "trained_by": _trained_by(sm, serving), "updated": desc.get("LastModifiedTime"),
            "history": [(arn, at) for endpoint, arn, at in history if endpoint == name]})
    return render("endpoints.html", "Endpoints", endpoints=endpoints,
                  live=any(e["status"] in ("Creating", "Updating") for e in endpoints))


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
def compare_page(sources: Sources, arn_a: str, arn_b: str) -> bytes:
    a, b = execution(sources, arn_a), execution(sources, arn_b)
    names = list(dict.fromkeys([*a.parameters, *b.parameters]))
    differing = [(n, a.parameters.get(n, ""), b.parameters.get(n, "")) for n in names
                 if a.parameters.get(n) != b.parameters.get(n)]
    a_metrics, b_metrics = a.metrics or {}, b.metrics or {}
    metrics = [(n, a_metrics[n]["value"], b_metrics.get(n, {}).get("value", float("nan")))
               for n in a_metrics if isinstance(a_metrics[n], dict) and "value" in a_metrics[n]]
    series = {r.id: _curves_of(sources, r.training) for r in (a, b)}
    chart = Markup(charts.training_curves({k: v for k, v in series.items() if v}))
    return render("compare.html", f"Compare {a.id} and {b.id}", a=a, b=b, differing=differing,
                  metrics=metrics, curves=chart)
