"""The definition language as the local workflow understands it (no jobs run here)."""
import json

import pytest

from pipeline.local.s3 import LocalS3
from pipeline.local.workflow.expressions import Context, PropertyFileRef, StepFailed, json_path
from pipeline.local.workflow.graph import DefinitionError, check_definition, coerce_parameter


@pytest.fixture
def ctx(tmp_path):
    s3 = LocalS3(str(tmp_path))
    s3.create_bucket("bkt")
    s3.put("bkt", "eval/evaluation.json", json.dumps(
        {"metrics": {"accuracy": {"value": 0.98}, "list": [1, {"x": "y"}]}}).encode())
    execution = {"PipelineExecutionArn": "arn:aws:sagemaker:r:0:pipeline/p/execution/abc123",
                 "PipelineArn": "arn:aws:sagemaker:r:0:pipeline/p", "CreationTime": 0.0,
                 "Parameters": {"Threshold": 0.97, "Name": "mnist", "Keep": True, "Count": 2}}
    specs = {"Eval": {"PropertyFiles": [{"PropertyFileName": "Evaluation",
                                         "OutputName": "evaluation",
                                         "FilePath": "evaluation.json"}]}}
    properties = {"Eval": {"ProcessingOutputConfig": {"Outputs": [
        {"OutputName": "other", "S3Output": {"S3Uri": "s3://bkt/other"}},
        {"OutputName": "evaluation", "S3Output": {"S3Uri": "s3://bkt/eval"}}]}},
        "Register-RegisterModel": {"ModelPackageArn": "arn:pkg/1"}}

    def read_json(uri):
        with open(s3.path_of(uri)) as handle:
            return json.load(handle)

    return Context(execution, specs, properties, read_json)


ACCURACY = {"Std:JsonGet": {"Path": "metrics.accuracy.value",
                            "PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Evaluation"}}}


def test_get_parameters_execution_and_step_properties(ctx):
    assert ctx.resolve({"Get": "Parameters.Threshold"}) == 0.97
    assert ctx.resolve({"Get": "Execution.PipelineExecutionId"}) == "abc123"
    assert ctx.resolve({"Get": "Steps.Eval.ProcessingOutputConfig.Outputs['evaluation']"
                               ".S3Output.S3Uri"}) == "s3://bkt/eval"
    assert ctx.resolve({"Get": "Steps.Eval.ProcessingOutputConfig.Outputs[0].OutputName"}) == \
        "other"
    assert ctx.resolve({"Get": "Steps.Register-RegisterModel.ModelPackageArn"}) == "arn:pkg/1"
    assert isinstance(ctx.resolve({"Get": "Steps.Eval.PropertyFiles.Evaluation"}),
                      PropertyFileRef)
    with pytest.raises(StepFailed, match="unknown parameter"):
        ctx.resolve({"Get": "Parameters.Nope"})
    with pytest.raises(StepFailed, match="not found"):
        ctx.resolve({"Get": "Steps.Eval.ProcessingOutputConfig.Outputs['missing'].S3Output"})


def test_join_renders_values_like_the_service(ctx):
    joined = ctx.resolve({"Std:Join": {"On": "/", "Values": [
        "s3://bkt", {"Get": "Execution.PipelineExecutionId"}, {"Get": "Parameters.Keep"},
        {"Get": "Parameters.Count"}, ACCURACY]}})
    assert joined == "s3://bkt/abc123/true/2/0.98"


def test_json_get_reads_the_property_file(ctx):
    assert ctx.resolve(ACCURACY) == 0.98
    assert ctx.resolve({"Std:JsonGet": {"S3Uri": "s3://bkt/eval/evaluation.json",
                                        "Path": "metrics.list[1].x"}}) == "y"
    with pytest.raises(StepFailed, match="not found in the property file"):
        ctx.resolve({"Std:JsonGet": {"S3Uri": "s3://bkt/eval/evaluation.json", "Path": "a.b"}})
    with pytest.raises(StepFailed, match="cannot read"):
        ctx.resolve({"Std:JsonGet": {"S3Uri": "s3://bkt/missing.json", "Path": "a"}})


@pytest.mark.parametrize("kind,left,right,expected", [
    ("GreaterThanOrEqualTo", ACCURACY, {"Get": "Parameters.Threshold"}, True),
    ("GreaterThanOrEqualTo", ACCURACY, 0.99, False),
    ("GreaterThan", 0.98, 0.98, False),
    ("GreaterThanOrEqualTo", 0.98, 0.98, True),  # the gate passes exactly at the threshold
    ("LessThan", 1, 2, True),
    ("LessThanOrEqualTo", 2, 2, True),
    ("Equals", {"Get": "Parameters.Name"}, "mnist", True),
    ("Equals", {"Get": "Parameters.Count"}, 2.0, True),
    ("NotEquals", {"Get": "Parameters.Name"}, "mnist", False),
])
def test_binary_conditions(ctx, kind, left, right, expected):
    assert ctx.condition({"Type": kind, "LeftValue": left, "RightValue": right}) is expected


def test_in_not_and_or_conditions(ctx):
    is_mnist = {"Type": "In", "QueryValue": {"Get": "Parameters.Name"},
                "Values": ["fashion", "mnist"]}
    too_low = {"Type": "LessThan", "LeftValue": ACCURACY, "RightValue": 0.5}
    assert ctx.condition(is_mnist)
    assert not ctx.condition({"Type": "Not", "Expression": is_mnist})
    assert ctx.condition({"Type": "Or", "Conditions": [too_low, is_mnist]})
    assert not ctx.condition({"Type": "Or", "Conditions": [too_low]})
    with pytest.raises(StepFailed, match="needs numbers"):
        ctx.condition({"Type": "GreaterThan", "LeftValue": "abc", "RightValue": 1})


def test_definition_checks():
    ok = {"Steps": [{"Name": "A", "Type": "Fail", "Arguments": {}},
                    {"Name": "B", "Type": "Fail", "DependsOn": ["A"], "Arguments": {}}]}
    assert check_definition(ok) == ["A", "B"]
    for bad, message in [
        ({"Steps": [{"Name": "A", "Type": "Lambda", "Arguments": {}}]}, "has type 'Lambda'"),
        ({"Steps": [{"Name": "A", "Type": "Fail", "DependsOn": ["Z"]}]}, "unknown step"),
        ({"Steps": [{"Name": "A", "Type": "Fail"}, {"Name": "A", "Type": "Fail"}]}, "twice"),
        ({"Steps": [{"Name": "A", "Type": "Fail", "Arguments": {
            "ErrorMessage": {"Get": "Steps.A.X"}}}]}, "itself"),
        ({"Parameters": [{"Name": "P", "Type": "Complex"}], "Steps": []}, "unknown type"),
    ]:
        with pytest.raises(DefinitionError, match=message):
            check_definition(bad)


def test_parameter_coercion():
    assert coerce_parameter({"Name": "E", "Type": "Integer"}, "20") == 20
    assert coerce_parameter({"Name": "K", "Type": "Boolean"}, "False") is False
    assert coerce_parameter({"Name": "T", "Type": "Float"}, "0.5") == 0.5
    with pytest.raises(ValueError, match="Parameter E of type Integer cannot take"):
        coerce_parameter({"Name": "E", "Type": "Integer"}, "many")


def test_json_path_indexes():
    assert json_path({"a": [{"b": 1}, {"b": 2}]}, "a[1].b") == 2
    assert json_path({"a": {"b": 3}}, "$.a.b") == 3
