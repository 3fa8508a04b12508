"""Validate a definition against AWS's published pipeline-definition JSON schema.

The published schema (``schemas/pipeline-definition.schema.json``, kept unchanged) lags behind
what SageMaker Pipelines accepts and the SDK emits. We validate against it with a short, explicit
list of extensions, each one a documented SageMaker feature; everything else is validated as
published. ``SCHEMA_EXTENSIONS`` is the list the README refers to.
"""
import copy
import json
import os
from typing import List

import jsonschema

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "schemas", "pipeline-definition.schema.json")

_JOIN = {
    "type": "object", "additionalProperties": False, "required": ["Std:Join"],
    "properties": {"Std:Join": {
        "type": "object", "additionalProperties": False, "required": ["On", "Values"],
        "properties": {"On": {"type": "string"},
                       "Values": {"type": "array", "items": {"$ref": "#/definitions/AnyValue"}}},
    }},
}
_JSON_GET = {
    "type": "object", "additionalProperties": False, "required": ["Std:JsonGet"],
    "properties": {"Std:JsonGet": {
        "type": "object", "additionalProperties": False, "required": ["Path", "PropertyFile"],
        "properties": {"Path": {"type": "string"},
                       "PropertyFile": {"$ref": "#/definitions/GetFunction"}},
    }},
}
_PROPERTY_FILES = {"type": "array", "items": {
    "type": "object", "additionalProperties": False,
    "required": ["PropertyFileName", "OutputName", "FilePath"],
    "properties": {"PropertyFileName": {"type": "string"}, "OutputName": {"type": "string"},
                   "FilePath": {"type": "string"}},
}}

# (what, why) for the README; the code below applies them in the same order.
SCHEMA_EXTENSIONS = [
    ("Std:Join (with On) and Std:JsonGet wherever a Get is allowed",
     "pipeline functions; the schema's JoinFunction lacks On and is referenced nowhere"),
    ("PropertyFiles on Processing steps", "how JsonGet finds evaluation.json"),
    ("AppManaged on processing inputs and outputs",
     "CreateProcessingJob field the SDK always sets"),
    ("S3DataDistributionType on training S3DataSource", "CreateTrainingJob field the SDK sets"),
    ("ProfilerConfig on Training steps", "CreateTrainingJob field; we send DisableProfiler=true"),
    ("ModelApprovalStatus and SkipModelValidation on RegisterModel, Environment on its containers",
     "CreateModelPackage fields; Environment carries SAGEMAKER_PROGRAM for the MXNet container"),
    ("CustomerMetadataProperties on RegisterModel",
     "CreateModelPackage field: the package's lineage (execution, training job, data and code "
     "digests, final metrics) for reviewers"),
    ("Condition steps inside a condition's IfSteps / ElseSteps",
     "nested conditions (the SDK emits them): CheckApproval runs inside the accuracy gate"),
    ("Tuning steps: pipeline parameters for Strategy (any of CreateHyperParameterTuningJob's "
     "strategies) and for ResourceLimits' MaxNumberOfTrainingJobs and MaxParallelTrainingJobs",
     "the tuned variant's TuningStrategy, TuningMaxJobs and TuningMaxParallelJobs: the SDK "
     "emits a Get there; the schema takes literals, and only Bayesian or Random"),
    ("HyperParameterTuningResourceConfig in a Tuning step's TrainingJobDefinition, in place of "
     "ResourceConfig",
     "the CreateHyperParameterTuningJob field the SDK sends the training hosts in"),
    ("PipelineExperimentConfig (ExperimentName, TrialName) at the top level",
     "SageMaker Experiments integration, on by default in Pipelines and emitted by the SDK: an "
     "experiment per pipeline and a run group per execution, which Studio compares"),
]


def _tuning(defs):
    tuning = defs["TuningStep"]["properties"]["Arguments"]["properties"][
        "HyperParameterTuningJobConfig"]["properties"]
    tuning["Strategy"] = {"$ref": "#/definitions/StringArgumentValue"}
    for limit in ("MaxNumberOfTrainingJobs", "MaxParallelTrainingJobs"):
        tuning["ResourceLimits"]["properties"][limit] = {
            "$ref": "#/definitions/IntegerArgumentValue"}
    definition = defs["HyperParameterTrainingJobDefinition"]
    definition["properties"]["HyperParameterTuningResourceConfig"] = definition["properties"][
        "ResourceConfig"]
    definition["required"] = [r for r in definition["required"] if r != "ResourceConfig"]


def extended_schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        schema = json.load(handle)
    schema = copy.deepcopy(schema)
    defs = schema["definitions"]
    defs["JoinFunction"] = _JOIN
    defs["JsonGetFunction"] = _JSON_GET
    defs["AnyValue"] = {"oneOf": [{"type": ["string", "number", "boolean"]},
                                  {"$ref": "#/definitions/GetFunction"},
                                  {"$ref": "#/definitions/JoinFunction"},
                                  {"$ref": "#/definitions/JsonGetFunction"}]}
    for kind in ("String", "Integer", "Float", "Boolean"):
        defs[f"{kind}ArgumentValue"]["oneOf"] += [{"$ref": "#/definitions/JoinFunction"},
                                                  {"$ref": "#/definitions/JsonGetFunction"}]
    defs["ProcessingStep"]["properties"]["PropertyFiles"] = _PROPERTY_FILES
    processing = defs["ProcessingArgs"]["properties"]
    processing["ProcessingInputs"]["items"]["properties"]["AppManaged"] = {"type": "boolean"}
    processing["ProcessingOutputConfig"]["properties"]["Outputs"]["items"]["properties"][
        "AppManaged"] = {"type": "boolean"}
    training = defs["TrainingStep"]["properties"]["Arguments"]["properties"]
    s3_source = training["InputDataConfig"]["items"]["properties"]["DataSource"]["properties"][
        "S3DataSource"]["properties"]
    s3_source["S3DataDistributionType"] = {"$ref": "#/definitions/StringArgumentValue"}
    training["ProfilerConfig"] = {"type": "object", "additionalProperties": False, "properties": {
        "DisableProfiler": {"$ref": "#/definitions/BooleanArgumentValue"},
        "S3OutputPath": {"$ref": "#/definitions/StringArgumentValue"},
        "ProfilingIntervalInMilliseconds": {"$ref": "#/definitions/IntegerArgumentValue"}}}
    register = defs["RegisterModelStep"]["properties"]["Arguments"]["properties"]
    register["ModelApprovalStatus"] = {"$ref": "#/definitions/StringArgumentValue"}
    register["SkipModelValidation"] = {"$ref": "#/definitions/StringArgumentValue"}
    register["InferenceSpecification"]["properties"]["Containers"]["items"]["properties"][
        "Environment"] = {"type": "object",
                          "additionalProperties": {"$ref": "#/definitions/StringArgumentValue"}}
    register["CustomerMetadataProperties"] = {
        "type": "object", "additionalProperties": {"$ref": "#/definitions/StringArgumentValue"}}
    _tuning(defs)
    for branch in ("IfSteps", "ElseSteps"):
        defs["ConditionStep"]["properties"]["Arguments"]["properties"][branch]["items"][
            "oneOf"].append({"$ref": "#/definitions/ConditionStep"})
    schema["properties"]["PipelineExperimentConfig"] = {
        "type": "object", "additionalProperties": False,
        "required": ["ExperimentName", "TrialName"],
        "properties": {"ExperimentName": {"$ref": "#/definitions/StringArgumentValue"},
                       "TrialName": {"$ref": "#/definitions/StringArgumentValue"}}}
    return schema


def _leaf_errors(errors):
    for error in errors:
        if error.context:
            yield from _leaf_errors(error.context)
        else:
            yield error


def validate(definition: dict) -> List[str]:
    """Return the problems found (empty when valid), as 'path: message' lines."""
    schema = extended_schema()
    validator = jsonschema.Draft7Validator(schema)
    problems = []
    for error in validator.iter_errors(definition):
        # A step is a oneOf over step types: report only the branch of its own Type.
        step_type = error.instance.get("Type") if isinstance(error.instance, dict) else None
        if step_type and error.validator == "oneOf":
            sub = jsonschema.Draft7Validator(
                {**schema, "$ref": f"#/definitions/{step_type}Step"})
            for leaf in _leaf_errors(sub.iter_errors(error.instance)):
                problems.append(f"{error.json_path}{leaf.json_path[1:]}: {leaf.message}")
            if not problems:
                problems.append(f"{error.json_path}: {error.message[:200]}")
        else:
            problems.append(f"{error.json_path}: {error.message[:200]}")
    return problems
