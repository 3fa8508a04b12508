"""Property-based: thousands of generated requests to the local service (the SageMaker and
EventBridge APIs, the runtime, S3, the run browser), well and badly framed: every one gets an
HTTP answer (never a dropped connection) and none is a 5xx."""
import json
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localservice import ServiceProcess
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rawhttp import FRAMINGS, exchange, frame, status_of  # noqa: E402
from pipeline.local.resources import SERVICE_MODEL

pytestmark = pytest.mark.slow

OPERATIONS = sorted(SERVICE_MODEL.operation_names)
MEMBERS = sorted({m for op in ("CreatePipeline", "StartPipelineExecution", "CreateModel",
                               "CreateEndpointConfig", "CreateEndpoint", "ListPipelines",
                               "DescribePipelineExecution", "UpdateModelPackage",
                               "CreateModelPackage", "ListModelPackages")
                  for m in SERVICE_MODEL.operation_model(op).input_shape.members})
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text(max_size=20) | st.sampled_from(["../x", "a/b", "e" * 70, "arn:aws:x"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(MEMBERS) | st.text(max_size=8), inner,
                                        max_size=4), max_leaves=20)
API_BODIES = st.dictionaries(st.sampled_from(MEMBERS), VALUES, max_size=6).map(
    lambda d: json.dumps(d).encode()) | st.binary(max_size=200)
TARGETS = (st.sampled_from(OPERATIONS).map(lambda o: f"SageMaker.{o}")
           | st.sampled_from(["AWSEvents.PutRule", "AWSEvents.ListRules", "AWSEvents.PutTargets",
                              "Bogus.Thing", "SageMaker.", ""]))
PATHS = st.sampled_from(["/", "/endpoints/none/invocations", "/ping", "/executions/p/x",
                         "/jobs/j", "/packages/g/1", "/compare?a=x&b=y", "/sagemaker-local",
                         "/sagemaker-local/k", "/sagemaker-local/a/../b", "/Bad_Bucket/k",
                         "/draw/e", "/endpoints/delete", "/packages/approval", "/%00/x",
                         "/confirm?action=approve&subject=x", "/confirm?action=zap",
                         "/compare-packages?a=x&b=y", "/executions/stop", "/executions/retry",
                         "/?pipeline=x&status=Failed", "/endpoints/x%2Dy/invocations"])
FRAMING = st.sampled_from(FRAMINGS)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = ServiceProcess(tmp_path_factory.mktemp("fuzz-home")).start()
    yield svc
    svc.stop()


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(target=TARGETS, body=API_BODIES, framing=FRAMING)
def test_api_requests_are_answered_without_5xx(service, target, body, framing):
    headers = ["Content-Type: application/x-amz-json-1.1", "Authorization: AWS4-HMAC-SHA256 x"]
    if target:
        headers.append(f"X-Amz-Target: {target}")
    answer = exchange(service.port, frame("POST", "/", headers, body, framing))
    assert answer.startswith(b"HTTP/1.1 "), (framing, answer[:100])
    assert status_of(answer) < 500, answer[:400]


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "PUT", "POST", "HEAD", "DELETE", "BREW"]), path=PATHS,
       signed=st.booleans(), body=st.binary(max_size=500), framing=FRAMING)
def test_other_routes_are_answered_without_5xx(service, method, path, signed, body, framing):
    headers = ["Authorization: AWS4-HMAC-SHA256 x"] if signed else []
    answer = exchange(service.port, frame(method, path, headers, body, framing))
    assert answer.startswith(b"HTTP/1.1 "), (method, path, framing, answer[:100])
    assert status_of(answer) < 500, (method, path, answer[:400])


# The surfaces strangers' input reached 5xx on before: tokens, Search expressions, event
# patterns, definitions, the Logs subset, asynchronous invocations, deep nesting.
TOKENS = st.none() | st.text(max_size=12) | st.sampled_from(
    ["²", "١٢", "f/²", "b/²", "f/1", "b/99999999999", "0", "-1", "1e3", "99999999999"])
NESTED = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(
                          ["Filters", "SubExpressions", "NestedFilters", "Operator", "Name",
                           "Value", "source", "detail", "prefix", "exists", "numeric",
                           "anything-but", "Steps", "Get", "Std:JsonGet", "Path",
                           "DependsOn", "Type", "Arguments"]), inner, max_size=4),
                      max_leaves=30)


def _deep(depth):
    return "[" * depth + "]" * depth


def _body(target, token, value, depth, text):
    if target == "SageMaker.Search":
        return {"Resource": "TrainingJob", "SearchExpression": value, "NextToken": token}
    if target == "AWSEvents.PutRule":
        return {"Name": "fuzz", "EventPattern": text if depth == 0 else json.dumps(value)}
    if target == "SageMaker.CreatePipeline":
        return {"PipelineName": "fuzz", "RoleArn": "arn:aws:iam::000000000000:role/r",
                "PipelineDefinition": json.dumps({"Version": "2020-12-01", "Steps": value})}
    if target.startswith("Logs_20140328."):
        return {"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamName": "j/algo-1",
                "nextToken": token}
    return {"NextToken": token, "MaxResults": 5}


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(target=st.sampled_from(["SageMaker.Search", "AWSEvents.PutRule", "SageMaker.CreatePipeline",
                               "Logs_20140328.GetLogEvents", "Logs_20140328.FilterLogEvents",
                               "Logs_20140328.DescribeLogStreams", "SageMaker.ListModels",
                               "SageMaker.ListPipelineExecutions", "SageMaker.ListEndpoints",
                               "AWSEvents.ListRules"]),
       token=TOKENS, value=NESTED, depth=st.sampled_from([0, 1, 70, 3000]),
       text=st.text(max_size=40))
def test_the_surfaces_that_once_got_5xx_are_answered_without_5xx(service, target, token, value,
                                                                  depth, text):
    payload = {k: v for k, v in _body(target, token, value, depth, text).items()
               if v is not None}
    body = json.dumps(payload).encode() if depth < 70 else _deep(depth).encode()
    headers = ["Content-Type: application/x-amz-json-1.1", "Authorization: AWS4-HMAC-SHA256 x",
               f"X-Amz-Target: {target}"]
    answer = exchange(service.port, frame("POST", "/", headers, body, "length"))
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    assert status_of(answer) < 500, (target, body[:300], answer[:400])


ASYNC_HEADERS = st.dictionaries(st.sampled_from(
    ["X-Amzn-SageMaker-Inference-Id", "X-Amzn-SageMaker-S3OutputPathExtension",
     "X-Amzn-SageMaker-InvocationTimeoutSeconds", "X-Amzn-SageMaker-InputLocation",
     "X-Amzn-SageMaker-RequestTTLSeconds", "X-Amzn-SageMaker-Content-Type"]),
    st.sampled_from(["../../x", "a" * 300, "nan", "inf", "-1", "0", "3601", "abc", "s3://b/k",
                     "s3://b/../k", "https://x/y", "", "é"]) | st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
    max_size=5)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(headers=ASYNC_HEADERS, endpoint=st.sampled_from(["none", "x%2Dy", "a" * 64]))
def test_asynchronous_invocations_are_answered_without_5xx(service, headers, endpoint):
    lines = [f"{k}: {v}" for k, v in headers.items()]
    answer = exchange(service.port, frame("POST", f"/endpoints/{endpoint}/async-invocations",
                                          lines, b"", "length"))
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    assert status_of(answer) < 500, (headers, answer[:400])
