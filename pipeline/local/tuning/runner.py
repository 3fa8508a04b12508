"""A tuning job's trials, run: each an ordinary training job (the training handler's own begin
and complete: the same container contract, logs, metrics and statuses, described with the tuning
job's ARN), at most ``MaxParallelTrainingJobs`` at once and ``MaxNumberOfTrainingJobs`` in all;
the objective is the trial's final value of the objective metric; the strategy is told each one
as it ends. A stop ends the running trials' processes; the job then ends Stopped."""
import hashlib
import threading
import time

from pipeline.local.resources import HyperParameterTuningJob, TrainingJob

# CreateTrainingJob members a TrainingJobDefinition carries under the same name
_DEFINITION_MEMBERS = ("AlgorithmSpecification", "RoleArn", "InputDataConfig", "VpcConfig",
                       "OutputDataConfig", "ResourceConfig", "StoppingCondition",
                       "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
                       "EnableManagedSpotTraining", "CheckpointConfig", "RetryStrategy",
                       "Environment")


def trial_name(tuning_name: str, number: int) -> str:
    """``<tuning job>-<NNN>-<8 hex>``, as SageMaker names a tuning job's training jobs."""
    digest = hashlib.sha256(f"{tuning_name}/{number}".encode()).hexdigest()[:8]
    return f"{tuning_name}-{number:03d}-{digest}"


def objective_of(described: dict, metric: str):
    """The trial's final value of the objective metric, or None if it reported none."""
    return next((m["Value"] for m in described.get("FinalMetricDataList", [])
                 if m["MetricName"] == metric), None)


class TuningRunner:
    def __init__(self, store, training, jobs):
        """``training``: the training-job handler (begin, complete); ``jobs``: the job runner
        (its processes are stopped by owner: the tuning job's ARN)."""
        self.store, self.training, self.jobs = store, training, jobs
        self._stops = {}

    def start(self, doc: dict, proposer):
        """Run the job's trials as ``proposer`` (its strategy, ``strategies``) proposes them."""
        stop = self._stops[doc["HyperParameterTuningJobArn"]] = threading.Event()
        threading.Thread(target=self._run, args=(doc, proposer, stop), daemon=True,
                         name=f"tuning-{doc['HyperParameterTuningJobName']}").start()

    def stop(self, arn: str):
        if arn in self._stops:
            self._stops[arn].set()
        self.jobs.stop_owner(arn)

    def _run(self, doc, proposer, stop):
        limits = doc["HyperParameterTuningJobConfig"].get("ResourceLimits", {})
        total = min(n for n in (limits.get("MaxNumberOfTrainingJobs"), proposer.size())
                    if n is not None)
        parallel = limits.get("MaxParallelTrainingJobs", 1)
        running, started, lock = [], 0, threading.Condition()
        try:
            while not stop.is_set():
                with lock:
                    running[:] = [t for t in running if t.is_alive()]
                    while len(running) < parallel and started < total and not stop.is_set():
                        proposed = proposer.propose()
                        if proposed is None:
                            total = started
                            break
                        started += 1
                        trial = threading.Thread(target=self._trial, args=(
                            doc, started, proposed, proposer, lock, stop), daemon=True)
                        running.append(trial)
                        trial.start()
                    if not running and started >= total:
                        break
                    lock.wait(0.5)
        finally:
            for trial in running:
                trial.join()
            self._stops.pop(doc["HyperParameterTuningJobArn"], None)
            self._end(doc["HyperParameterTuningJobName"], stop.is_set())

    def _trial(self, doc, number, proposed, proposer, lock, stop):
        name = trial_name(doc["HyperParameterTuningJobName"], number)
        definition = doc["TrainingJobDefinition"]
        request = {k: definition[k] for k in _DEFINITION_MEMBERS if k in definition}
        if "ResourceConfig" not in request:  # the SDK sends the tuning form
            hosts = definition.get("HyperParameterTuningResourceConfig", {})
            request["ResourceConfig"] = {k: hosts[k] for k in (
                "InstanceType", "InstanceCount", "VolumeSizeInGB", "VolumeKmsKeyId") if k in hosts}
        request.update(TrainingJobName=name, HyperParameters={
            **definition.get("StaticHyperParameters", {}), **proposed})
        arn = doc["HyperParameterTuningJobArn"]
        value = None
        try:
            job = self.training.begin(name, request)
            self.store.update(TrainingJob.kind, name, TuningJobArn=arn)
            self._record(doc["HyperParameterTuningJobName"], name, proposed)
            status, described, _ = self.training.complete(job, request, arn, stop.is_set)
            if status == "Completed":
                value = objective_of(described, doc["HyperParameterTuningJobConfig"][
                    "HyperParameterTuningJobObjective"]["MetricName"])
        finally:
            with lock:
                proposer.tell(proposed, value)
                lock.notify_all()

    def _record(self, tuning_name, trial, proposed):
        with self.store.lock:
            current = self.store.get(HyperParameterTuningJob.kind, tuning_name)
            self.store.update(HyperParameterTuningJob.kind, tuning_name, LastModifiedTime=(
                time.time()), Trials={**current.get("Trials", {}), trial: proposed})

    def _end(self, tuning_name, stopped):
        with self.store.lock:
            doc = self.store.get(HyperParameterTuningJob.kind, tuning_name)
            summaries = trial_summaries(self.store, doc)
            status, reason = "Stopped" if stopped else "Completed", None
            if not stopped and summaries and all(s["TrainingJobStatus"] == "Failed"
                                                 for s in summaries):
                status, reason = "Failed", "All training jobs failed: " + (
                    summaries[0].get("FailureReason") or "see their logs")
            now = time.time()
            self.store.update(HyperParameterTuningJob.kind, tuning_name,
                              HyperParameterTuningJobStatus=status, FailureReason=reason,
                              HyperParameterTuningEndTime=now, LastModifiedTime=now)


def trial_summaries(store, doc) -> list:
    """The tuning job's trials as ListTrainingJobsForHyperParameterTuningJob describes them."""
    metric = doc["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    out = []
    for name, proposed in doc.get("Trials", {}).items():
        job = store.get(TrainingJob.kind, name)
        if job is None:
            continue
        value = objective_of(job, metric["MetricName"]) \
            if job["TrainingJobStatus"] == "Completed" else None
        status = job["TrainingJobStatus"]
        summary = {"TrainingJobName": name, "TrainingJobArn": job["TrainingJobArn"],
                   "TuningJobName": doc["HyperParameterTuningJobName"],
                   "CreationTime": job["CreationTime"],
                   "TrainingStartTime": job.get("TrainingStartTime"),
                   "TrainingEndTime": job.get("TrainingEndTime"), "TrainingJobStatus": status,
                   "TunedHyperParameters": proposed, "FailureReason": job.get("FailureReason"),
                   "ObjectiveStatus": "Succeeded" if value is not None else (
                       "Pending" if status in ("InProgress", "Stopping") else "Failed")}
        if value is not None:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": metric["Type"], "MetricName": metric["MetricName"], "Value": value}
        out.append({k: v for k, v in summary.items() if v is not None})
    return out


def counters(summaries) -> dict:
    jobs = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0,
            "Stopped": 0}
    objectives = {"Succeeded": 0, "Pending": 0, "Failed": 0}
    for s in summaries:
        status = s["TrainingJobStatus"]
        key = {"Failed": "NonRetryableError", "Stopping": "InProgress"}.get(status, status)
        jobs[key] = jobs.get(key, 0) + 1
        objectives[s["ObjectiveStatus"]] += 1
    return {"TrainingJobStatusCounters": jobs, "ObjectiveStatusCounters": objectives}


def ranked(summaries, doc) -> list:
    """The trials with an objective, best first."""
    maximize = doc["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"][
        "Type"] == "Maximize"
    scored = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" in s]
    return sorted(scored, reverse=maximize, key=lambda s: s[
        "FinalHyperParameterTuningJobObjectiveMetric"]["Value"])


def with_trials(store, doc) -> dict:
    """The tuning job's record with its counters and best trial as its trials stand now."""
    summaries = trial_summaries(store, doc)
    top = ranked(summaries, doc)
    return {**doc, **counters(summaries), "BestTrainingJob": top[0] if top else None}
