"""A pipeline's Tuning step: its tuning job created through the service's own tuning API (as
Pipelines creates it through SageMaker's), then waited for. Its properties are the tuning job's
description and ``TrainingJobSummaries``, the best 50 trials best first: what the SDK's
``TuningStep.get_top_model_s3_uri`` and ``properties.BestTrainingJob`` read."""
import re

from pipeline.local.workflow.handlers import Outcome, Status, StepHandler

POLL_SECONDS = 0.5
TOP_TRIALS = 50
_ENDED = ("Completed", "Failed", "Stopped")


def tuning_job_name(step) -> str:
    """``<execution id>-<step>``: unique per execution and attempt, within the 32 characters
    (letters, digits, hyphens) tuning job names allow."""
    base = re.sub(r"[^a-zA-Z0-9]+", "-", f"{step.execution_arn.split('/')[-1]}-{step.name}")
    suffix = f"-{step.attempt}" if step.attempt > 1 else ""
    return (base[:32 - len(suffix)].strip("-") + suffix).lower()


class TuningHandler(StepHandler):
    def __init__(self, records, tuning_api):
        self.records, self.api = records, tuning_api

    def run(self, step):
        arguments = step.arguments()
        name = tuning_job_name(step)
        arn = self.api.create_hyper_parameter_tuning_job(
            hyper_parameter_tuning_job_name=name,
            hyper_parameter_tuning_job_config=arguments["HyperParameterTuningJobConfig"],
            training_job_definition=arguments.get("TrainingJobDefinition"),
            training_job_definitions=arguments.get("TrainingJobDefinitions"),
            warm_start_config=arguments.get("WarmStartConfig"))["HyperParameterTuningJobArn"]
        metadata = {"TuningJob": {"Arn": arn}}
        self.records.step_metadata(step.record, metadata)
        described = self._wait(name, step)
        status = described["HyperParameterTuningJobStatus"]
        if status == "Completed":
            top = self.api.list_training_jobs_for_hyper_parameter_tuning_job(
                name, sort_by="FinalObjectiveMetricValue", max_results=TOP_TRIALS)
            return Outcome(Status.SUCCEEDED, {**described, "TrainingJobSummaries": top[
                "TrainingJobSummaries"]}, metadata)
        if status == "Stopped":
            return Outcome(Status.STOPPED, metadata=metadata)
        return Outcome(Status.FAILED, metadata=metadata,
                       reason=described.get("FailureReason", "the tuning job failed"))

    def _wait(self, name, step) -> dict:
        stopping = False
        while True:
            described = self.api.describe_hyper_parameter_tuning_job(name)
            if described["HyperParameterTuningJobStatus"] in _ENDED:
                return described
            if step.stop.is_set() and not stopping:
                stopping = True
                self.api.stop_hyper_parameter_tuning_job(name)
            step.stop.wait(POLL_SECONDS)
