"""One class per SageMaker resource: its ARN, its statuses, and the shapes AWS returns for it.

Describe and summary shapes come from botocore's service model: whatever the service keeps
about a resource for itself (an execution's parameters, a step's properties) never leaks into an
answer, and every answer has only members that AWS's own answer can have.
"""
import functools
from typing import Dict, Optional, Set, Tuple

import botocore.session

from pipeline.local.errors import ServiceError

ACCOUNT = "000000000000"
SERVICE_MODEL = botocore.session.get_session().get_service_model("sagemaker")


@functools.lru_cache(maxsize=None)
def _members(operation: str, list_key: Optional[str] = None) -> Tuple[str, ...]:
    shape = SERVICE_MODEL.operation_model(operation).output_shape
    if list_key:
        shape = shape.members[list_key].member
    return tuple(shape.members)


class Resource:
    """A kind of resource. Subclasses name their store kind, fields and operations."""

    kind: str = ""  # the store's kind
    name_field: str = ""
    arn_field: str = ""
    arn_type: str = ""  # the resource type inside its ARN
    status_field: Optional[str] = None
    transitions: Dict[str, Set[str]] = {}  # status -> the statuses it may move to
    sort_fields: Dict[str, str] = {}  # SortBy values whose summary field differs
    describe_operation: str = ""
    list_operation: Tuple[str, str] = ("", "")  # (operation, member holding the summaries)
    sort_order: str = "Descending"  # its List operation's documented default SortOrder
    page_size: int = 100  # its List operation's default MaxResults (if undocumented: 100)
    missing: Tuple[str, str] = ("ValidationException", 'Could not find {what} "{name}".')
    what: str = ""

    @classmethod
    def arn(cls, region: str, name: str) -> str:
        return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{cls.arn_type}/{name.lower()}"

    @classmethod
    def describe(cls, doc: dict) -> dict:
        """The describe answer: the output shape's members this resource has set (AWS omits
        unset members rather than answering empty strings)."""
        keys = _members(cls.describe_operation)
        return {k: doc[k] for k in keys if doc.get(k) not in (None, "")}

    @classmethod
    def summary(cls, doc: dict) -> dict:
        keys = _members(*cls.list_operation)
        return {k: doc[k] for k in keys if doc.get(k) not in (None, "")}

    @classmethod
    def not_found(cls, name: str, region: str = "") -> ServiceError:
        code, template = cls.missing
        arn = cls.arn(region, name) if region else name
        return ServiceError(code, template.format(what=cls.what, name=name, arn=arn))

    @classmethod
    def allows(cls, old: str, new: str) -> bool:
        """Whether the resource may go from status ``old`` to ``new``."""
        return new == old or new in cls.transitions.get(old, set())


class Pipeline(Resource):
    kind, name_field, arn_field, arn_type = "pipeline", "PipelineName", "PipelineArn", "pipeline"
    describe_operation = "DescribePipeline"
    list_operation = ("ListPipelines", "PipelineSummaries")
    missing = ("ResourceNotFound", "Pipeline '{name}' does not exist.")


class PipelineExecution(Resource):
    """Kept with what it runs: the definition and parameter values at its start."""

    kind, name_field, arn_field = "execution", "PipelineExecutionArn", "PipelineExecutionArn"
    status_field = "PipelineExecutionStatus"
    transitions = {"Executing": {"Stopping", "Succeeded", "Failed", "Stopped"},
                   "Stopping": {"Stopped", "Failed", "Succeeded"},
                   "Failed": {"Executing"}, "Stopped": {"Executing"}}
    describe_operation = "DescribePipelineExecution"
    list_operation = ("ListPipelineExecutions", "PipelineExecutionSummaries")
    missing = ("ResourceNotFound", "Pipeline execution '{name}' does not exist.")
    sort_fields = {"CreationTime": "StartTime"}

    @classmethod
    def arn_of(cls, pipeline_arn: str, execution_id: str) -> str:
        return f"{pipeline_arn}/execution/{execution_id}"

    @classmethod
    def describe(cls, doc):
        return {"PipelineExperimentConfig": {}, **super().describe(doc)}

    @classmethod
    def summary(cls, doc):
        out = super().summary(doc)
        out["StartTime"] = doc["CreationTime"]
        if "FailureReason" in doc:
            out["PipelineExecutionFailureReason"] = doc["FailureReason"]
        return out


class PipelineExecutionStep(Resource):
    """Kept with its properties (what later steps may Get) and its execution's ARN."""

    kind = "step"
    status_field = "StepStatus"
    transitions = {"Executing": {"Succeeded", "Failed", "Stopped"}}
    list_operation = ("ListPipelineExecutionSteps", "PipelineExecutionSteps")

    @staticmethod
    def key(execution_arn: str, step_name: str) -> str:
        return f"{execution_arn}|{step_name}"


class ProcessingJob(Resource):
    kind, name_field, arn_field = "processing-job", "ProcessingJobName", "ProcessingJobArn"
    arn_type, status_field = "processing-job", "ProcessingJobStatus"
    transitions = {"InProgress": {"Completed", "Failed", "Stopping", "Stopped"},
                   "Stopping": {"Stopped", "Failed", "Completed"}}
    describe_operation = "DescribeProcessingJob"
    list_operation = ("ListProcessingJobs", "ProcessingJobSummaries")
    sort_order = "Ascending"
    missing = ("ValidationException", "Could not find requested job with name {name}")
    what = "processing job"


class TrainingJob(ProcessingJob):
    kind, name_field, arn_field = "training-job", "TrainingJobName", "TrainingJobArn"
    arn_type, status_field = "training-job", "TrainingJobStatus"
    describe_operation = "DescribeTrainingJob"
    list_operation = ("ListTrainingJobs", "TrainingJobSummaries")
    missing = ("ValidationException", "Requested resource not found.")
    what = "training job"


class HyperParameterTuningJob(Resource):
    kind, name_field = "tuning-job", "HyperParameterTuningJobName"
    arn_field, arn_type = "HyperParameterTuningJobArn", "hyper-parameter-tuning-job"
    status_field = "HyperParameterTuningJobStatus"
    transitions = {"InProgress": {"Completed", "Failed", "Stopping", "Stopped"},
                   "Stopping": {"Stopped", "Failed", "Completed"}}
    describe_operation = "DescribeHyperParameterTuningJob"
    list_operation = ("ListHyperParameterTuningJobs", "HyperParameterTuningJobSummaries")
    missing = ("ResourceNotFound", "Amazon SageMaker can't find a tuning job with name {name}")
    what = "hyperparameter tuning job"


class Model(Resource):
    kind, name_field, arn_field, arn_type = "model", "ModelName", "ModelArn", "model"
    describe_operation = "DescribeModel"
    list_operation = ("ListModels", "Models")
    what = "model"
    missing = ("ValidationException", 'Could not find {what} "{arn}".')  # AWS names the ARN


class EndpointConfig(Resource):
    kind, name_field = "endpoint-config", "EndpointConfigName"
    arn_field, arn_type = "EndpointConfigArn", "endpoint-config"
    describe_operation = "DescribeEndpointConfig"
    list_operation = ("ListEndpointConfigs", "EndpointConfigs")
    what = "endpoint configuration"
    missing = ("ValidationException", 'Could not find {what} "{arn}".')  # AWS names the ARN


class Endpoint(Resource):
    kind, name_field, arn_field, arn_type = "endpoint", "EndpointName", "EndpointArn", "endpoint"
    status_field = "EndpointStatus"
    transitions = {"Creating": {"InService", "Failed"},
                   "Updating": {"InService", "Failed"},
                   # InService -> Failed: its model server died and could not be restarted
                   "InService": {"Updating", "Failed"}, "Failed": {"Updating"}}
    describe_operation = "DescribeEndpoint"
    list_operation = ("ListEndpoints", "Endpoints")
    page_size = 10
    what = "endpoint"
    missing = ("ValidationException", 'Could not find {what} "{arn}".')  # AWS names the ARN


class ModelPackageGroup(Resource):
    kind, name_field = "model-package-group", "ModelPackageGroupName"
    arn_field, arn_type = "ModelPackageGroupArn", "model-package-group"
    describe_operation = "DescribeModelPackageGroup"
    list_operation = ("ListModelPackageGroups", "ModelPackageGroupSummaryList")
    sort_order = "Ascending"
    what = "model package group"


class ModelPackage(Resource):
    """Stored under its ARN: versions of one group share the group's name."""

    kind, name_field, arn_field, arn_type = ("model-package", "ModelPackageArn",
                                             "ModelPackageArn", "model-package")
    describe_operation = "DescribeModelPackage"
    list_operation = ("ListModelPackages", "ModelPackageSummaryList")
    sort_order = "Ascending"
    missing = ("ValidationException", "ModelPackage {name} does not exist.")

