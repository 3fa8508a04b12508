"""Strangers' input that once got a 500 now gets a 4xx with a reason: tokens that are not
ours, nesting past any real request's, definitions Pipelines would refuse."""
import json
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from servicehelpers import ROLE


def _call(service, target, body: bytes):
    """(HTTP status, error type) of one JSON API call sent as is."""
    request = urllib.request.Request(service.url + "/", data=body, method="POST", headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, ""
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()).get("__type", "")


@pytest.mark.parametrize("operation", ["ListModels", "ListEndpoints", "ListPipelines",
                                       "ListTrainingJobs", "ListModelPackageGroups",
                                       "ListEndpointConfigs", "ListProcessingJobs"])
@pytest.mark.parametrize("token", ["²", "١", "12a", "-1", "99999999999"])
def test_a_token_we_never_gave_is_refused_on_every_listing(service, operation, token):
    assert _call(service, f"SageMaker.{operation}", json.dumps({"NextToken": token}).encode()) \
        == (400, "ValidationException")


def test_search_and_logs_refuse_foreign_tokens_too(service):
    assert _call(service, "SageMaker.Search", json.dumps(
        {"Resource": "TrainingJob", "NextToken": "²"}).encode()) == (400, "ValidationException")
    logs = service.client("logs")
    logs_group = "/aws/sagemaker/TrainingJobs"
    for token in ("f/²", "b/²", "x/1", "f/"):
        with pytest.raises(ClientError) as err:
            logs.get_log_events(logGroupName=logs_group, logStreamName="none/algo-1",
                                nextToken=token)
        assert err.value.response["Error"]["Code"] in ("InvalidParameterException",
                                                       "ResourceNotFoundException")
    for token in ("²", "1.5"):
        with pytest.raises(ClientError) as err:
            logs.filter_log_events(logGroupName=logs_group, nextToken=token)
        assert err.value.response["Error"]["Code"] in ("InvalidParameterException",
                                                       "ResourceNotFoundException")


def test_nesting_past_any_real_request_is_a_400(service):
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _call(service, "SageMaker.ListModels", deep) == (400, "SerializationException")
    def nested(depth):  # MaxResults inside `depth` levels of objects
        return ('{"a": ' * (depth - 1) + '{"MaxResults": 1}' + "}" * (depth - 1)).encode()

    assert _call(service, "SageMaker.ListModels", nested(65)) == (400, "SerializationException")
    # the limit itself passes the nesting check (then botocore's model refuses member "a")
    assert _call(service, "SageMaker.ListModels", nested(64)) == (400, "ValidationException")
    expression: dict = {"Filters": [{"Name": "TrainingJobName", "Operator": "Exists"}]}
    for _ in range(20):  # 21 elements in all: one past the documented twenty
        expression = {"SubExpressions": [expression]}
    assert _call(service, "SageMaker.Search", json.dumps(
        {"Resource": "TrainingJob", "SearchExpression": expression}).encode()) == (
        400, "ValidationException")
    expression = {"Filters": [{"Name": "TrainingJobName", "Operator": "Exists"}]}
    for _ in range(19):  # 20 elements in all: taken
        expression = {"SubExpressions": [expression]}
    assert _call(service, "SageMaker.Search", json.dumps(
        {"Resource": "TrainingJob", "SearchExpression": expression}).encode())[0] == 200
    events = service.client("events")
    with pytest.raises(ClientError) as err:
        events.put_rule(Name="deep", EventPattern="[" * 2000 + "]" * 2000)
    assert err.value.response["Error"]["Code"] == "InvalidEventPatternException"


def _step(**changes):
    step = {"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "no"}}
    step.update(changes)
    return step


@pytest.mark.parametrize("steps, reason", [
    ([_step(Name=["a"])], "step Name ['a'] must be 1 to 64"),
    ([_step(Name=5)], "step Name 5 must be 1 to 64"),
    ([_step(Name="has space")], "must be 1 to 64 letters"),
    ([_step(Name="x" * 65)], "must be 1 to 64 letters"),
    ([_step(Name="A"), _step(Name="B"), _step(Name="AB", DependsOn="AB")],
     "DependsOn must be a list of step names"),
    ([_step(Arguments={"ErrorMessage": {"Get": "Steps.A" + ".x" * 50_000}})],
     "a Get path may have at most 64 segments"),
    ([_step(Arguments={"ErrorMessage": {"Get": "Steps.A" + ".x" * 63}})],
     "a Get path may have at most 64 segments"),  # 65 segments: one past the limit
    ([_step(Arguments={"ErrorMessage": {"Std:JsonGet": {
        "PropertyFile": {"Get": "Steps.A.PropertyFiles.f"}, "Path": "a." * 100_000}}})],
     "a JsonGet Path may have at most 1024 characters"),
    (["not a step"], "a step is an object"),
])
def test_definitions_pipelines_would_refuse_are_refused_at_create(service, steps, reason):
    sm = service.client("sagemaker")
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="refused", RoleArn=ROLE, PipelineDefinition=json.dumps(
            {"Version": "2020-12-01", "Steps": steps}))
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert reason in err.value.response["Error"]["Message"]


@pytest.mark.parametrize("rate", ["Infinity", "NaN", "-Infinity"])
def test_a_backoff_rate_that_is_no_finite_number_is_refused(service, rate):
    training = {"Name": "T", "Type": "Processing", "Arguments": {
        "AppSpecification": {"ImageUri": "i"}, "ProcessingResources": {}}, "RetryPolicies": [{
            "ExceptionType": ["Step.SERVICE_FAULT"], "MaxAttempts": 2, "BackoffRate": 1}]}
    text = json.dumps({"Version": "2020-12-01", "Steps": [training]}).replace(
        '"BackoffRate": 1', f'"BackoffRate": {rate}')
    with pytest.raises(ClientError) as err:
        service.client("sagemaker").create_pipeline(PipelineName="rates", RoleArn=ROLE,
                                                    PipelineDefinition=text)
    assert "BackoffRate must be a finite number >= 0" in err.value.response["Error"]["Message"]


def test_a_huge_backoff_rate_waits_no_longer_than_any_interval():
    from pipeline.local.workflow.retry import MAX_INTERVAL_SECONDS, RetryState

    state = RetryState({"RetryPolicies": [{"ExceptionType": ["Step.SERVICE_FAULT"],
                                           "MaxAttempts": 5, "BackoffRate": 1e308,
                                           "IntervalSeconds": 10}]}, clock=lambda: 0.0)
    waits = [state.delay("Step.SERVICE_FAULT") for _ in range(4)]
    assert waits == [10, MAX_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS]


def test_members_given_are_kept_or_refused_never_dropped(service):
    sm = service.client("sagemaker")
    vpc = {"SecurityGroupIds": ["sg-12345678"], "Subnets": ["subnet-12345678"]}
    sm.create_model(ModelName="kept", ExecutionRoleArn=ROLE, VpcConfig=vpc,
                    EnableNetworkIsolation=True,
                    PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"})
    described = sm.describe_model(ModelName="kept")
    assert described["VpcConfig"] == vpc and described["EnableNetworkIsolation"] is True
    with pytest.raises(ClientError) as err:
        sm.create_model(ModelName="direct", ExecutionRoleArn=ROLE,
                        InferenceExecutionConfig={"Mode": "Direct"},
                        PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"})
    assert "Mode Direct" in err.value.response["Error"]["Message"]
    sm.create_endpoint_config(EndpointConfigName="kept", ProductionVariants=[{
        "VariantName": "v", "ModelName": "kept", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    rolling = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
        "Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}}}
    for call in (lambda: sm.create_endpoint(EndpointName="kept", EndpointConfigName="kept",
                                            DeploymentConfig=rolling),
                 lambda: sm.update_endpoint(EndpointName="kept", EndpointConfigName="kept",
                                            DeploymentConfig=rolling)):
        with pytest.raises(ClientError) as err:
            call()
        assert "DeploymentConfig is not applied by the local service" in \
            err.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        sm.describe_endpoint(EndpointName="kept")  # nothing was created


def test_the_last_page_carries_no_token_and_a_token_past_the_end_is_refused(service):
    sm = service.client("sagemaker")
    for name in ("paged-a", "paged-b", "paged-c"):
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"})
    first = sm.list_models(NameContains="paged-", MaxResults=2, SortBy="Name",
                           SortOrder="Ascending")
    assert [m["ModelName"] for m in first["Models"]] == ["paged-a", "paged-b"]
    last = sm.list_models(NameContains="paged-", MaxResults=2, SortBy="Name",
                          SortOrder="Ascending", NextToken=first["NextToken"])
    assert [m["ModelName"] for m in last["Models"]] == ["paged-c"] and "NextToken" not in last
    with pytest.raises(ClientError) as err:
        sm.list_models(NameContains="paged-", MaxResults=2, NextToken="4")
    assert err.value.response["Error"]["Message"] == "Invalid pagination token"
