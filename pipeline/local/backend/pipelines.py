"""Pipelines and their executions: CreatePipeline ... RetryPipelineExecution. Executions run
on the ``orchestrator``; a definition may come from the local S3."""
import json
import secrets
import time
from typing import Optional

from pipeline.config import render_value
from pipeline.local.backend.common import Family, given
from pipeline.local.backend.listing import list_answer
from pipeline.local.errors import ServiceError, validation
from pipeline.local.paging import page
from pipeline.local.resources import Pipeline, PipelineExecution, PipelineExecutionStep
from pipeline.local.workflow.expressions import Context
from pipeline.local.workflow.graph import (DefinitionError, check_definition, coerce_parameter,
                                           flatten)


def checked_definition(text) -> str:
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


def parameter_values(definition: dict, pipeline_parameters) -> dict:
    """Every declared parameter's value: given, else its default, as its declared type."""
    declared = {p["Name"]: p for p in definition.get("Parameters", [])}
    given_values = {p["Name"]: p["Value"] for p in pipeline_parameters or ()}
    unknown = sorted(set(given_values) - set(declared))
    if unknown:
        raise validation(f"Parameters not declared by the pipeline: {', '.join(unknown)}")
    values = {}
    for name, spec in declared.items():
        raw = given_values.get(name, spec.get("DefaultValue"))
        if raw is None:
            raise validation(f"Parameter {name} has no value")
        try:
            values[name] = coerce_parameter(spec, raw)
        except ValueError as err:
            raise validation(str(err))
    return values


class PipelinesApi(Family):
    def __init__(self, store, region, tags, records, orchestrator, s3):
        super().__init__(store, region, tags)
        self.records, self.orchestrator, self.s3 = records, orchestrator, s3

    # ----------------------------------------------------------- pipelines
    def _definition_text(self, text, location) -> Optional[str]:
        """PipelineDefinition, or the object PipelineDefinitionS3Location names (the way to
        send a definition over the API's 1 MB)."""
        if text and location:
            raise validation("Give PipelineDefinition or PipelineDefinitionS3Location, not both")
        if not location:
            return text
        data = self.s3.get(location["Bucket"], location["ObjectKey"])
        if data is None:
            raise validation(f"PipelineDefinitionS3Location s3://{location['Bucket']}/"
                             f"{location['ObjectKey']} does not exist")
        return data.decode("utf-8", errors="replace")

    def create_pipeline(self, pipeline_name, role_arn, pipeline_definition=None,
                        pipeline_definition_s3_location=None, pipeline_display_name=None,
                        pipeline_description="", tags=None, parallelism_configuration=None):
        definition = checked_definition(self._definition_text(
            pipeline_definition, pipeline_definition_s3_location))
        now = time.time()
        arn = Pipeline.arn(self.region, pipeline_name)
        self._create(Pipeline, pipeline_name, {
            "PipelineArn": arn, "PipelineName": pipeline_name,
            "PipelineDisplayName": pipeline_display_name or pipeline_name,
            "PipelineDefinition": definition,
            "PipelineDescription": pipeline_description, "RoleArn": role_arn,
            "PipelineStatus": "Active", "CreationTime": now, "LastModifiedTime": now,
            "PipelineVersionId": 1, "ParallelismConfiguration": parallelism_configuration},
            ServiceError("ResourceInUse", f"Pipeline {pipeline_name} already exists."), tags)
        return {"PipelineArn": arn}

    def update_pipeline(self, pipeline_name, pipeline_definition=None,
                        pipeline_definition_s3_location=None, role_arn=None,
                        pipeline_description=None, pipeline_display_name=None,
                        parallelism_configuration=None):
        text = self._definition_text(pipeline_definition, pipeline_definition_s3_location)
        checked = None if text is None else checked_definition(text)
        with self.store.lock:
            doc = self._pipeline(pipeline_name)
            if checked is not None:
                doc["PipelineDefinition"] = checked
            doc.update(given(RoleArn=role_arn, PipelineDescription=pipeline_description,
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
        doc = self._delete(Pipeline, pipeline_name.split("/")[-1])
        return {"PipelineArn": doc["PipelineArn"]}

    def list_pipelines(self, pipeline_name_prefix="", managed_by=None, **query):
        docs = [p for p in self.store.list(Pipeline.kind)
                if p["PipelineName"].startswith(pipeline_name_prefix)
                and managed_by in (None, "CUSTOMER")]  # none here is managed by AWS
        return list_answer(Pipeline, docs, **query)

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
        values = parameter_values(definition, pipeline_parameters)
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
        self._create(PipelineExecution, arn, doc, ServiceError(
            "ResourceInUse", f"Pipeline execution {arn} already exists."))
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
        return list_answer(PipelineExecution, docs, "PipelineExecutionDisplayName", **query)

    def list_pipeline_execution_steps(self, pipeline_execution_arn, sort_order=None,
                                      next_token=None, max_results=None):
        self._execution(pipeline_execution_arn)
        steps = [PipelineExecutionStep.summary(s) for s in self.records.step_records(
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
        with self.store.lock:
            self._execution(pipeline_execution_arn)  # it exists
            self.store.update(PipelineExecution.kind, pipeline_execution_arn, **given(
                PipelineExecutionDescription=pipeline_execution_description,
                PipelineExecutionDisplayName=pipeline_execution_display_name,
                ParallelismConfiguration=parallelism_configuration),
                LastModifiedTime=time.time())
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
