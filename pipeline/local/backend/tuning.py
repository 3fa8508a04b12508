"""Hyperparameter tuning through the API: CreateHyperParameterTuningJob, Describe, List, Stop,
ListTrainingJobsForHyperParameterTuningJob. The trials run on ``tuning.runner``; what this
service does not apply (warm starts, several training definitions, Autotune, automatic early
stopping, the Hyperband strategy) is refused with a ValidationException, not ignored."""
import time

from pipeline.local.backend.common import Family
from pipeline.local.backend.listing import list_answer
from pipeline.local.errors import ServiceError, validation
from pipeline.local.paging import page
from pipeline.local.resources import HyperParameterTuningJob
from pipeline.local.tuning.runner import ranked, trial_summaries, with_trials
from pipeline.local.tuning.strategies import strategy

_SORT = {"Name": "TrainingJobName", "CreationTime": "CreationTime",
         "Status": "TrainingJobStatus"}


class TuningApi(Family):
    def __init__(self, store, region, tags, runner):
        super().__init__(store, region, tags)
        self.runner = runner

    def create_hyper_parameter_tuning_job(self, hyper_parameter_tuning_job_name,
                                          hyper_parameter_tuning_job_config,
                                          training_job_definition=None,
                                          training_job_definitions=None, warm_start_config=None,
                                          tags=None, autotune=None):
        name, config = hyper_parameter_tuning_job_name, hyper_parameter_tuning_job_config
        proposer = _applied(config, training_job_definition, training_job_definitions,
                            warm_start_config, autotune)
        arn = HyperParameterTuningJob.arn(self.region, name)
        now = time.time()
        doc = self._create(HyperParameterTuningJob, name, {
            "HyperParameterTuningJobName": name, "HyperParameterTuningJobArn": arn,
            "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": training_job_definition,
            "HyperParameterTuningJobStatus": "InProgress", "CreationTime": now,
            "LastModifiedTime": now, "Strategy": config["Strategy"],
            "ResourceLimits": config.get("ResourceLimits", {}), "Trials": {}},
            ServiceError("ResourceInUse", f"A hyperparameter tuning job named {name} already "
                         f"exists ({arn}): tuning job names are unique within an AWS account "
                         "and region."), tags)
        self.runner.start(doc, proposer)
        return {"HyperParameterTuningJobArn": arn}

    def describe_hyper_parameter_tuning_job(self, hyper_parameter_tuning_job_name):
        return HyperParameterTuningJob.describe(with_trials(
            self.store, self._get(HyperParameterTuningJob, hyper_parameter_tuning_job_name)))

    def list_hyper_parameter_tuning_jobs(self, **query):
        return list_answer(HyperParameterTuningJob, [
            with_trials(self.store, d) for d in self.store.list(HyperParameterTuningJob.kind)],
            **query)

    def stop_hyper_parameter_tuning_job(self, hyper_parameter_tuning_job_name):
        doc = self._transition(HyperParameterTuningJob, hyper_parameter_tuning_job_name,
                               "Stopping", "The hyperparameter tuning job is {status}; only "
                               "an InProgress job can be stopped", LastModifiedTime=time.time())
        self.runner.stop(doc["HyperParameterTuningJobArn"])
        return {}

    def list_training_jobs_for_hyper_parameter_tuning_job(
            self, hyper_parameter_tuning_job_name, next_token=None, max_results=None,
            status_equals=None, sort_by=None, sort_order=None):
        """Its trials; SortBy FinalObjectiveMetricValue lists the best first (by default,
        trials without an objective last), the others CreationTime, Name or Status."""
        doc = self._get(HyperParameterTuningJob, hyper_parameter_tuning_job_name)
        summaries = trial_summaries(self.store, doc)
        if status_equals:
            summaries = [s for s in summaries if s["TrainingJobStatus"] == status_equals]
        if sort_by == "FinalObjectiveMetricValue":
            scored = ranked(summaries, doc)
            if sort_order == "Ascending":
                scored.reverse()
            summaries = scored + [s for s in summaries if s not in scored]
        else:
            key = _SORT[sort_by or "CreationTime"]
            summaries.sort(key=lambda s: s.get(key) or 0,
                           reverse=(sort_order or "Descending") == "Descending")
        return page(summaries, "TrainingJobSummaries", next_token, max_results or 10)


def _applied(config, definition, definitions, warm_start, autotune):
    """Refuse what this service would not apply; the strategy over the ranges (which checks
    them), to run the trials with."""
    if definitions or not definition:
        raise validation("Give one TrainingJobDefinition: the local service does not tune "
                         "several training job definitions at once.")
    if warm_start or autotune:
        raise validation("WarmStartConfig and Autotune are not applied by the local service.")
    if config.get("TrainingJobEarlyStoppingType", "Off") != "Off":
        raise validation("TrainingJobEarlyStoppingType Auto is not applied by the local "
                         "service: use Off.")
    limits = config.get("ResourceLimits", {})
    if config["Strategy"] != "Grid" and not limits.get("MaxNumberOfTrainingJobs"):
        raise validation("ResourceLimits.MaxNumberOfTrainingJobs is required unless the "
                         "strategy is Grid.")
    objective = config.get("HyperParameterTuningJobObjective")
    if not objective:
        raise validation("HyperParameterTuningJobObjective is required.")
    metrics = {m["Name"] for m in definition["AlgorithmSpecification"].get(
        "MetricDefinitions", [])}
    if objective["MetricName"] not in metrics:
        raise validation(f"The objective metric {objective['MetricName']} is not among the "
                         "training job definition's MetricDefinitions.")
    return strategy(config["Strategy"], config.get("ParameterRanges", {}),
                    objective["Type"] == "Maximize")
