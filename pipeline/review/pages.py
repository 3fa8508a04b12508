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
from urllib.parse import quote, urlencode

import jinja2
from botocore.exceptions import ClientError
from markupsafe import Markup

from pipeline.review import charts, comparison, dag, deployments, trials
from pipeline.review.runs import (Execution, curves, execution, execution_arns,
                                  per_class)
from pipeline.review.sources import Sources
from pipeline.review.text import accuracy_text, short_when, took, when

REFRESH_SECONDS = 2
LOG_TAIL = 200_000  # characters of a job's log shown on its page


TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
TEMPLATES.filters.update(when=when, short_when=short_when, took=took, accuracy=accuracy_text)


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

    def confirm(self, action, subject):
        """The confirmation page of a state-changing button (approve, reject, stop, retry,
        delete-endpoint) for one subject (a package or execution ARN, an endpoint name)."""
        return self._href(f"/confirm?{urlencode({'action': action, 'subject': subject})}")

    def compare_packages(self, a, b):
        return self._href(f"/compare-packages?{urlencode({'a': a, 'b': b})}")


def render(template: str, title: str, links: Optional[Links] = None, live=False,
           **data) -> bytes:
    return TEMPLATES.get_template(template).render(
        title=title, links=links or Links(), live=live, refresh_seconds=REFRESH_SECONDS,
        **data).encode("utf-8")


def message_page(title: str, message: str) -> bytes:
    """A page that says one thing (not found, refused)."""
    return render("base.html", title, message=message)


# ---------------------------------------------------------------------- executions
STATUSES = ("Executing", "Succeeded", "Failed", "Stopping", "Stopped")


def executions_page(sources: Sources, pipelines: List[str], pipeline: str = "",
                    status: str = "") -> bytes:
    """The executions of every pipeline, newest first; ``pipeline`` and ``status`` filter."""
    summaries = [s for s in execution_arns(sources.sagemaker, [pipeline] if pipeline in
                                           pipelines else pipelines)
                 if not status or s["PipelineExecutionStatus"] == status]
    runs = [execution(sources, summary["PipelineExecutionArn"], detail=False)
            for summary in summaries]
    rows = [{"run": run, "deployed": deployments.run_lines(run)} for run in runs]
    return render("executions.html", "Pipeline executions", rows=rows, pipelines=pipelines,
                  statuses=STATUSES, chosen={"pipeline": pipeline, "status": status},
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
    steps = [{"step": step, "io": _inputs_and_outputs(step.job),
              "package": step.metadata.get("RegisterModel", {}).get("Arn")}
             for step in run.steps]
    series = _curves_of(sources, run.training)
    label = run.id if not (run.training and run.training.cache_source) else \
        f"{run.training.cache_source.split('/')[-1]} (cache hit)"
    drawing = dag.drawing(
        run.step_names, run.edges, {s.name: s.status for s in run.steps}, run.branches,
        notes={s.name: "cache hit" for s in run.steps if s.cache_source},
        hrefs={s.name: (links.job(s.job_name) if s.job_name else None) or f"#step-{s.name}"
               for s in run.steps})
    tuning = trials.tuning(sources.sagemaker, run.tuning.job_name) if run.tuning else None
    return render("execution.html", title, links, live=run.status == "Executing" and
                  links.enabled, run=run, steps=steps, metrics=metrics_view(run.metrics),
                  dag=drawing, deployments=deployments.run_lines(run),
                  curves=Markup(charts.training_curves({label: series})) if series else None,
                  tuning=tuning, chart=_chart(tuning))


def _chart(tuning):
    chart = tuning.chart() if tuning else None
    return Markup(chart) if chart else None


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
    try:  # a tuning job: its trials
        tuning = trials.tuning(sources.sagemaker, name)
    except ClientError:
        tuning = None
    if tuning is not None:
        return render("tuning.html", f"Tuning job {name}", live=tuning.status in (
            "InProgress", "Stopping"), tuning=tuning, chart=_chart(tuning))
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


# ---------------------------------------------------------------------- compare
def compare_page(sources: Sources, arns: List[str]) -> bytes:
    runs = [execution(sources, arn) for arn in arns]
    series = comparison.training_series(sources, runs)
    chart = Markup(charts.training_curves(series)) if series else None
    return render("compare.html", "Compare " + ", ".join(r.id for r in runs), runs=runs,
                  rows=comparison.rows(runs), curves=chart)
