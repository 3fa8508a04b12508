"""The internal verbs: what the workflow, the job handlers and hosting report through (a step
started, a job finished, an endpoint in service). Built before them and handed to them; it
calls nothing back, so the order in which the service's parts are built cannot matter."""
import time
from typing import Dict, List, Optional

from pipeline.local.backend.common import Family, given
from pipeline.local.errors import ServiceError
from pipeline.local.resources import (Endpoint, EndpointConfig, Model, PipelineExecution,
                                      PipelineExecutionStep, ProcessingJob, TrainingJob)

INTERRUPTED = "interrupted: the local SageMaker service stopped while this ran; retry it"
_RUNNING_STEP = ("Starting", "Executing", "Stopping")


def variant_summary(name, weight, count) -> dict:
    """A variant as DescribeEndpoint shows it once the endpoint has settled."""
    return {"VariantName": name, "CurrentWeight": float(weight), "DesiredWeight": float(weight),
            "CurrentInstanceCount": int(count), "DesiredInstanceCount": int(count)}


class Records(Family):
    # ----------------------------------------------------------- workflow
    def execution_record(self, arn) -> dict:
        """The execution as kept: its definition and parameter values included."""
        return self._get(PipelineExecution, arn)

    def step_records(self, execution_arn) -> List[dict]:
        """The execution's steps as kept: their properties included."""
        return self.store.list(PipelineExecutionStep.kind,
                               prefix=PipelineExecutionStep.key(execution_arn, ""))

    def sibling_executions(self, execution_arn) -> List[str]:
        """The other executions of the same pipeline (where a cached step looks)."""
        pipeline = self.execution_record(execution_arn)["PipelineArn"]
        return [e["PipelineExecutionArn"] for e in self.store.list(PipelineExecution.kind)
                if e["PipelineArn"] == pipeline and e["PipelineExecutionArn"] != execution_arn]

    def step_started(self, execution_arn, spec: dict, attempt: int) -> str:
        """A step's record, Executing (a retried execution's step starts a record anew)."""
        key = PipelineExecutionStep.key(execution_arn, spec["Name"])
        self.store.put(PipelineExecutionStep.kind, key, {
            "ExecutionArn": execution_arn, "StepName": spec["Name"],
            "StepDisplayName": spec.get("DisplayName", spec["Name"]),
            "StepDescription": spec.get("Description", ""), "StartTime": time.time(),
            "StepStatus": "Executing", "AttemptCount": attempt, "Metadata": {},
            "Properties": {}})
        return key

    def step_retrying(self, key: str, attempt: int):
        """A retry policy tries the step again: its next attempt, within the same record."""
        self.store.update(PipelineExecutionStep.kind, key, AttemptCount=attempt, Metadata={})

    def step_metadata(self, key: str, metadata: dict):
        self.store.update(PipelineExecutionStep.kind, key, Metadata=metadata)

    def step_ended(self, key: str, status: str, reason: Optional[str] = None,
                   properties: Optional[dict] = None, metadata: Optional[dict] = None,
                   cache_key: Optional[str] = None, cache_hit: Optional[dict] = None,
                   selective_result: Optional[dict] = None):
        """``cache_key``: what later executions' cached steps compare (kept, not described);
        ``cache_hit`` / ``selective_result``: the execution whose run this step reused, by
        caching or for a selective execution."""
        changes = dict(given(Properties=properties, Metadata=metadata, CacheKey=cache_key,
                             CacheHitResult=cache_hit, SelectiveExecutionResult=selective_result),
                       EndTime=time.time(), FailureReason=reason)
        with self.store.lock:
            doc = self.store.get(PipelineExecutionStep.kind, key)
            if doc is None or not PipelineExecutionStep.allows(doc["StepStatus"], status):
                raise ValueError(f"step {key} cannot end {status} from "  # a bug if so
                                 f"{doc and doc['StepStatus']}")
            self.store.update(PipelineExecutionStep.kind, key, StepStatus=status, **changes)

    def execution_ended(self, arn: str, status: str, reason: Optional[str] = None):
        self._transition(PipelineExecution, arn, status, FailureReason=reason,
                         LastModifiedTime=time.time())

    # --------------------------------------------------------------- jobs
    def job_started(self, resource, name: str, request: dict, **fields) -> dict:
        """Record a new job InProgress; its describe shape is the request plus its status. A
        name taken is AWS's ResourceInUse (job names are unique in an account and region)."""
        arn = resource.arn(self.region, name)
        now = time.time()
        doc = dict(request, **{resource.name_field: name, resource.arn_field: arn,
                               resource.status_field: "InProgress"},
                   CreationTime=now, LastModifiedTime=now, **fields)
        taken = ServiceError("ResourceInUse", f"{resource.what.capitalize()} names must be "
                             "unique within an AWS account and region, and a "
                             f"{resource.what} with this name already exists ({arn})")
        return self._create(resource, name, doc, taken)

    def job_progress(self, resource, name: str, **changes):
        self.store.update(resource.kind, name, LastModifiedTime=time.time(), **changes)

    def job_ended(self, resource, name: str, status: str, **changes) -> dict:
        doc = self._transition(resource, name, status, LastModifiedTime=time.time(), **changes)
        return resource.describe(doc)

    def recover_interrupted(self):
        """After a restart: what was running was interrupted; it can be retried."""
        now = time.time()
        for step in self.store.list(PipelineExecutionStep.kind):
            if step["StepStatus"] in _RUNNING_STEP:
                self.store.update(PipelineExecutionStep.kind, PipelineExecutionStep.key(
                    step["ExecutionArn"], step["StepName"]), StepStatus="Failed",
                    FailureReason=INTERRUPTED, EndTime=now)
        for resource in (ProcessingJob, TrainingJob):
            for job in self.store.list(resource.kind):
                if job[resource.status_field] in ("InProgress", "Stopping"):
                    self.job_ended(resource, job[resource.name_field], "Failed",
                                   FailureReason=INTERRUPTED)
        for execution in self.store.list(PipelineExecution.kind):
            if execution["PipelineExecutionStatus"] in ("Executing", "Stopping"):
                self.execution_ended(execution["PipelineExecutionArn"], "Failed", INTERRUPTED)

    # ------------------------------------------------------------ hosting
    def endpoint_model(self, endpoint_config_name: str) -> Optional[Dict]:
        """The model an endpoint config serves (its first variant's), or None."""
        config = self.store.get(EndpointConfig.kind, endpoint_config_name)
        if config is None:
            return None
        return self.store.get(Model.kind, config["ProductionVariants"][0]["ModelName"])

    def endpoint_exists(self, endpoint_name: str) -> bool:
        return self.store.get(Endpoint.kind, endpoint_name) is not None

    def endpoint_in_service(self, endpoint_name: str, config_name: str):
        """The endpoint serves ``config_name``'s model. The config may have been deleted while
        the model started (as on AWS, an endpoint keeps serving a deleted config): its
        variants are then the ones the endpoint had."""
        config = self.store.get(EndpointConfig.kind, config_name)
        changes: dict = {}
        if config is not None:
            changes["ProductionVariants"] = [
                variant_summary(v["VariantName"], v.get("InitialVariantWeight", 1.0),
                                v.get("InitialInstanceCount", 1))
                for v in config["ProductionVariants"]]
        self._transition(Endpoint, endpoint_name, "InService", EndpointConfigName=config_name,
                         FailureReason=None, LastModifiedTime=time.time(), **changes)

    def endpoint_update_failed(self, endpoint_name: str, serving_config: str, reason: str):
        """A failed update: the old model keeps serving."""
        self._transition(Endpoint, endpoint_name, "InService", LastModifiedTime=time.time(),
                         EndpointConfigName=serving_config, FailureReason=reason)

    def endpoint_failed(self, endpoint_name: str, reason: str):
        self._transition(Endpoint, endpoint_name, "Failed", FailureReason=reason,
                         LastModifiedTime=time.time())

    def endpoints_to_restore(self) -> List[dict]:
        """After a restart: the endpoints that were serving or starting, now Updating."""
        restored = []
        for doc in self.store.list(Endpoint.kind):
            if doc["EndpointStatus"] in ("InService", "Creating", "Updating"):
                status = "Updating" if doc["EndpointStatus"] == "InService" else \
                    doc["EndpointStatus"]
                restored.append(self._transition(Endpoint, doc["EndpointName"], status))
        return restored
