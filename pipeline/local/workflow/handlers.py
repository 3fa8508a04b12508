"""What each step type does, behind one interface: ``handler.run(step) -> Outcome``.

A handler reads its arguments through the step's expression context, reports jobs through the
internal verbs (``records``), registers models and creates them through the registry and
hosting families, and answers with an ``Outcome``.
Expression errors and the service's refusals are the orchestrator's to turn into failures.
"""
import enum
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from pipeline.local.container import model_artifact_uri
from pipeline.local.jobs import JobResult, JobRunner
from pipeline.local.resources import ProcessingJob, TrainingJob
from pipeline.local.workflow import retry
from pipeline.local.workflow.expressions import Context, render


class Status(str, enum.Enum):
    """How a step (and so its execution) ended."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"


@dataclass
class StepRun:
    """One attempt of one step of one execution."""

    execution_arn: str
    spec: dict  # the step as the definition gives it
    attempt: int
    record: str  # the step's record key, for metadata updates
    context: Context
    stop: threading.Event
    _arguments: Optional[dict] = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec["Name"]

    def arguments(self) -> dict:
        """The step's arguments, resolved once (the cache key and the handler both read
        them; a JsonGet reads a file)."""
        if self._arguments is None:
            self._arguments = self.context.resolve(self.spec.get("Arguments", {}))
        return self._arguments

    def job_name(self) -> str:
        """``pipelines-<execution id>-<step>``, as SageMaker names a step's job (63 chars)."""
        base = re.sub(r"[^a-zA-Z0-9-]", "-",
                      f"pipelines-{self.execution_arn.split('/')[-1]}-{self.name}")
        suffix = f"-{self.attempt}" if self.attempt > 1 else ""
        return (base[:63 - len(suffix)] + suffix).lower()


@dataclass
class Outcome:
    status: Status
    properties: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    reason: Optional[str] = None
    exception_type: Optional[str] = None  # what a retry policy matches (``retry``)


class StepHandler:
    def run(self, step: StepRun) -> Outcome:
        raise NotImplementedError


class _JobHandler(StepHandler):
    """Processing and training: record the job, run it, record how it ended. The same two
    halves run jobs created through the API (``pipeline.local.standalone``)."""

    resource: type = ProcessingJob  # or TrainingJob

    def __init__(self, records, jobs: JobRunner):
        self.records, self.jobs = records, jobs

    def run(self, step):
        request = step.arguments()
        name = step.job_name()
        job = self.begin(name, request)
        metadata = {self.resource.__name__: {"Arn": job[self.resource.arn_field]}}
        self.records.step_metadata(step.record, metadata)
        status, described, result = self.complete(job, request, step.execution_arn,
                                                  step.stop.is_set)
        if status == "Completed":
            return Outcome(Status.SUCCEEDED, described, metadata)
        if status == "Stopped":
            return Outcome(Status.STOPPED, metadata=metadata)
        return Outcome(Status.FAILED, metadata=metadata,
                       reason=result.failure_reason or "the job failed",
                       exception_type=result.fault)

    def begin(self, name, request) -> dict:
        """The job recorded InProgress."""
        return self.records.job_started(self.resource, name, request, **self.started_fields())

    def complete(self, job, request, owner, stopped):
        """Run the job (its processes belong to ``owner``) and record how it ended:
        (status, its description, the JobResult). ``stopped()``: whether a stop was asked."""
        name = job[self.resource.name_field]
        try:
            result = self.execute(name, request, owner)
        except (OSError, ValueError, KeyError) as err:  # staging: bad inputs, missing objects,
            reason, fault = retry.staging_failure(err)  # or a full disk
            result = JobResult(2, reason, 0.0, fault=fault)
        status = "Completed" if result.exit_code == 0 else ("Stopped" if stopped() else "Failed")
        described = self.records.job_ended(self.resource, name, status,
                                           **self.ended_fields(job, request, result, status))
        return status, described, result

    def started_fields(self) -> dict:
        return {}

    def execute(self, name, request, owner) -> JobResult:
        raise NotImplementedError

    def ended_fields(self, job, request, result, status) -> dict:
        raise NotImplementedError


class ProcessingHandler(_JobHandler):
    resource = ProcessingJob

    def started_fields(self):
        return {"ProcessingStartTime": time.time()}

    def execute(self, name, request, owner):
        return self.jobs.run_processing(name, request, owner=owner)

    def ended_fields(self, job, request, result, status):
        # as on AWS: the container's own run, not the input download or output upload
        fields = {"ProcessingStartTime": result.process_start or job["CreationTime"],
                  "ProcessingEndTime": result.process_end or time.time()}
        if result.failure_reason:
            fields.update(FailureReason=result.failure_reason,
                          ExitMessage=result.failure_reason)
        return fields


class TrainingHandler(_JobHandler):
    resource = TrainingJob

    def started_fields(self):
        now = time.time()
        return {"SecondaryStatus": "Training", "TrainingStartTime": now,
                "FinalMetricDataList": [], "SecondaryStatusTransitions": [
                    {"Status": "Starting", "StartTime": now, "EndTime": now,
                     "StatusMessage": "Preparing the instances for training"},
                    {"Status": "Training", "StartTime": now,
                     "StatusMessage": "Training image download completed. Training in "
                                      "progress."}]}

    def execute(self, name, request, owner):
        metrics = {}

        def on_metric(metric, value):
            metrics[metric] = value
            self.records.job_progress(TrainingJob, name, FinalMetricDataList=[
                {"MetricName": k, "Value": v, "Timestamp": time.time()}
                for k, v in metrics.items()])

        return self.jobs.run_training(name, request, owner=owner, on_metric=on_metric)

    def ended_fields(self, job, request, result, status):
        created = job["CreationTime"]
        started, ended = result.process_start or created, result.process_end or time.time()
        now = time.time()
        final = {"Completed": "Training job completed", "Stopped": "Training job stopped"}.get(
            status, f"Training job failed. Reason: {result.failure_reason or 'unknown'}")
        billed = max(1, int(round(result.seconds)))  # botocore's minimum for both is 1
        fields = {"SecondaryStatus": status, "TrainingStartTime": started,
                  "TrainingEndTime": ended,
                  "SecondaryStatusTransitions": [  # with SageMaker's messages
                      {"Status": "Starting", "StartTime": created, "EndTime": created,
                       "StatusMessage": "Preparing the instances for training"},
                      {"Status": "Downloading", "StartTime": created, "EndTime": started,
                       "StatusMessage": "Downloading input data"},
                      {"Status": "Training", "StartTime": started, "EndTime": ended,
                       "StatusMessage": "Training image download completed. Training in "
                                        "progress."},
                      {"Status": "Uploading", "StartTime": ended, "EndTime": now,
                       "StatusMessage": "Uploading generated training model"},
                      {"Status": status, "StartTime": now, "EndTime": now,
                       "StatusMessage": final}],
                  "TrainingTimeInSeconds": billed, "BillableTimeInSeconds": billed,
                  # required in botocore's output shape: where the model is, or would have been
                  "ModelArtifacts": {"S3ModelArtifacts": model_artifact_uri(
                      request, job[TrainingJob.name_field])}}
        if result.failure_reason:
            fields["FailureReason"] = result.failure_reason
        return fields


class RegisterModelHandler(StepHandler):
    def __init__(self, registry):
        self.registry = registry

    def run(self, step):
        package = self.registry.register_from_step(step.arguments())
        return Outcome(Status.SUCCEEDED, package,
                       {"RegisterModel": {"Arn": package["ModelPackageArn"]}})


class ModelHandler(StepHandler):
    def __init__(self, hosting):
        self.hosting = hosting

    def run(self, step):
        request = dict(step.arguments(), ModelName=step.job_name())
        model = self.hosting.create_model_from_step(request)
        return Outcome(Status.SUCCEEDED, model, {"Model": {"Arn": model["ModelArn"]}})


class ConditionHandler(StepHandler):
    def run(self, step):
        outcome = all(step.context.condition(c) for c in step.spec["Arguments"]["Conditions"])
        return Outcome(Status.SUCCEEDED, {"Outcome": outcome},
                       {"Condition": {"Outcome": str(outcome)}})


class FailHandler(StepHandler):
    def run(self, step):
        message = render(step.context.resolve(step.spec.get("Arguments", {})
                                              .get("ErrorMessage", "")))
        return Outcome(Status.FAILED, metadata={"Fail": {"ErrorMessage": message}},
                       reason=message)


def job_handlers(records, jobs: JobRunner) -> dict:
    """The handlers that run jobs (pipelines' steps and jobs created through the API)."""
    return {"Processing": ProcessingHandler(records, jobs),
            "Training": TrainingHandler(records, jobs)}


def default_handlers(job_step_handlers: dict, registry, hosting, tuning) -> dict:
    """Step type -> handler, for every type ``graph.SUPPORTED_TYPES`` admits (``tuning``: the
    Tuning step's, ``workflow.tuning_step``)."""
    return {**job_step_handlers, "Tuning": tuning, "RegisterModel": RegisterModelHandler(registry),
            "Model": ModelHandler(hosting), "Condition": ConditionHandler(),
            "Fail": FailHandler()}
