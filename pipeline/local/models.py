"""The SageMaker backend of the local service: the only writer of its state.

One keyword-argument method per API operation, named as botocore names it
(``create_model(model_name=..., primary_container=...)``; nested members keep AWS's spelling),
returning the response dict and raising ``ServiceError``. Below them, the internal verbs that
the workflow, the jobs and hosting report through (a step started, a job finished, an endpoint
in service). Long-running work belongs to the ``orchestrator`` and ``hosting`` set by the service.
"""
import json
import secrets
import threading
import time
from datetime import datetime
from typing import Dict, List, Optional

import botocore

from pipeline.config import render_value
from pipeline.local import constraints, search
from pipeline.local.errors import ServiceError, validation
from pipeline.local.paging import page
from pipeline.local.resources import (Endpoint, EndpointConfig, Model, ModelPackage,
                                      ModelPackageGroup, Pipeline, PipelineExecution,
                                      PipelineExecutionStep, ProcessingJob, SERVICE_MODEL,
                                      TrainingJob)
from pipeline.local.store import Store
from pipeline.local.workflow.expressions import Context
from pipeline.local.workflow.graph import (DefinitionError, check_definition, coerce_parameter,
                                           flatten)

MAX_TAGS = 50  # per resource, as AWS allows
INTERRUPTED = "interrupted: the local SageMaker service stopped while this ran; retry it"


def as_kwargs(request: dict) -> dict:
    """A request's top-level members as this backend's keyword arguments."""
    return {botocore.xform_name(key): value for key, value in request.items()}


def aws_names(operation: str, kwargs: dict) -> dict:
    """Keyword arguments back in AWS's spelling, as the operation's input shape names them."""
    names = {botocore.xform_name(m): m
             for m in SERVICE_MODEL.operation_model(operation).input_shape.members}
    return {names[key]: value for key, value in kwargs.items()}


def _epoch(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


_TIME_FILTERS = {"creation_time_after": ("CreationTime", 1), "created_after": ("CreationTime", 1),
                 "creation_time_before": ("CreationTime", -1),
                 "created_before": ("CreationTime", -1),
                 "last_modified_time_after": ("LastModifiedTime", 1),
                 "last_modified_time_before": ("LastModifiedTime", -1)}
_PAGING = {"sort_by", "sort_order", "next_token", "max_results"}


def _list(resource, docs: List[dict], name_field: Optional[str] = None, **query) -> dict:
    """A List* answer: every filter the operation documents (NameContains, the creation and
    modification time bounds, StatusEquals), the summary shape, SortBy / SortOrder with the
    operation's documented defaults, then one page of the documented default size. A filter
    this service cannot apply is refused rather than ignored."""
    name_field = name_field or resource.name_field
    for key, value in query.items():
        if value is None or key in _PAGING:
            continue
        if key == "name_contains":
            docs = [d for d in docs if value.lower() in d[name_field].lower()]
        elif key in _TIME_FILTERS:
            field, sign = _TIME_FILTERS[key]  # compared in milliseconds, as clients send them
            bound = round(_epoch(value), 3)
            docs = [d for d in docs if d.get(field) is not None
                    and (round(d[field], 3) - bound) * sign > 0]
        elif key == "status_equals" and resource.status_field:
            docs = [d for d in docs if d.get(resource.status_field) == value]
        else:
            raise validation(f"{botocore.xform_name(key)} is not supported by the local "
                             "service's " + resource.list_operation[0])
    items = [resource.summary(d) for d in docs]
    sort_fields = {"CreationTime": "CreationTime", "Name": name_field,
                   "Status": resource.status_field, **resource.sort_fields}
    key = sort_fields.get(query.get("sort_by")) or sort_fields["CreationTime"]
    order = query.get("sort_order") or resource.sort_order
    items.sort(key=lambda i: (i.get(key) is None, i.get(key) or 0),
               reverse=order == "Descending")
    out_key = resource.list_operation[1]
    return page(items, out_key, query.get("next_token"),
                 query.get("max_results") or resource.page_size)


def _given(**members) -> dict:
    """The members a request set (None: left as they are)."""
    return {name: value for name, value in members.items() if value is not None}


def _variant_summary(name, weight, count) -> dict:
    """A variant as DescribeEndpoint shows it once the endpoint has settled."""
    return {"VariantName": name, "CurrentWeight": float(weight), "DesiredWeight": float(weight),
            "CurrentInstanceCount": int(count), "DesiredInstanceCount": int(count)}


class SageMakerBackend:
    def __init__(self, store: Store, region: str = "us-east-1"):
        self.store, self.region = store, region
        self.orchestrator = None  # set by the service: workflow.orchestrator.Orchestrator
        self.hosting = None  # set by the service: endpoints.Hosting
        self.events = None  # set by the service: events.EventsBackend (approve -> deploy)
        self.s3 = None  # set by the service: s3.LocalS3 (definitions sent by S3 location)
        self.standalone = None  # set by the service: standalone.StandaloneJobs
        self.lock = threading.RLock()

    # ------------------------------------------------------------- helpers
    def _get(self, resource, name: str) -> dict:
        doc = self.store.get(resource.kind, name)
        if doc is None:
            raise resource.not_found(name)
        return doc

    def _put_new(self, resource, name: str, doc: dict, tags=None):
        self.store.put(resource.kind, name, doc)
        self._set_tags(doc[resource.arn_field], tags)

    def _transition(self, resource, name: str, status: str, refusal=None, **changes) -> dict:
        """Move a resource to ``status`` with changes; a move its transitions do not allow is a
        ValidationException, with the API's own ``refusal`` message where it has one
        (``{status}``: the current status, ``{arn}``: the resource's ARN)."""
        with self.lock:
            doc = self._get(resource, name)
            current = doc[resource.status_field]
            if not resource.allows(current, status):
                raise validation((refusal or "{kind} is {status}; it cannot become {new}")
                                 .format(status=current, new=status, kind=resource.__name__,
                                         arn=doc.get(resource.arn_field, "")))
            return self.store.update(resource.kind, name, **{resource.status_field: status},
                                     **changes)

    # ---------------------------------------------------------------- tags
    def _tags(self, arn):
        return (self.store.get("tags", arn) or {"Tags": []})["Tags"]

    def _set_tags(self, arn, tags):
        if tags:
            current = {t["Key"]: t["Value"] for t in self._tags(arn)}
            current.update({t["Key"]: t.get("Value", "") for t in tags})
            if len(current) > MAX_TAGS:
                raise validation(f"A resource can have at most {MAX_TAGS} tags; this request "
                                 f"would give {arn} {len(current)}.")
            self.store.put("tags", arn, {"Tags": [{"Key": k, "Value": v}
                                                  for k, v in current.items()]})

    def add_tags(self, resource_arn, tags):
        self._set_tags(resource_arn, tags)
        return {"Tags": tags}

    def list_tags(self, resource_arn, next_token=None, max_results=None):
        return page(self._tags(resource_arn), "Tags", next_token, max_results)

    def delete_tags(self, resource_arn, tag_keys):
        keep = [t for t in self._tags(resource_arn) if t["Key"] not in set(tag_keys)]
        self.store.put("tags", resource_arn, {"Tags": keep})
        return {}

    # ----------------------------------------------------------- pipelines
    def _definition_text(self, text, location) -> Optional[str]:
        """PipelineDefinition, or the object PipelineDefinitionS3Location names (the way to
        send a definition over the API's 1 MB)."""
        if text and location:
            raise validation("Give PipelineDefinition or PipelineDefinitionS3Location, not both")
        if not location:
            return text
        data = self.s3.get(location["Bucket"], location["ObjectKey"]) if self.s3 else None
        if data is None:
            raise validation(f"PipelineDefinitionS3Location s3://{location['Bucket']}/"
                             f"{location['ObjectKey']} does not exist")
        return data.decode("utf-8", errors="replace")

    @staticmethod
    def _checked_definition(text) -> str:
        """The definition, checked before any lock is taken (a big one takes a while)."""
        if not text:
            raise validation("PipelineDefinition or PipelineDefinitionS3Location is required")
        try:
            definition = json.loads(text)
            check_definition(definition)
        except RecursionError:
            raise validation("Invalid pipeline definition: nested too deeply")
        except DefinitionError as err:
            raise validation(f"Invalid pipeline definition: {err}")
        except ValueError as err:
            raise validation(f"PipelineDefinition is not JSON: {err}")
        return text

    def create_pipeline(self, pipeline_name, role_arn, pipeline_definition=None,
                        pipeline_definition_s3_location=None, pipeline_display_name=None,
                        pipeline_description="", tags=None, parallelism_configuration=None):
        definition = self._checked_definition(self._definition_text(
            pipeline_definition, pipeline_definition_s3_location))
        with self.lock:
            if self.store.get(Pipeline.kind, pipeline_name):
                raise ServiceError("ResourceInUse", f"Pipeline {pipeline_name} already exists.")
            now = time.time()
            arn = Pipeline.arn(self.region, pipeline_name)
            self._put_new(Pipeline, pipeline_name, {
                "PipelineArn": arn, "PipelineName": pipeline_name,
                "PipelineDisplayName": pipeline_display_name or pipeline_name,
                "PipelineDefinition": definition,
                "PipelineDescription": pipeline_description, "RoleArn": role_arn,
                "PipelineStatus": "Active", "CreationTime": now, "LastModifiedTime": now,
                "PipelineVersionId": 1, "ParallelismConfiguration": parallelism_configuration},
                tags)
        return {"PipelineArn": arn}

    def update_pipeline(self, pipeline_name, pipeline_definition=None,
                        pipeline_definition_s3_location=None, role_arn=None,
                        pipeline_description=None, pipeline_display_name=None,
                        parallelism_configuration=None):
        text = self._definition_text(pipeline_definition, pipeline_definition_s3_location)
        checked = None if text is None else self._checked_definition(text)
        with self.lock:
            doc = self._pipeline(pipeline_name)
            if checked is not None:
                doc["PipelineDefinition"] = checked
            doc.update(_given(RoleArn=role_arn, PipelineDescription=pipeline_description,
                              PipelineDisplayName=pipeline_display_name,
                              ParallelismConfiguration=parallelism_configuration))
            doc["LastModifiedTime"] = time.time()
            doc["PipelineVersionId"] = doc.get("PipelineVersionId", 1) + 1
            self.store.put(Pipeline.kind, doc["PipelineName"], doc)
        return {"PipelineArn": doc["PipelineArn"]}

    def _pipeline(self, name_or_arn) -> dict:
        return self._get(Pipeline, name_or_arn.split("/")[-1])

    def describe_pipeline(self, pipeline_name):
        return Pipeline.describe(self._pipeline(pipeline_name))

    def delete_pipeline(self, pipeline_name, client_request_token=None):
        doc = self._pipeline(pipeline_name)
        self.store.delete(Pipeline.kind, doc["PipelineName"])
        return {"PipelineArn": doc["PipelineArn"]}

    def list_pipelines(self, pipeline_name_prefix="", managed_by=None, **query):
        docs = [p for p in self.store.list(Pipeline.kind)
                if p["PipelineName"].startswith(pipeline_name_prefix)
                and managed_by in (None, "CUSTOMER")]  # none here is managed by AWS
        return _list(Pipeline, docs, **query)

    # ---------------------------------------------------------- executions
    def start_pipeline_execution(self, pipeline_name, pipeline_parameters=(),
                                 pipeline_execution_display_name=None,
                                 pipeline_execution_description="", client_request_token=None,
                                 selective_execution_config=None,
                                 parallelism_configuration=None):
        pipeline = self._pipeline(pipeline_name)
        definition = json.loads(pipeline["PipelineDefinition"])
        if selective_execution_config:
            self._check_selection(pipeline, definition, selective_execution_config)
        declared = {p["Name"]: p for p in definition.get("Parameters", [])}
        given = {p["Name"]: p["Value"] for p in pipeline_parameters or ()}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise validation(f"Parameters not declared by the pipeline: {', '.join(unknown)}")
        values = {}
        for name, spec in declared.items():
            raw = given.get(name, spec.get("DefaultValue"))
            if raw is None:
                raise validation(f"Parameter {name} has no value")
            try:
                values[name] = coerce_parameter(spec, raw)
            except ValueError as err:
                raise validation(str(err))
        execution_id = secrets.token_hex(6)
        arn = PipelineExecution.arn_of(pipeline["PipelineArn"], execution_id)
        now = time.time()
        doc = {
            "PipelineArn": pipeline["PipelineArn"], "PipelineExecutionArn": arn,
            "PipelineExecutionDisplayName": pipeline_execution_display_name or execution_id,
            "PipelineExecutionDescription": pipeline_execution_description,
            "PipelineExecutionStatus": "Executing", "CreationTime": now, "LastModifiedTime": now,
            "PipelineDefinition": pipeline["PipelineDefinition"], "Parameters": values,
            "RoleArn": pipeline["RoleArn"],  # the pipeline's parallelism unless overridden
            "ParallelismConfiguration": parallelism_configuration or pipeline.get(
                "ParallelismConfiguration")}
        if selective_execution_config:
            doc["SelectiveExecutionConfig"] = selective_execution_config
        if definition.get("PipelineExperimentConfig"):  # an experiment and a run group, named
            doc["PipelineExperimentConfig"] = Context(doc, {}, {}, None).resolve(
                definition["PipelineExperimentConfig"])
        self.store.put(PipelineExecution.kind, arn, doc)
        self.orchestrator.start(arn)
        return {"PipelineExecutionArn": arn}

    def start_from_event(self, pipeline_name, parameters):
        """An EventBridge target: start the pipeline with the target's parameters."""
        return self.start_pipeline_execution(
            pipeline_name, parameters,
            pipeline_execution_description="started by an EventBridge rule")

    def _check_selection(self, pipeline, definition, config):
        """A selective execution needs a source execution of the same pipeline and steps the
        definition has."""
        source = self.store.get(PipelineExecution.kind, config["SourcePipelineExecutionArn"])
        if source is None or source["PipelineArn"] != pipeline["PipelineArn"]:
            raise validation(f"SourcePipelineExecutionArn {config['SourcePipelineExecutionArn']} "
                             f"is not an execution of pipeline {pipeline['PipelineName']}")
        unknown = sorted({s["StepName"] for s in config["SelectedSteps"]}
                         - set(flatten(definition)))
        if unknown:
            raise validation(f"Selected steps not in the pipeline: {', '.join(unknown)}")

    def _execution(self, arn) -> dict:
        return self._get(PipelineExecution, arn)

    def describe_pipeline_execution(self, pipeline_execution_arn):
        return PipelineExecution.describe(self._execution(pipeline_execution_arn))

    def describe_pipeline_definition_for_execution(self, pipeline_execution_arn):
        doc = self._execution(pipeline_execution_arn)
        return {"PipelineDefinition": doc["PipelineDefinition"],
                "CreationTime": doc["CreationTime"]}

    def list_pipeline_executions(self, pipeline_name, **query):
        pipeline = self._pipeline(pipeline_name)
        docs = [e for e in self.store.list(PipelineExecution.kind)
                if e["PipelineArn"] == pipeline["PipelineArn"]]
        return _list(PipelineExecution, docs, "PipelineExecutionDisplayName", **query)

    def list_pipeline_execution_steps(self, pipeline_execution_arn, sort_order=None,
                                      next_token=None, max_results=None):
        self._execution(pipeline_execution_arn)
        steps = [PipelineExecutionStep.summary(s) for s in self.step_records(
            pipeline_execution_arn)]
        steps.sort(key=lambda s: s["StartTime"], reverse=sort_order != "Ascending")
        return page(steps, "PipelineExecutionSteps", next_token, max_results)

    def list_pipeline_parameters_for_execution(self, pipeline_execution_arn, next_token=None,
                                               max_results=None):
        doc = self._execution(pipeline_execution_arn)
        params = [{"Name": k, "Value": render_value(v)} for k, v in doc["Parameters"].items()]
        return page(params, "PipelineParameters", next_token, max_results)

    def update_pipeline_execution(self, pipeline_execution_arn,
                                  pipeline_execution_description=None,
                                  pipeline_execution_display_name=None,
                                  parallelism_configuration=None):
        """A running execution's new parallelism applies to the steps it starts next."""
        self._execution(pipeline_execution_arn)  # it exists
        self.store.update(PipelineExecution.kind, pipeline_execution_arn, **_given(
            PipelineExecutionDescription=pipeline_execution_description,
            PipelineExecutionDisplayName=pipeline_execution_display_name,
            ParallelismConfiguration=parallelism_configuration), LastModifiedTime=time.time())
        return {"PipelineExecutionArn": pipeline_execution_arn}

    def stop_pipeline_execution(self, pipeline_execution_arn, client_request_token=None):
        arn = pipeline_execution_arn
        self._transition(PipelineExecution, arn, "Stopping", "Execution is {status}, not "
                         "Executing", LastModifiedTime=time.time())
        self.orchestrator.stop(arn)
        return {"PipelineExecutionArn": arn}

    def retry_pipeline_execution(self, pipeline_execution_arn, client_request_token=None,
                                 parallelism_configuration=None):
        arn = pipeline_execution_arn
        changes = {"ParallelismConfiguration": parallelism_configuration} \
            if parallelism_configuration else {}
        self._transition(PipelineExecution, arn, "Executing", "Only a Failed or Stopped "
                         "execution can be retried; this one is {status}", FailureReason=None,
                         LastModifiedTime=time.time(), **changes)
        self.orchestrator.start(arn)
        return {"PipelineExecutionArn": arn}

    # ---------------------------------------------------------------- jobs
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
        with self.lock:
            existing = self.store.get(resource.kind, name)
            if existing is not None:
                raise ServiceError("ResourceInUse", f"{resource.what.capitalize()} names must "
                                   "be unique within an AWS account and region, and a "
                                   f"{resource.what} with this name already exists "
                                   f"({existing[resource.arn_field]})")
            job = self.standalone.start(resource, name, aws_names(operation, members))
            self._set_tags(job[resource.arn_field], tags)
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
        return _list(ProcessingJob, self.store.list(ProcessingJob.kind), **query)

    def list_training_jobs(self, warm_pool_status_equals=None, training_plan_arn_equals=None,
                           **query):
        docs = self.store.list(TrainingJob.kind)
        if warm_pool_status_equals or training_plan_arn_equals:
            docs = []  # no job here keeps a warm pool or runs on a training plan
        return _list(TrainingJob, docs, **query)

    # ------------------------------------------------------------ registry
    def create_model_package_group(self, model_package_group_name,
                                   model_package_group_description="", tags=None):
        name = model_package_group_name
        with self.lock:
            if self.store.get(ModelPackageGroup.kind, name):
                raise validation(f"Model Package Group already exists: {name}")
            arn = ModelPackageGroup.arn(self.region, name)
            self._put_new(ModelPackageGroup, name, {
                "ModelPackageGroupName": name, "ModelPackageGroupArn": arn,
                "ModelPackageGroupDescription": model_package_group_description,
                "CreationTime": time.time(), "ModelPackageGroupStatus": "Completed",
                "CreatedBy": {}}, tags)  # no Studio user profile or domain here
        return {"ModelPackageGroupArn": arn}

    def describe_model_package_group(self, model_package_group_name):
        return ModelPackageGroup.describe(
            self._get(ModelPackageGroup, model_package_group_name.split("/")[-1]))

    def list_model_package_groups(self, cross_account_filter_option=None, **query):
        docs = self.store.list(ModelPackageGroup.kind)
        if cross_account_filter_option == "CrossAccount":
            docs = []  # one account here: no group is shared from another
        return _list(ModelPackageGroup, docs, **query)

    def delete_model_package_group(self, model_package_group_name):
        name = model_package_group_name
        self._get(ModelPackageGroup, name)
        if any(p.get("ModelPackageGroupName") == name
               for p in self.store.list(ModelPackage.kind)):
            raise ServiceError("ConflictException",
                               f"Model package group {name} still has model packages")
        self.store.delete(ModelPackageGroup.kind, name)
        return {}

    def create_model_package(self, model_package_group_name=None, tags=None,
                             client_token=None, **members):
        """A version in a group (ModelPackageGroupName), or an unversioned package
        (ModelPackageName, no approval status: it does not apply to them). Every other member
        is kept as given (in AWS's spelling)."""
        group, name = model_package_group_name, members.pop("model_package_name", None)
        if group and name:
            raise validation("ModelPackageName is for unversioned model packages; a versioned "
                             "one (ModelPackageGroupName) cannot have it")
        if not group and not name:
            raise validation("ModelPackageName is required for an unversioned model package, "
                             "ModelPackageGroupName for a versioned one")
        with self.lock:
            now = time.time()
            doc = aws_names("CreateModelPackage", members)
            if group:
                if self.store.get(ModelPackageGroup.kind, group) is None:
                    raise validation(f"Model Package Group {group} does not exist.")
                version = 1 + sum(1 for p in self.store.list(ModelPackage.kind)
                                  if p.get("ModelPackageGroupName") == group)
                arn = ModelPackage.arn(self.region, f"{group}/{version}")
                doc.update({"ModelPackageGroupName": group, "ModelPackageVersion": version,
                            "ModelPackageName": group,
                            "ModelApprovalStatus": members.get("model_approval_status",
                                                               "PendingManualApproval")})
            else:
                arn = ModelPackage.arn(self.region, name)
                if self.store.get(ModelPackage.kind, arn) is not None:
                    raise validation(f"Model Package {arn} already exists.")
                doc.pop("ModelApprovalStatus", None)
                doc["ModelPackageName"] = name
            doc.update({"ModelPackageArn": arn, "ModelPackageStatus": "Completed",
                        "CreationTime": now, "LastModifiedTime": now,
                        "ModelPackageStatusDetails": {"ValidationStatuses": [],
                                                      "ImageScanStatuses": []}})
            self._put_new(ModelPackage, arn, doc, tags)
        if group:
            self._package_changed(doc)
        return {"ModelPackageArn": arn}

    def _package_changed(self, doc):
        """SageMaker's "Model Package State Change" event, as the registry emits it on AWS (on
        creation and on approval changes), to the EventBridge rules."""
        if self.events is not None:
            self.events.emit("aws.sagemaker", "SageMaker Model Package State Change",
                             [doc["ModelPackageArn"]], ModelPackage.describe(doc))

    def _package(self, ref) -> dict:
        """By ARN, or an unversioned package by its name."""
        if not ref.startswith("arn:"):
            doc = self.store.get(ModelPackage.kind, ModelPackage.arn(self.region, ref))
            if doc is not None and "ModelPackageGroupName" not in doc:
                return doc
        return self._get(ModelPackage, ref)

    def describe_model_package(self, model_package_name):
        return ModelPackage.describe(self._package(model_package_name))

    def list_model_packages(self, model_package_group_name=None, model_approval_status=None,
                            model_package_type=None, **query):
        # AWS's default type is Unversioned, but a group's packages are its versions
        kind = model_package_type or ("Versioned" if model_package_group_name else "Unversioned")
        docs = [p for p in self.store.list(ModelPackage.kind)
                if kind == "Both" or ("ModelPackageGroupName" in p) == (kind == "Versioned")]
        if model_package_group_name:
            docs = [p for p in docs if p.get("ModelPackageGroupName") == model_package_group_name]
        if model_approval_status:
            docs = [p for p in docs if p.get("ModelApprovalStatus") == model_approval_status]
        return _list(ModelPackage, docs, "ModelPackageName", **query)

    def update_model_package(self, model_package_arn, model_approval_status=None,
                             customer_metadata_properties=None,
                             customer_metadata_properties_to_remove=None,
                             additional_inference_specifications_to_add=None, client_token=None,
                             **members):
        """Approval; metadata merged key by key (and keys removed); inference specifications
        added to the existing ones (15 at most, as AWS documents); every other member
        (ApprovalDescription, InferenceSpecification, SourceUri, ...) replaced as given."""
        with self.lock:
            doc = self._package(model_package_arn)
            if model_approval_status and "ModelPackageGroupName" not in doc:
                raise validation("ModelApprovalStatus does not apply to unversioned model "
                                 "packages")
            changed = model_approval_status not in (None, doc.get("ModelApprovalStatus"))
            if model_approval_status is not None:
                doc["ModelApprovalStatus"] = model_approval_status
            if customer_metadata_properties or customer_metadata_properties_to_remove:
                properties = {**doc.get("CustomerMetadataProperties", {}),
                              **(customer_metadata_properties or {})}
                for key in customer_metadata_properties_to_remove or ():
                    properties.pop(key, None)
                doc["CustomerMetadataProperties"] = properties
            if additional_inference_specifications_to_add:
                specs = doc.get("AdditionalInferenceSpecifications", []) + list(
                    additional_inference_specifications_to_add)
                if len(specs) > 15:
                    raise validation("Total number of additional Inference Specifications can "
                                     f"not exceed 15 (this would make {len(specs)}).")
                names = [spec["Name"] for spec in specs]
                if len(set(names)) != len(names):
                    raise validation("Additional Inference Specification names must be unique "
                                     f"within a model package: {names}")
                doc["AdditionalInferenceSpecifications"] = specs
            doc.update(aws_names("UpdateModelPackage", members))
            doc["LastModifiedTime"] = time.time()
            self.store.put(ModelPackage.kind, doc["ModelPackageArn"], doc)
        if changed:
            self._package_changed(doc)
        return {"ModelPackageArn": doc["ModelPackageArn"]}

    def delete_model_package(self, model_package_name):
        doc = self._package(model_package_name)
        self.store.delete(ModelPackage.kind, doc["ModelPackageArn"])
        return {}

    def search(self, resource, **query):
        return search.search(self, resource, **query)

    # ------------------------------------------------------------- hosting
    def create_model(self, model_name, primary_container=None, containers=None,
                     execution_role_arn="", tags=None):
        with self.lock:
            if self.store.get(Model.kind, model_name):
                raise validation("Cannot create already existing model "
                                 f"\"{Model.arn(self.region, model_name)}\".")
            given = containers or ([primary_container] if primary_container else [])
            if not given:
                raise validation("A model needs PrimaryContainer or Containers")
            resolved = [self._resolve_container(c) for c in given]
            arn = Model.arn(self.region, model_name)
            doc = {"ModelName": model_name, "ModelArn": arn, "CreationTime": time.time(),
                   "ExecutionRoleArn": execution_role_arn, "PrimaryContainer": resolved[0]}
            if containers:
                doc["Containers"] = resolved
            self._put_new(Model, model_name, doc, tags)
        return {"ModelArn": arn}

    def _resolve_container(self, container):
        """A container may name a model package; use its image, data and environment."""
        if container.get("ModelPackageName"):
            package = self._package(container["ModelPackageName"])
            spec = package["InferenceSpecification"]["Containers"][0]
            merged = {"Image": spec["Image"], "ModelDataUrl": spec.get("ModelDataUrl"),
                      "Environment": {**spec.get("Environment", {}),
                                      **container.get("Environment", {})},
                      "ModelPackageName": container["ModelPackageName"]}
            return {k: v for k, v in merged.items() if v}
        if not container.get("ModelDataUrl"):
            raise validation("The local service serves models with a ModelDataUrl")
        return container

    def describe_model(self, model_name):
        return Model.describe(self._get(Model, model_name))

    def delete_model(self, model_name):
        self._get(Model, model_name)
        self.store.delete(Model.kind, model_name)
        return {}

    def list_models(self, **query):
        return _list(Model, self.store.list(Model.kind), **query)

    def create_endpoint_config(self, endpoint_config_name, production_variants, tags=None,
                               **members):
        """Every other member (DataCaptureConfig, KmsKeyId, AsyncInferenceConfig...) is kept
        as given and described back, as AWS does."""
        name = endpoint_config_name
        with self.lock:
            if self.store.get(EndpointConfig.kind, name):
                raise validation("Cannot create already existing endpoint configuration "
                                 f"\"{EndpointConfig.arn(self.region, name)}\".")
            for variant in production_variants:
                self._get(Model, variant["ModelName"])
            arn = EndpointConfig.arn(self.region, name)
            self._put_new(EndpointConfig, name, {
                **aws_names("CreateEndpointConfig", members),
                "EndpointConfigName": name, "EndpointConfigArn": arn,
                "ProductionVariants": production_variants, "CreationTime": time.time()}, tags)
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, endpoint_config_name):
        return EndpointConfig.describe(self._get(EndpointConfig, endpoint_config_name))

    def delete_endpoint_config(self, endpoint_config_name):
        self._get(EndpointConfig, endpoint_config_name)
        self.store.delete(EndpointConfig.kind, endpoint_config_name)
        return {}

    def list_endpoint_configs(self, **query):
        return _list(EndpointConfig, self.store.list(EndpointConfig.kind), **query)

    def create_endpoint(self, endpoint_name, endpoint_config_name, tags=None):
        with self.lock:
            if self.store.get(Endpoint.kind, endpoint_name):
                raise validation("Cannot create already existing endpoint "
                                 f"\"{Endpoint.arn(self.region, endpoint_name)}\".")
            self._get(EndpointConfig, endpoint_config_name)
            arn = Endpoint.arn(self.region, endpoint_name)
            now = time.time()
            self._put_new(Endpoint, endpoint_name, {
                "EndpointName": endpoint_name, "EndpointArn": arn,
                "EndpointConfigName": endpoint_config_name, "EndpointStatus": "Creating",
                "CreationTime": now, "LastModifiedTime": now}, tags)
        self.hosting.deploy(endpoint_name, endpoint_config_name)
        return {"EndpointArn": arn}

    def update_endpoint(self, endpoint_name, endpoint_config_name):
        with self.lock:
            self._get(EndpointConfig, endpoint_config_name)
            doc = self._transition(Endpoint, endpoint_name, "Updating",
                                   "Cannot update in-progress endpoint \"{arn}\".",
                                   FailureReason=None, LastModifiedTime=time.time())
        self.hosting.deploy(endpoint_name, endpoint_config_name)
        return {"EndpointArn": doc["EndpointArn"]}

    def update_endpoint_weights_and_capacities(self, endpoint_name,
                                               desired_weights_and_capacities):
        """New weights and instance counts for an InService endpoint's variants, recorded as
        its variants' current ones (one local model server serves the endpoint whatever the
        counts; with several variants the first one answers)."""
        with self.lock:
            doc = self._get(Endpoint, endpoint_name)
            if doc["EndpointStatus"] != "InService":
                raise validation(f"Cannot update in-progress endpoint \"{doc['EndpointArn']}\".")
            variants = {v["VariantName"]: v for v in doc.get("ProductionVariants", [])}
            unknown = [d["VariantName"] for d in desired_weights_and_capacities
                       if d["VariantName"] not in variants]
            if unknown:
                raise validation(f"The variant name(s) {unknown} are not present in endpoint "
                                 f"{endpoint_name}; it has {sorted(variants)}.")
            for desired in desired_weights_and_capacities:
                old = variants[desired["VariantName"]]
                variants[desired["VariantName"]] = _variant_summary(
                    old["VariantName"], desired.get("DesiredWeight", old["CurrentWeight"]),
                    desired.get("DesiredInstanceCount", old["CurrentInstanceCount"]))
            self.store.put(Endpoint.kind, endpoint_name, {
                **doc, "ProductionVariants": list(variants.values()),
                "LastModifiedTime": time.time()})
        return {"EndpointArn": doc["EndpointArn"]}

    def describe_endpoint(self, endpoint_name):
        return Endpoint.describe(self._get(Endpoint, endpoint_name))

    def delete_endpoint(self, endpoint_name):
        self._get(Endpoint, endpoint_name)
        self.hosting.remove(endpoint_name)
        self.store.delete(Endpoint.kind, endpoint_name)
        return {}

    def list_endpoints(self, **query):
        return _list(Endpoint, self.store.list(Endpoint.kind), **query)

    # ============================================== internal verbs: workflow
    def execution_record(self, arn) -> dict:
        """The execution as kept: its definition and parameter values included."""
        return self._execution(arn)

    def step_records(self, execution_arn) -> List[dict]:
        """The execution's steps as kept: their properties included."""
        return self.store.list(PipelineExecutionStep.kind,
                               prefix=PipelineExecutionStep.key(execution_arn, ""))

    def sibling_executions(self, execution_arn) -> List[str]:
        """The other executions of the same pipeline (where a cached step looks)."""
        pipeline = self._execution(execution_arn)["PipelineArn"]
        return [e["PipelineExecutionArn"] for e in self.store.list(PipelineExecution.kind)
                if e["PipelineArn"] == pipeline and e["PipelineExecutionArn"] != execution_arn]

    def step_started(self, execution_arn, spec: dict, attempt: int) -> str:
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
        changes = dict(_given(Properties=properties, Metadata=metadata, CacheKey=cache_key,
                              CacheHitResult=cache_hit, SelectiveExecutionResult=selective_result),
                       EndTime=time.time(), FailureReason=reason)
        with self.lock:
            doc = self.store.get(PipelineExecutionStep.kind, key)
            if not PipelineExecutionStep.allows(doc["StepStatus"], status):  # a bug if so
                raise ValueError(f"step {key} cannot go from {doc['StepStatus']} to {status}")
            self.store.update(PipelineExecutionStep.kind, key, StepStatus=status, **changes)

    def execution_ended(self, arn: str, status: str, reason: Optional[str] = None):
        self._transition(PipelineExecution, arn, status, FailureReason=reason,
                         LastModifiedTime=time.time())

    def job_started(self, resource, name: str, request: dict, **fields) -> dict:
        """Record a job InProgress; its describe shape is the request plus its status."""
        arn = resource.arn(self.region, name)
        now = time.time()
        doc = dict(request, **{resource.name_field: name, resource.arn_field: arn,
                               resource.status_field: "InProgress"},
                   CreationTime=now, LastModifiedTime=now, **fields)
        self.store.put(resource.kind, name, doc)
        return doc

    def job_progress(self, resource, name: str, **changes):
        self.store.update(resource.kind, name, LastModifiedTime=time.time(), **changes)

    def job_ended(self, resource, name: str, status: str, **changes) -> dict:
        doc = self._transition(resource, name, status, LastModifiedTime=time.time(), **changes)
        return resource.describe(doc)

    def register_model(self, request: dict) -> dict:
        """A RegisterModel step: its arguments are a CreateModelPackage request."""
        constraints.check(request, SERVICE_MODEL.operation_model("CreateModelPackage").input_shape)
        group = request.get("ModelPackageGroupName")
        with self.lock:  # as Pipelines does: the step creates its group when there is none
            if group and self.store.get(ModelPackageGroup.kind, group) is None:
                self.create_model_package_group(group)
        arn = self.create_model_package(**as_kwargs(request))["ModelPackageArn"]
        return self.describe_model_package(arn)

    def create_model_from_step(self, request: dict) -> dict:
        """A Model step: its arguments are a CreateModel request."""
        constraints.check(request, SERVICE_MODEL.operation_model("CreateModel").input_shape)
        self.create_model(**as_kwargs(request))
        return self.describe_model(request["ModelName"])

    def recover_interrupted(self):
        """After a restart: what was running was interrupted; it can be retried."""
        now = time.time()
        for step in self.store.list(PipelineExecutionStep.kind):
            if step["StepStatus"] in ("Starting", "Executing", "Stopping"):
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

    # =============================================== internal verbs: hosting
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
        changes = {}
        if config is not None:
            changes["ProductionVariants"] = [
                _variant_summary(v["VariantName"], v.get("InitialVariantWeight", 1.0),
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

