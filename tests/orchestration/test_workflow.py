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


def test_cache_expiry_reads_iso_8601_and_aws_short_durations():
    from pipeline.local.workflow.cache import expire_seconds
    assert expire_seconds("P30D") == 30 * 86400
    assert expire_seconds("PT1H") == 3600
    assert expire_seconds("T16m") == 16 * 60
    assert (expire_seconds("P1M"), expire_seconds("PT1M")) == (30 * 86400, 60)  # month, minute
    assert expire_seconds("30dT5h") == 30 * 86400 + 5 * 3600
    assert expire_seconds(None) == float("inf")
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        expire_seconds("soon")


def test_a_cached_step_reuses_only_a_matching_run_inside_expire_after():
    """The newest Succeeded run with the same key, ended no longer ago than ExpireAfter; not
    one just outside it, not a failed one, not another key."""
    import time

    from pipeline.local.workflow.cache import find_hit

    now = time.time()
    runs = {"old": {"StepName": "Train", "StepStatus": "Succeeded", "CacheKey": "k",
                    "EndTime": now - 3600 - 5},  # 5 s outside PT1H
            "inside": {"StepName": "Train", "StepStatus": "Succeeded", "CacheKey": "k",
                       "EndTime": now - 3600 + 5},
            "newer-failed": {"StepName": "Train", "StepStatus": "Failed", "CacheKey": "k",
                             "EndTime": now - 10},
            "newer-other": {"StepName": "Train", "StepStatus": "Succeeded", "CacheKey": "x",
                            "EndTime": now - 10}}

    class Backend:
        def sibling_executions(self, arn):
            return list(runs)

        def step_records(self, execution):
            return [runs[execution]]

    spec = {"Name": "Train", "CacheConfig": {"Enabled": True, "ExpireAfter": "PT1H"}}
    assert find_hit(Backend(), "this", spec, "k") is runs["inside"]
    del runs["inside"]
    assert find_hit(Backend(), "this", spec, "k") is None


@pytest.mark.parametrize("operator, value, expected", [
    ("GreaterThan", "0.5", False), ("GreaterThanOrEqualTo", "0.5", True),
    ("LessThan", "0.5", False), ("LessThanOrEqualTo", "0.5", True),
    ("Equals", "0.5", True), ("NotEquals", "0.5", False), ("GreaterThan", "0.49", True),
    ("Contains", "AB", True), ("In", "x, 0.5", True)])
def test_search_filters_compare_at_their_boundaries(operator, value, expected):
    from pipeline.local.search import _passes
    record = {"Metric": {"Value": 0.5, "Name": "xab"}}
    name = "Metric.Name" if operator == "Contains" else "Metric.Value"
    assert _passes(record, {"Name": name, "Operator": operator, "Value": value}) is expected
