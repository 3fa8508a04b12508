"""Connections to the local service: whatever the mix of requests pipelined on one connection
(invocations of two endpoints, which the service passes to their model servers and they pass
back, API calls, S3, /ping, refused requests), its framing, a half-close, or an endpoint changing
under it, every request gets exactly its own answer, in order: the same answer it gets alone."""
import io
import json
import socket
import tarfile
import threading
import time

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servicehelpers import ROLE, _until

pytestmark = pytest.mark.slow

SERVED_BY = '''"""Answers which model served it."""
NAME = "{name}"


def model_fn(model_dir):
    return NAME


def input_fn(body, content_type):
    return body


def predict_fn(data, model):
    return model


def output_fn(prediction, accept):
    return '{{"served_by": "%s"}}' % prediction
'''


def _archive(name) -> bytes:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        code = SERVED_BY.format(name=name).encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(code)
        tar.addfile(info, io.BytesIO(code))
    return archive.getvalue()


def _model(sm, name, uri, workers="1"):
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "img", "ModelDataUrl": uri,
        "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": workers}})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])


@pytest.fixture(scope="module")
def two_endpoints(local_service, tmp_path_factory):
    """A service with endpoints ep-a (model a, two workers) and ep-b (model b, one); model c
    (two workers) for ep-b's update."""
    service, sm, s3 = local_service(tmp_path_factory.mktemp("home"))
    s3.create_bucket(Bucket="models")
    for name in ("a", "b", "c"):
        s3.put_object(Bucket="models", Key=f"{name}/model.tar.gz", Body=_archive(name))
        # two workers for a, and for c (the model ep-b is updated to, then deleted with: a
        # stopping server with workers waits for each to pass its connections back)
        _model(sm, name, f"s3://models/{name}/model.tar.gz", "1" if name == "b" else "2")
    s3.put_object(Bucket="models", Key="note.txt", Body=b"a stored object")
    for endpoint, config in (("ep-a", "a"), ("ep-b", "b")):
        sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    assert _until(lambda: all(sm.describe_endpoint(EndpointName=e)["EndpointStatus"] ==
                              "InService" for e in ("ep-a", "ep-b")), 90)
    return service, sm


def _request(method, target, body=b"", host="127.0.0.1", headers=()):
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
            *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


JSON = ("Content-Type: application/x-amz-json-1.1",)
# name -> a request's bytes; each one's answer does not depend on what came before it
REQUESTS = {
    "invoke ep-a": _request("POST", "/endpoints/ep-a/invocations", b"1"),
    "invoke ep-b": _request("POST", "/endpoints/ep-b/invocations", b"22"),
    "invoke ep-a chunked": b"POST /endpoints/ep-a/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "invoke ep%2Da": _request("POST", "/endpoints/ep%2Da/invocations", b"3"),
    "invoke missing": _request("POST", "/endpoints/nope/invocations", b"4"),
    "GET an invocation": _request("GET", "/endpoints/ep-a/invocations"),
    "ListEndpoints": _request("POST", "/", b"{}", headers=(
        "X-Amz-Target: SageMaker.ListEndpoints",) + JSON),
    "DescribeEndpoint": _request("POST", "/", b'{"EndpointName": "ep-b"}', headers=(
        "X-Amz-Target: SageMaker.DescribeEndpoint",) + JSON),
    "S3 GET": _request("GET", "/models/note.txt"),
    "ping": _request("GET", "/ping"),
}
REFUSED = {  # the connection ends with their answer (nothing after a 400 can be framed; a
    # foreign Host is no client of ours, as a DNS-rebinding page would be)
    "invoke, foreign Host": _request("POST", "/endpoints/ep-b/invocations", b"5",
                                     host="evil.example"),
    "not HTTP": b"GARBAGE\r\n\r\n",
    "cut short": b"GET /pi",  # by the half-close that follows it
    "length and chunked": b"POST /endpoints/ep-a/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc"
                          b"\r\n0\r\n\r\n",
}


class _Answers:
    """Responses parsed off a connection's bytes: (status, body) each."""

    def __init__(self):
        self.parser = httptools.HttpResponseParser(self)
        self.done, self._body = [], b""

    def on_body(self, body):
        self._body += body

    def on_message_complete(self):
        self.done.append((self.parser.get_status_code(), self._body))
        self._body = b""


def _exchange(port, pieces, expected, half_close):
    """Send the pieces (a pause between them), then read until ``expected`` answers came or
    the server closed: the answers, and whether the connection was reset."""
    answers = _Answers()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for number, piece in enumerate(pieces):
                if number:
                    time.sleep(0.002)
                sock.sendall(piece)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            while len(answers.done) < expected or half_close:
                data = sock.recv(65536)
                if not data:
                    break
                answers.parser.feed_data(data)
        except OSError:  # reset: the server closed on bytes it had not read
            return answers.done, True
    return answers.done, False


def _alone(port, name):
    request = REQUESTS.get(name) or REFUSED[name]
    answers, reset = _exchange(port, [request], 1, half_close=name == "cut short")
    assert len(answers) == 1 and not reset, (name, answers)
    return answers[0]


MIXES = st.tuples(
    st.lists(st.sampled_from(sorted(REQUESTS)), min_size=1, max_size=7),
    st.one_of(st.none(), st.sampled_from(sorted(REFUSED))),  # the last one
    st.lists(st.integers(1, 400), max_size=4),  # where the bytes are cut into pieces
    st.booleans())  # half-close after sending


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(mix=MIXES)
def test_pipelined_requests_get_the_answers_they_get_one_at_a_time(two_endpoints, mix):
    service, _ = two_endpoints
    names, refused, cuts, half_close = mix
    half_close = half_close or refused == "cut short"
    names = names + ([refused] if refused else [])
    data = b"".join(REQUESTS.get(name) or REFUSED[name] for name in names)
    points = sorted({min(cut * 7, len(data) - 1) for cut in cuts} - {0})
    pieces = [data[a:b] for a, b in zip([0] + points, points + [len(data)])]
    answers, reset = _exchange(service.port, pieces, len(names), half_close)
    assert not reset
    assert answers == [_alone(service.port, name) for name in names], names


def test_the_requests_answers_are_their_own(two_endpoints):
    """What the property above compares: each kind of request's answer alone."""
    service, _ = two_endpoints
    port = service.port
    assert _alone(port, "invoke ep-a") == (200, b'{"served_by": "a"}')
    assert _alone(port, "invoke ep-a chunked") == (200, b'{"served_by": "a"}')
    assert _alone(port, "invoke ep%2Da") == (200, b'{"served_by": "a"}')
    assert _alone(port, "invoke ep-b") == (200, b'{"served_by": "b"}')
    assert _alone(port, "invoke, foreign Host")[0] == 403
    status, body = _alone(port, "invoke missing")
    assert status == 400 and b"Endpoint nope of account" in body
    assert _alone(port, "ListEndpoints")[0] == 200
    assert json.loads(_alone(port, "DescribeEndpoint")[1])["EndpointName"] == "ep-b"
    assert _alone(port, "S3 GET") == (200, b"a stored object")
    assert _alone(port, "ping")[0] == 200
    assert [_alone(port, name) for name in sorted(REFUSED)] == [
        (400, b"The request ended inside its headers."),
        (403, b'{"__type": "AccessDenied", "message": "the local service answers only requests '
              b'addressed to a loopback host name"}'),
        (400, b"Invalid HTTP request received. Transfer-Encoding can't be present with "
              b"Content-Length"),
        (400, b"Invalid HTTP request received. Invalid method encountered")]


def _stream(port, batches, log, stop):
    """A client sending batches of five pipelined invocations of ep-b on one keep-alive
    connection (a new one when the server ends it after an answer): each answer's status and
    body, and any request left unanswered."""
    request = REQUESTS["invoke ep-b"]
    sock = None
    while not stop.is_set() and batches:
        batches -= 1
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(request * 5)
        answers = _Answers()
        try:
            while len(answers.done) < 5:
                data = sock.recv(65536)
                if not data:
                    break
                answers.parser.feed_data(data)
        except OSError as err:
            log.append(("error", repr(err)))
        log.extend(answers.done)
        if len(answers.done) < 5:
            log.append(("unanswered", 5 - len(answers.done)))
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def test_endpoint_updates_and_deletes_under_streaming_clients_answer_every_request(
        two_endpoints):
    """Clients keep invoking ep-b, pipelined, while it is updated to another model and then
    deleted: every request is answered, by the old model, the new one, or (once deleted) with
    the runtime's not-found error; none is dropped or reset."""
    service, sm = two_endpoints
    logs, stop = [[] for _ in range(4)], threading.Event()
    clients = [threading.Thread(target=_stream, args=(service.port, 10_000, log, stop))
               for log in logs]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        sm.update_endpoint(EndpointName="ep-b", EndpointConfigName="c")
        assert _until(lambda: sm.describe_endpoint(EndpointName="ep-b")["EndpointStatus"]
                      == "InService", 60)
        time.sleep(0.5)
        sm.delete_endpoint(EndpointName="ep-b")
        time.sleep(1.0)
    finally:
        stop.set()
        for client in clients:
            client.join(30)
    answers = [entry for log in logs for entry in log]
    assert [entry for entry in answers if entry[0] in ("error", "unanswered")] == []
    bodies = {body for status, body in answers if status == 200}
    assert bodies == {b'{"served_by": "b"}', b'{"served_by": "c"}'}
    gone = [body for status, body in answers if status != 200]
    assert gone and all(json.loads(body)["message"] ==
                        "Endpoint ep-b of account 000000000000 not found." for body in gone)
    assert len(answers) % 5 == 0 and len(answers) > 100
