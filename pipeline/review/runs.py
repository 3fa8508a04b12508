"""What a reviewer reads about runs, gathered through SageMaker's own API (boto3-shaped calls),
so the same code reviews an AWS execution, a local one from the CLI, and a local one inside the
service: executions, steps with their jobs and durations, the gate's values, the evaluation, the
model package, the endpoint, and training curves from the job's metric lines.
"""
import json
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from botocore.exceptions import ClientError

from pipeline.config import EVALUATION, LOCAL_MNIST, STEPS, render_value
from pipeline.local.workflow.expressions import StepFailed, json_path
from pipeline.local.workflow.graph import dependencies, flatten
from pipeline.review import deployments
from pipeline.review.sources import Sources, all_items, epoch

FINAL_STATUSES = {"Succeeded", "Failed", "Stopped"}
METRIC_LINE = re.compile(r"^epoch=(\d+)\s+(.*)$")
METRIC_VALUE = re.compile(r"(\w+)=(-?[0-9.]+(?:e[-+]?[0-9]+)?|nan|inf)")
OPERATORS = {"GreaterThanOrEqualTo": ">=", "GreaterThan": ">", "LessThan": "<",
             "LessThanOrEqualTo": "<=", "Equals": "==", "NotEquals": "!="}


def curves(log: str) -> Dict[str, List[float]]:
    """Per-epoch metrics from the training log's ``epoch=N name=value ...`` lines."""
    found: Dict[str, List[float]] = {}
    for line in log.splitlines():
        match = METRIC_LINE.match(line.strip())
        if not match:
            continue
        found.setdefault("epoch", []).append(int(match.group(1)))
        for name, value in METRIC_VALUE.findall(match.group(2)):
            found.setdefault(name, []).append(float(value))
    return found


def cache_hit_text(step: str, source_execution: str, job: str = "") -> str:
    """How every page and command says a step was a cache hit."""
    return (f"cache hit: reused {step} of execution {source_execution.split('/')[-1]}"
            + (f" (job {job})" if job else ""))


@dataclass
class Step:
    name: str
    kind: str
    status: str
    start: Optional[float]
    end: Optional[float]
    description: str = ""
    failure: str = ""
    job_kind: str = ""  # TrainingJob, ProcessingJob or TuningJob
    job_name: str = ""
    job: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    condition: List[str] = field(default_factory=list)  # "0.9811 >= 0.97 -> true"
    cache_source: str = ""  # a cache hit: the execution whose step (and job) this reused

    @property
    def cache_text(self) -> str:
        return cache_hit_text(self.name, self.cache_source, self.job_name) \
            if self.cache_source else ""

    @property
    def duration(self) -> Optional[float]:
        return self.end - self.start if self.start and self.end else None


@dataclass
class Execution:
    arn: str
    pipeline: str
    status: str
    start: Optional[float]
    end: Optional[float]
    display_name: str
    failure: str
    parameters: Dict[str, str]
    defaults: Dict[str, str]
    steps: List[Step]
    edges: List[tuple]  # (from step, to step)
    step_names: List[str]  # every step of the definition, in its order
    branches: Dict[tuple, str]  # (condition, step) -> "true" or "false"
    experiment: dict
    evaluation: Optional[dict] = None
    package: Optional[dict] = None
    deployment_log: Optional[str] = None  # where its DeployModel records (deployment_log.py)
    deployments: list = field(default_factory=list)  # what it did to its endpoint
    deploy_result: Optional[dict] = None  # DeployModel's last line: what it decided
    endpoint_now: Optional[dict] = None  # the endpoint's description today, not the run's

    @property
    def id(self) -> str:
        return self.arn.split("/")[-1]

    @property
    def duration(self) -> Optional[float]:
        return (self.end - self.start) if self.start and self.end else None

    @property
    def changed(self) -> Dict[str, str]:
        """Parameters set to other than the definition's defaults, leaving out what the CLI
        sets on every run (the code's commit, the shipped local copy of the data)."""
        return {k: v for k, v in self.parameters.items() if self.defaults.get(k) != v
                and k != "CodeCommit" and not (k == "MnistSourceUri" and v == LOCAL_MNIST)}

    @property
    def metrics(self) -> Optional[dict]:
        return (self.evaluation or {}).get(EVALUATION.metrics_key)

    @property
    def accuracy(self) -> Optional[float]:
        try:
            return float(json_path(self.evaluation, EVALUATION.accuracy_path))
        except (StepFailed, TypeError, ValueError):
            return None

    def step(self, name) -> Optional[Step]:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def training(self) -> Optional[Step]:
        return next((s for s in self.steps if s.job_kind == "TrainingJob"), None)

    @property
    def tuning(self) -> Optional[Step]:
        return next((s for s in self.steps if s.job_kind == "TuningJob"), None)


def execution_arns(sm, pipeline_names, limit=50) -> List[dict]:
    """Execution summaries of these pipelines (those that exist), newest first."""
    rows, missing = [], []
    for name in pipeline_names:
        try:
            rows += sm.list_pipeline_executions(PipelineName=name, SortBy="CreationTime",
                                                SortOrder="Descending", MaxResults=limit)[
                "PipelineExecutionSummaries"]
        except ClientError as err:  # e.g. no deploy pipeline yet: list the others
            missing.append(err)
    if len(missing) == len(pipeline_names) and missing:
        raise missing[0]
    rows.sort(key=lambda r: epoch(r["StartTime"]) or 0.0, reverse=True)
    return rows[:limit]


def find_execution(sm, pipeline_names, ref) -> Optional[str]:
    """An execution by ARN, or by id in the first of these pipelines that has it."""
    if ref.startswith("arn:"):
        return ref
    for name in pipeline_names:
        try:
            arn = f"{sm.describe_pipeline(PipelineName=name)['PipelineArn']}/execution/{ref}"
            sm.describe_pipeline_execution(PipelineExecutionArn=arn)
            return arn
        except ClientError:
            continue
    return None


def _job(sm, kind, name) -> dict:
    call = sm.describe_training_job if kind == "TrainingJob" else sm.describe_processing_job
    try:
        return call(**{f"{kind[:-3]}JobName": name})
    except ClientError:  # a review shows what it can; the job may be gone
        return {}


def _step(sm, record, spec, describe_job=True) -> Step:
    meta = record.get("Metadata", {})
    step = Step(name=record["StepName"], kind=spec.get("Type", ""), status=record["StepStatus"],
                start=epoch(record.get("StartTime")), end=epoch(record.get("EndTime")),
                description=spec.get("Description", record.get("StepDescription", "")),
                failure=record.get("FailureReason", ""), metadata=meta,
                cache_source=record.get("CacheHitResult", {}).get(
                    "SourcePipelineExecutionArn", ""))
    for kind in ("TrainingJob", "ProcessingJob"):
        if kind in meta:
            step.job_kind, step.job_name = kind, meta[kind]["Arn"].split("/")[-1]
            step.job = _job(sm, kind, step.job_name) if describe_job else {}
    if "TuningJob" in meta:  # its trials: review.trials
        step.job_kind, step.job_name = "TuningJob", meta["TuningJob"]["Arn"].split("/")[-1]
    return step


def output_uri(job: dict, name: str) -> Optional[str]:
    for out in job.get("ProcessingOutputConfig", {}).get("Outputs", []):
        if out["OutputName"] == name:
            return out["S3Output"]["S3Uri"].rstrip("/")
    return None


class _Values:
    """Values of a condition's operands, read the way the executor reads them."""

    def __init__(self, sources, parameters, steps, specs):
        self.sources, self.parameters, self.steps, self.specs = (
            sources, parameters, steps, specs)

    def value(self, expr):
        if not isinstance(expr, dict):
            return expr
        if "Get" in expr and expr["Get"].startswith("Parameters."):
            return self.parameters.get(expr["Get"].split(".", 1)[1])
        if "Std:JsonGet" in expr:
            spec = expr["Std:JsonGet"]
            step_name, _, file_name = spec["PropertyFile"]["Get"].split(".", 1)[1].partition(
                ".PropertyFiles.")
            declared = next(p for p in self.specs[step_name].get("PropertyFiles", [])
                            if p["PropertyFileName"] == file_name)
            base = output_uri(self.steps[step_name].job, declared["OutputName"])
            return json_path(self.sources.read_json(f"{base}/{declared['FilePath']}"),
                             spec["Path"])
        raise ValueError("not readable here")

    def describe(self, condition, outcome) -> str:
        try:
            left, right = (self.value(condition[k]) for k in ("LeftValue", "RightValue"))
        except (KeyError, ValueError, StepFailed, StopIteration, OSError, AttributeError):
            return f"{condition['Type']} -> {outcome.lower()}"
        return (f"{_shown(left)} {OPERATORS.get(condition['Type'], condition['Type'])} "
                f"{_shown(right)} -> {outcome.lower()}")


def _shown(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else render_value(value)


def execution(sources: Sources, arn: str, detail: bool = True) -> Execution:
    """One execution, as a reviewer reads it. ``detail=False`` (a list's row) reads only what a
    row shows: status, times, parameters, the evaluation, the package and what the run
    deployed, in a handful of calls."""
    sm = sources.sagemaker
    desc = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    definition = json.loads(sm.describe_pipeline_definition_for_execution(
        PipelineExecutionArn=arn)["PipelineDefinition"])
    flat = flatten(definition)
    specs = {name: entry.spec for name, entry in flat.items()}
    edges = sorted((dep, name) for name, deps in dependencies(flat).items() for dep in deps)
    branches = {(entry.branch.condition, name): str(entry.branch.if_true).lower()
                for name, entry in flat.items() if entry.branch}
    parameters = {p["Name"]: p["Value"] for p in all_items(
        sm.list_pipeline_parameters_for_execution, "PipelineParameters",
        PipelineExecutionArn=arn)}
    defaults = {p["Name"]: render_value(p.get("DefaultValue"))
                for p in definition.get("Parameters", [])}
    records = all_items(sm.list_pipeline_execution_steps, "PipelineExecutionSteps",
                        PipelineExecutionArn=arn, SortOrder="Ascending")
    steps = [_step(sm, r, specs.get(r["StepName"], {}),
                   detail or r["StepName"] == STEPS.evaluate) for r in records]
    by_name = {s.name: s for s in steps}
    values = _Values(sources, parameters, by_name, specs)
    for step in steps if detail else []:
        if "Condition" in step.metadata:
            outcome = step.metadata["Condition"].get("Outcome", "")
            step.condition = [values.describe(c, outcome)
                              for c in specs[step.name]["Arguments"]["Conditions"]]
    run = Execution(
        arn=arn, pipeline=arn.split("/")[1], status=desc["PipelineExecutionStatus"],
        start=epoch(desc.get("CreationTime")),
        end=epoch(desc.get("LastModifiedTime"))
        if desc["PipelineExecutionStatus"] in FINAL_STATUSES else None,
        display_name=desc.get("PipelineExecutionDisplayName", ""),
        failure=desc.get("FailureReason", ""), parameters=parameters, defaults=defaults,
        steps=steps, edges=edges, step_names=list(flat), branches=branches,
        experiment=desc.get("PipelineExperimentConfig", {}),
        deployment_log=_deployment_log(specs))
    _attach_results(sources, run, detail)
    return run


def _attach_results(sources, run, detail):
    sm = sources.sagemaker
    evaluate = run.step(STEPS.evaluate)
    if evaluate and evaluate.status == "Succeeded":
        uri = output_uri(evaluate.job, EVALUATION.output_name)
        try:
            run.evaluation = sources.read_json(f"{uri}/{EVALUATION.file_name}")
        except Exception:  # noqa: BLE001 - shown as missing
            run.evaluation = None
    name = run.parameters.get("EndpointName")
    if name and run.step(STEPS.deploy):
        run.deployments = deployments.of_run(sources, run)
        run.deploy_result = _last_json_line(sources, run.step(STEPS.deploy))
    register = next((s for s in run.steps if "RegisterModel" in s.metadata), None)
    if register:
        try:
            run.package = sm.describe_model_package(
                ModelPackageName=register.metadata["RegisterModel"]["Arn"])
        except ClientError:
            run.package = None
    if not detail:
        return
    if name and run.step(STEPS.deploy):
        try:
            run.endpoint_now = sm.describe_endpoint(EndpointName=name)
        except ClientError:  # deleted (KeepEndpoint=false) or never made
            run.endpoint_now = None


def _deployment_log(specs) -> Optional[str]:
    """The deployment log a definition's DeployModel writes to (its --deployment-log)."""
    arguments = specs.get(STEPS.deploy, {}).get("Arguments", {}).get(
        "AppSpecification", {}).get("ContainerArguments", [])
    if "--deployment-log" in arguments[:-1]:
        uri = arguments[arguments.index("--deployment-log") + 1]
        return uri if isinstance(uri, str) else None
    return None


def _last_json_line(sources, step) -> Optional[dict]:
    """What a step's script printed last as JSON (DeployModel's decision), if it did."""
    if not step or not step.job_name:
        return None
    try:
        last = sources.job_log(step.job_name).strip().splitlines()[-1]
        result = json.loads(last[last.index("{"):])
    except Exception:  # noqa: BLE001 - no log, or no decision in it: nothing to say
        return None
    return result if isinstance(result, dict) else None


def package_evaluation(sources: Sources, package: dict) -> Optional[dict]:
    """The model-quality statistics a package carries (its ModelMetrics)."""
    uri = package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get(
        "S3Uri")
    if not uri:
        return None
    try:
        return sources.read_json(uri)
    except Exception:  # noqa: BLE001
        return None


def package_metrics(sources: Sources, package: dict) -> Optional[dict]:
    """The metrics block of a package's statistics (multiclass_classification_metrics)."""
    evaluation = package_evaluation(sources, package) or {}
    return next(iter(evaluation.values()), None) if evaluation else None


def package_accuracy(sources: Sources, package: dict) -> Optional[float]:
    try:
        return float(package_metrics(sources, package)["accuracy"]["value"])  # type: ignore
    except (KeyError, TypeError, ValueError):
        return None


def per_class(metrics: dict) -> List[dict]:
    """Per digit: support, precision, recall, F1, from the confusion matrix."""
    confusion = metrics["confusion_matrix"]
    labels = sorted(confusion, key=lambda x: int(x) if x.isdigit() else x)
    rows = []
    for label in labels:
        support = sum(confusion[label].values())
        predicted = sum(confusion[other].get(label, 0) for other in labels)
        hits = confusion[label].get(label, 0)
        precision = hits / predicted if predicted else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"label": label, "support": support, "precision": precision,
                     "recall": recall, "f1": f1})
    return rows
