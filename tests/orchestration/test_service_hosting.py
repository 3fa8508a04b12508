"""Hosting: model servers' timeouts, health, updates, weights, asynchronous invocations, and
runtime connections passed to model servers."""
import json
import os
import signal
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from servicehelpers import (SLOW_HANDLERS, _model_and_config, _until, _server_pid, _answers)


def _sleepy_archive() -> bytes:
    """model.tar.gz holding only the sleeping handlers (code/inference.py)."""
    import io
    import tarfile

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        code = SLOW_HANDLERS.encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(code)
        tar.addfile(info, io.BytesIO(code))
    return archive.getvalue()


@pytest.fixture
def hosted(tmp_path):
    """An in-process service with short hosting timeouts, serving the sleeping model."""
    from pipeline.local.server import LocalSageMaker

    service = LocalSageMaker(str(tmp_path / "home"), invocation_timeout=2.0,
                             health_seconds=0.3).start_background()
    session = dict(endpoint_url=service.url, region_name="us-east-1",
                   aws_access_key_id="local", aws_secret_access_key="local")
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **session)
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="sleepy/model.tar.gz", Body=_sleepy_archive())
    sm = boto3.client("sagemaker", **session)
    runtime = boto3.client("sagemaker-runtime", config=Config(retries={"max_attempts": 1}),
                           **session)
    _model_and_config(sm, "sleepy", "s3://models/sleepy/model.tar.gz")
    sm.create_endpoint(EndpointName="sleepy", EndpointConfigName="sleepy")
    assert _until(lambda: sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"]
                  == "InService", 60)
    yield service, sm, runtime
    service.close()


def test_an_invocation_times_out_as_sagemakers_do(hosted):
    service, sm, runtime = hosted
    started = time.time()
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="sleepy", Body=b"4")
    assert time.time() - started < 3.5  # one timeout (2 s here, 60 s by default), no retry
    assert err.value.response["Error"]["Code"] == "ModelError"
    assert "timed out while waiting for a response from container primary" in \
        err.value.response["Error"]["Message"]
    assert _until(lambda: _answers(runtime), 15)  # served again once the model is free


def test_dead_and_frozen_model_servers_are_replaced_then_the_endpoint_fails(hosted):
    service, sm, runtime = hosted
    first = _server_pid(service)
    os.kill(first, signal.SIGKILL)  # dead
    assert _until(lambda: "sleepy" in service.hosting.servers
                  and _server_pid(service) != first and _answers(runtime), 30)
    second = _server_pid(service)
    os.killpg(second, signal.SIGSTOP)  # frozen, it and its workers: alive, silent
    assert _until(lambda: "sleepy" in service.hosting.servers
                  and _server_pid(service) != second and _answers(runtime), 30)
    assert sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"] == "InService"
    os.kill(_server_pid(service), signal.SIGKILL)  # a third death: restarts are used up
    assert _until(lambda: sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"]
                  == "Failed", 30)
    reason = sm.describe_endpoint(EndpointName="sleepy")["FailureReason"]
    assert "the model server exited with code -9; restarted 2 times" == reason
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="sleepy", Body=b"0")
    assert "Endpoint sleepy is Failed" in err.value.response["Error"]["Message"]


@pytest.mark.parametrize("passing", [True, False])
def test_runtime_connections_pass_to_the_model_server_and_back(hosted, monkeypatch, passing):
    """A client's keep-alive connection to the runtime route is passed to the endpoint's model
    server at its first invocation, which answers the invocations after it itself, in the same
    words; any other request goes back to the service. Without passing (``passing=False``:
    the service proxies each call), every answer is the same."""
    import http.client

    service, sm, _ = hosted
    channels = service.hosting.servers["sleepy"].channels  # one per model-server worker
    assert {service.hosting.channel_of("sleepy") for _ in channels} == set(channels)  # in turn
    if not passing:
        monkeypatch.setattr(service.hosting, "channel_of", lambda endpoint: None)
    service_side = service.http.server_state.connections
    before = len(service_side)
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)

    def post(path, body, headers=None):
        conn.request("POST", path, body, headers or {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response, response.read()

    for _ in range(3):
        response, body = post("/endpoints/sleepy/invocations", b"0")
        assert response.status == 200 and json.loads(body) == {"slept": 0.0}
        assert response.getheader("x-Amzn-Invoked-Production-Variant") == "AllTraffic"
        assert len(service_side) == before + (0 if passing else 1)  # whose connection it is
    response, body = post("/endpoints/sleepy/invocations", b"abc")
    error = json.loads(body)
    assert response.status == 424 and error["__type"] == "ModelError"
    assert error["OriginalStatusCode"] == 500 and error["LogStreamArn"].endswith(
        ":log-group:/aws/sagemaker/Endpoints/sleepy")
    response, body = post("/", b"{}", {"X-Amz-Target": "SageMaker.ListEndpoints",
                                       "Content-Type": "application/x-amz-json-1.1"})
    assert response.status == 200
    assert [e["EndpointName"] for e in json.loads(body)["Endpoints"]] == ["sleepy"]
    assert len(service_side) == before + 1  # back at the service
    response, body = post("/endpoints/missing/invocations", b"0")
    assert response.status == 400 and json.loads(body)["message"] == \
        "Endpoint missing of account 000000000000 not found."
    response, body = post("/endpoints/sleepy/invocations", b"0")  # passed again, or not
    assert response.status == 200 and len(service_side) == before + (0 if passing else 1)
    conn.close()


def test_without_abstract_unix_sockets_the_service_proxies_every_call(tmp_path, monkeypatch):
    """Where connections cannot change hands (abstract Unix sockets are Linux's), the service
    still starts, and its model servers take no passed connections."""
    from pipeline.local import shared
    from pipeline.local.server import LocalSageMaker

    def no_abstract_sockets(name):
        raise OSError(97, "Address family not supported by protocol")

    monkeypatch.setattr(shared.passing, "listener", no_abstract_sockets)
    service = LocalSageMaker(str(tmp_path / "home")).start_background()
    try:
        assert service.hosting.service_channel is None and service.http.channels == []
        with urllib.request.urlopen(service.url + "/ping", timeout=10) as response:
            assert response.status == 200
    finally:
        service.close()


def test_a_failed_update_keeps_the_old_model_serving(hosted):
    """As on AWS: an update that cannot start its model leaves the endpoint InService on the
    config it had, with the reason, and the old model answering throughout."""
    service, sm, runtime = hosted
    _model_and_config(sm, "broken", "s3://models/missing/model.tar.gz")
    sm.update_endpoint(EndpointName="sleepy", EndpointConfigName="broken")
    assert _until(lambda: sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"]
                  != "Updating", 30)
    desc = sm.describe_endpoint(EndpointName="sleepy")
    assert desc["EndpointStatus"] == "InService" and desc["EndpointConfigName"] == "sleepy"
    assert "update to broken failed" in desc["FailureReason"]
    assert _answers(runtime)
    assert not os.path.exists(os.path.join(service.home.endpoints_dir, "sleepy", "broken"))


def test_endpoint_weights_and_capacities_are_updated_as_described(hosted):
    service, sm, runtime = hosted
    (variant,) = sm.describe_endpoint(EndpointName="sleepy")["ProductionVariants"]
    assert variant["CurrentWeight"] == 1.0 and variant["CurrentInstanceCount"] == 1
    sm.update_endpoint_weights_and_capacities(EndpointName="sleepy", DesiredWeightsAndCapacities=[
        {"VariantName": "AllTraffic", "DesiredWeight": 0.5, "DesiredInstanceCount": 3}])
    desc = sm.describe_endpoint(EndpointName="sleepy")
    (variant,) = desc["ProductionVariants"]
    assert desc["EndpointStatus"] == "InService"
    assert (variant["CurrentWeight"], variant["DesiredWeight"]) == (0.5, 0.5)
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (3, 3)
    with pytest.raises(ClientError) as err:
        sm.update_endpoint_weights_and_capacities(
            EndpointName="sleepy", DesiredWeightsAndCapacities=[{"VariantName": "Canary",
                                                                 "DesiredWeight": 1.0}])
    assert "['Canary'] are not present in endpoint sleepy" in str(err.value)
    assert _answers(runtime)  # still serving


def test_asynchronous_invocations_write_answers_and_failures_to_s3(hosted):
    """InvokeEndpointAsync as SageMaker does it: 202 with the output location at once, the input
    read from S3, the answer written to S3OutputPath as <InferenceId>.out, a model's error to
    S3FailurePath as <InferenceId>-error.out."""
    service, sm, runtime = hosted
    with pytest.raises(ClientError) as err:  # its config has no AsyncInferenceConfig
        runtime.invoke_endpoint_async(EndpointName="sleepy", InputLocation="s3://models/x")
    assert "not configured for asynchronous inference" in str(err.value)
    s3 = _async_ready(service, sm)
    s3.put_object(Bucket="models", Key="async/in/ok.txt", Body=b"0.2")
    s3.put_object(Bucket="models", Key="async/in/bad.txt", Body=b"not a number")
    answer = runtime.invoke_endpoint_async(EndpointName="sleepy", ContentType="text/plain",
                                           InputLocation="s3://models/async/in/ok.txt")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["OutputLocation"] == f"s3://models/async/out/{answer['InferenceId']}.out"
    failing = runtime.invoke_endpoint_async(EndpointName="sleepy", InferenceId="bad-1",
                                            InputLocation="s3://models/async/in/bad.txt")
    assert failing["FailureLocation"] == "s3://models/async/failed/bad-1-error.out"
    out = f"async/out/{answer['InferenceId']}.out"
    assert _until(lambda: _object(s3, out) is not None, 30)
    assert json.loads(_object(s3, out)) == {"slept": 0.2}
    assert _until(lambda: _object(s3, "async/failed/bad-1-error.out") is not None, 30)
    assert b"could not convert string to float" in _object(s3, "async/failed/bad-1-error.out")
    assert _object(s3, "async/out/bad-1.out") is None


def _object(s3, key, bucket="models"):
    """An object's bytes, or None while it is not there (an asynchronous answer to come)."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError:
        return None


def _processes_running(text):
    """Pids of live processes whose command line holds ``text``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_no_model_server_outlives_the_service_not_even_one_starting(hosted):
    """Closing while an update's model server starts: it is stopped too, and the endpoint is
    not recorded Failed (it comes back as it was on the next start)."""
    service, sm, _ = hosted
    _model_and_config(sm, "second", "s3://models/sleepy/model.tar.gz")
    sm.update_endpoint(EndpointName="sleepy", EndpointConfigName="second")
    starting = os.path.join(service.home.endpoints_dir, "sleepy", "second")
    assert _until(lambda: _processes_running(starting), 30)  # its server is starting
    service.close()
    folder = os.path.join(service.home.endpoints_dir, "sleepy")  # (killed ones leave at once)
    assert _until(lambda: _processes_running(folder) == [], 5), _processes_running(folder)
    from pipeline.local.server import LocalSageMaker

    again = LocalSageMaker(service.home.root).start_background()
    try:
        assert again.backend.describe_endpoint("sleepy")["EndpointStatus"] != "Failed"
    finally:
        again.close()


@pytest.mark.parametrize("path", ["/endpoints/sl%65epy/invocations",
                                  "/endpoints/sleep%79/invocations"])
def test_an_encoded_endpoint_name_is_answered_not_bounced(hosted, path):
    """The service decodes the name; the model server takes its path as sent and would pass
    such a connection back, forever: the service answers these itself."""
    import http.client

    service, _, _ = hosted
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request("POST", path, b"0", {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read()) == {"slept": 0.0}
    conn.close()


def test_a_failed_endpoints_weights_and_a_serverless_memory_size_are_refused_truthfully(
        hosted):
    service, sm, _ = hosted
    _model_and_config(sm, "broken", "s3://models/missing/model.tar.gz")
    sm.create_endpoint(EndpointName="broken", EndpointConfigName="broken")
    assert _until(lambda: sm.describe_endpoint(EndpointName="broken")["EndpointStatus"]
                  == "Failed", 30)
    with pytest.raises(ClientError) as err:
        sm.update_endpoint_weights_and_capacities(
            EndpointName="broken", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic",
                                                                 "DesiredWeight": 1.0}])
    assert err.value.response["Error"]["Message"] == (
        'Cannot update endpoint "arn:aws:sagemaker:us-east-1:000000000000:endpoint/broken": '
        "it is Failed; only an InService endpoint's weights and capacities can be updated.")
    for memory, taken in ((1111, False), (2048, True), (6144, True)):
        variant = {"VariantName": "v", "ModelName": "sleepy",
                   "ServerlessConfig": {"MemorySizeInMB": memory, "MaxConcurrency": 1}}
        if taken:
            sm.create_endpoint_config(EndpointConfigName=f"serverless-{memory}",
                                      ProductionVariants=[variant])
            continue
        with pytest.raises(ClientError) as err:
            sm.create_endpoint_config(EndpointConfigName="serverless", ProductionVariants=[
                variant])
        assert "valid values are 1 GB steps" in err.value.response["Error"]["Message"]


def _async_ready(service, sm):
    """The sleepy endpoint on a config for asynchronous inference (made once); an S3 client."""
    s3 = boto3.client("s3", endpoint_url=service.url, region_name="us-east-1",
                      aws_access_key_id="local", aws_secret_access_key="local",
                      config=Config(s3={"addressing_style": "path"}))
    if sm.describe_endpoint(EndpointName="sleepy")["EndpointConfigName"] == "sleepy-async":
        return s3
    sm.create_endpoint_config(
        EndpointConfigName="sleepy-async", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "sleepy", "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large"}],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://models/async/out",
                                               "S3FailurePath": "s3://models/async/failed"}})
    sm.update_endpoint(EndpointName="sleepy", EndpointConfigName="sleepy-async")
    assert _until(lambda: sm.describe_endpoint(EndpointName="sleepy")["EndpointConfigName"]
                  == "sleepy-async", 60)
    return s3


@pytest.mark.parametrize("header, value", [
    ("Inference-Id", "../../../x"), ("Inference-Id", "i" * 300),
    ("S3OutputPathExtension", "../.."), ("S3OutputPathExtension", "e" * 2000),
    ("InvocationTimeoutSeconds", "abc"), ("InvocationTimeoutSeconds", "nan"),
    ("InvocationTimeoutSeconds", "inf"), ("InvocationTimeoutSeconds", "-1"),
    ("InvocationTimeoutSeconds", "0"), ("InvocationTimeoutSeconds", "3601"),
    ("InputLocation", "s3://models/" + "k" * 1100),
])
def test_asynchronous_requests_aws_would_refuse_are_refused_not_lost(hosted, header, value):
    import http.client

    service, sm, _ = hosted
    _async_ready(service, sm)
    headers = {"X-Amzn-SageMaker-InputLocation": "s3://models/async/in/ok.txt",
               f"X-Amzn-SageMaker-{header}": value}
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request("POST", "/endpoints/sleepy/async-invocations", b"", headers)
    response = conn.getresponse()
    assert response.status == 400, (header, value, response.read())
    conn.close()


def test_an_asynchronous_input_over_the_model_servers_limit_is_not_read(hosted):
    service, sm, runtime = hosted
    s3 = _async_ready(service, sm)
    s3.put_object(Bucket="models", Key="async/in/big.bin", Body=b"0" * (7 * 1024 * 1024))
    answer = runtime.invoke_endpoint_async(EndpointName="sleepy", InferenceId="big",
                                           InputLocation="s3://models/async/in/big.bin")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert _until(lambda: _object(s3, "async/failed/big-error.out") is not None, 30)
    assert b"is 7340032 bytes; the local model server takes at most" in _object(
        s3, "async/failed/big-error.out")


def test_a_running_endpoint_keeps_what_it_needs_whatever_is_deleted(hosted):
    """As on AWS: with its model, config and model data deleted, the endpoint keeps serving;
    a crashed model server comes back from the copy the endpoint keeps, and so does the
    endpoint after a restart of the service."""
    from pipeline.local.server import LocalSageMaker

    service, sm, runtime = hosted
    sm.delete_model(ModelName="sleepy")
    sm.delete_endpoint_config(EndpointConfigName="sleepy")
    os.remove(service.s3.path_of("s3://models/sleepy/model.tar.gz"))
    first = _server_pid(service)
    os.kill(first, signal.SIGKILL)
    assert _until(lambda: "sleepy" in service.hosting.servers
                  and _server_pid(service) != first and _answers(runtime), 30)
    assert sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"] == "InService"
    service.close()
    again = LocalSageMaker(service.home.root).start_background()
    try:
        assert _until(lambda: "sleepy" in again.hosting.servers, 60)
        assert again.backend.describe_endpoint("sleepy")["EndpointStatus"] == "InService"
    finally:
        again.close()


def test_an_accepted_asynchronous_invocation_survives_a_kill_9(tmp_path):
    """202 means it will be answered: the service is killed (-9) while the model works; started
    again on its home, it finishes the invocation and writes the answer."""
    from localservice import ServiceProcess

    service = ServiceProcess(tmp_path / "home").start()
    try:
        s3, sm = service.client("s3", s3={"addressing_style": "path"}), service.client(
            "sagemaker")
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key="sleepy/model.tar.gz", Body=_sleepy_archive())
        s3.put_object(Bucket="models", Key="in/four.txt", Body=b"4")
        _model_and_config(sm, "sleepy", "s3://models/sleepy/model.tar.gz")
        sm.create_endpoint_config(EndpointConfigName="async", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "sleepy", "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large"}], AsyncInferenceConfig={
            "OutputConfig": {"S3OutputPath": "s3://models/out"}})
        sm.create_endpoint(EndpointName="sleepy", EndpointConfigName="async")
        assert _until(lambda: sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"]
                      == "InService", 60)
        answer = service.client("sagemaker-runtime").invoke_endpoint_async(
            EndpointName="sleepy", InferenceId="survives", ContentType="text/plain",
            InputLocation="s3://models/in/four.txt")
        assert answer["OutputLocation"] == "s3://models/out/survives.out"
        service.stop(signal.SIGKILL)
        service = ServiceProcess(tmp_path / "home").start()
        s3 = service.client("s3", s3={"addressing_style": "path"})
        assert _until(lambda: _object(s3, "out/survives.out") is not None, 90)
        assert json.loads(_object(s3, "out/survives.out")) == {"slept": 4.0}
    finally:
        service.stop()
