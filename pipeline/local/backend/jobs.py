"""Training and processing jobs through the API: Create*, Describe*, List*, Stop*. Jobs made
outside pipelines run on ``standalone`` (the pipeline steps' own job handlers)."""
import time

from pipeline.local.backend.common import Family, aws_names
from pipeline.local.backend.listing import list_answer
from pipeline.local.resources import ProcessingJob, TrainingJob


class JobsApi(Family):
    def __init__(self, store, region, tags, standalone):
        super().__init__(store, region, tags)
        self.standalone = standalone

    def describe_processing_job(self, processing_job_name):
        return ProcessingJob.describe(self._get(ProcessingJob, processing_job_name))

    def describe_training_job(self, training_job_name):
        return TrainingJob.describe(self._get(TrainingJob, training_job_name))

    def create_training_job(self, training_job_name, tags=None, **members):
        """A training job outside any pipeline, run as a pipeline's TrainModel is."""
        return self._create_job(TrainingJob, training_job_name, "CreateTrainingJob", members,
                                tags)

    def create_processing_job(self, processing_job_name, tags=None, **members):
        return self._create_job(ProcessingJob, processing_job_name, "CreateProcessingJob",
                                members, tags)

    def _create_job(self, resource, name, operation, members, tags):
        """Recorded (ResourceInUse when the name is taken), then run in the background."""
        job = self.standalone.start(resource, name, aws_names(operation, members))
        self.tags.add(job[resource.arn_field], tags)
        return {resource.arn_field: job[resource.arn_field]}

    def stop_training_job(self, training_job_name):
        return self._stop_job(TrainingJob, training_job_name)

    def stop_processing_job(self, processing_job_name):
        return self._stop_job(ProcessingJob, processing_job_name)

    def _stop_job(self, resource, name):
        doc = self._transition(resource, name, "Stopping", "The job is {status}; only an "
                               "InProgress job can be stopped", LastModifiedTime=time.time())
        self.standalone.stop(doc[resource.arn_field])
        return {}

    def list_processing_jobs(self, **query):
        return list_answer(ProcessingJob, self.store.list(ProcessingJob.kind), **query)

    def list_training_jobs(self, warm_pool_status_equals=None, training_plan_arn_equals=None,
                           **query):
        docs = self.store.list(TrainingJob.kind)
        if warm_pool_status_equals or training_plan_arn_equals:
            docs = []  # no job here keeps a warm pool or runs on a training plan
        return list_answer(TrainingJob, docs, **query)
