"""Training and processing jobs created through the API (CreateTrainingJob,
CreateProcessingJob), outside any pipeline: the pipeline steps' own job handlers, so the same
container contract, logs, metrics and statuses, run on a thread of their own; Stop*Job stops
the job's processes."""
import threading
from typing import Dict

from pipeline.local.resources import TrainingJob


class StandaloneJobs:
    def __init__(self, handlers: dict, jobs):
        self.handlers = {"training": handlers["Training"], "processing": handlers["Processing"]}
        self.jobs = jobs
        self._stops: Dict[str, threading.Event] = {}

    def start(self, resource, name: str, request: dict) -> dict:
        """Record the job InProgress and run it in the background; its description."""
        handler = self.handlers["training" if resource is TrainingJob else "processing"]
        job = handler.begin(name, request)
        arn = job[resource.arn_field]
        stop = self._stops[arn] = threading.Event()

        def run():
            try:
                handler.complete(job, request, arn, stop.is_set)
            finally:
                self._stops.pop(arn, None)

        threading.Thread(target=run, daemon=True, name=f"job-{name}").start()
        return job

    def stop(self, arn: str):
        """Stop the job's processes; it then ends Stopped."""
        if arn in self._stops:
            self._stops[arn].set()
        self.jobs.stop_owner(arn)
