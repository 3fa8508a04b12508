"""The model server's connections: pipelined requests and half-closes, connections the local
service passes to it (its invocations answered, the rest passed back, and the connections
themselves when it stops), connections dealt to its workers in turn."""
import http.client
import json
import os
import subprocess
import sys

import pytest

from conftest import digits_of, start_server
from test_model_server import PING


@pytest.mark.parametrize("before, after, answers", [
    (2, b"GARBAGE\r\n\r\n", [b"200", b"200", b"400"]),  # the refusal after the answers due
    (1, b"GARBAGE\r\n\r\n", [b"200", b"400"]),  # ... however few they are
    (2, PING[:20], [b"200", b"200", b"400"]),  # cut short by the half-close
    (2, PING, [b"200", b"200", b"200"]),
])
def test_pipelined_requests_then_a_half_close_get_every_answer_in_order(
        server, digits, before, after, answers):
    """``before`` invocations, then ``after``, in one write, then the client's side closed:
    each request is answered, in order (a refused request's 400 used to overtake and close the
    connection; a half-close, to drop the answers still due)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rawhttp import exchange
    body = json.dumps(digits[0][:1].tolist()).encode()
    invocation = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    answer = exchange(server, invocation * before + after)
    assert [part[:3] for part in answer.split(b"HTTP/1.1 ")[1:]] == answers, answer[-300:]


def test_request_ends_are_found_exactly_where_llhttp_ends_them():
    """Where a request ends in a read: the whole read, the first of two, across reads (each
    piece's count), chunked; None for a request still arriving or refused; past its limit it
    gives up (what follows is then the parser's)."""
    from request_ends import RequestEnds

    a = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    b = b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n"
    chunked = (b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
    assert RequestEnds(1 << 20).end(a) == len(a)
    assert RequestEnds(1 << 20).end(a + b) == len(a)
    assert RequestEnds(1 << 20).end(chunked + b) == len(chunked)
    ends = RequestEnds(1 << 20)
    assert ends.end(a[:30]) is None and ends.end(a[30:] + b) == len(a) - 30
    assert ends.end(b) == len(b)  # the next request, from a fresh start
    assert RequestEnds(1 << 20).end(b"GARBAGE\r\n\r\n") is None
    exact = RequestEnds(40)  # 40 bytes kept: still at the limit
    assert exact.end(a[:20]) is None and exact.end(a[20:40]) is None
    assert exact.end(a[40:]) == len(a) - 40 and not exact.unsplittable
    small = RequestEnds(39)  # one byte less: gives up
    assert small.end(a[:20]) is None and small.end(a[20:40]) is None and small.unsplittable
    assert small.end(a[40:]) is None


def _read_answer(sock):
    """One HTTP/1.1 answer with a Content-Length from a blocking socket: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return head.decode("latin-1"), body


@pytest.fixture(params=["1", "2"])
def under_service(trained, digits, tmp_path, request):
    """A model server as the local service starts it (with 1 or 2 workers), and a listener
    standing in for the service: (process, channel name, service listener, an invocation's
    head, its body, the digits it shows)."""
    import uuid

    import connection_passing

    name = uuid.uuid4().hex
    back = connection_passing.listener(f"test-service-{name}")
    back.settimeout(30)
    proc, _ = start_server(
        trained[0], tmp_path, "--workers", request.param, "--endpoint-name", "mnist",
        "--region", "eu-west-1", "--log-group-arn", "arn:log", "--channel",
        f"test-endpoint-{name}", "--service-channel", f"test-service-{name}")
    images, labels = digits
    body = json.dumps(images[:5].tolist()).encode()
    invocation = (b"POST /endpoints/mnist/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    try:
        yield proc, f"test-endpoint-{name}-{int(request.param) - 1}", back, invocation, body, \
            labels[:5].tolist()
    finally:
        back.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # (a server stuck on a test's failure) not left over
            proc.kill()
            proc.wait(10)


def _pass(channel, sock, first=b""):
    import asyncio

    import connection_passing
    assert asyncio.run(connection_passing.send_connection("\0" + channel, sock.fileno(), first))


def _passed_back(back):
    """The connection the model server passed back to the "service": (socket, first bytes)."""
    import asyncio

    import connection_passing
    channel, _ = back.accept()
    with channel:
        return asyncio.run(connection_passing.receive_connection(channel))


def test_passed_connections_get_runtime_answers_and_other_requests_go_back(under_service):
    """Under the local service: a client connection passed on --channel is answered as the
    runtime API answers (its invocations; its region and Host checked), and a request for
    anything else is passed back, with its bytes, on --service-channel (each worker has its
    own channel: NAME-0, NAME-1, ...)."""
    import socket

    _, channel, back, invocation, body, digits = under_service
    client, ours = socket.socketpair()
    client.settimeout(30)
    with client, ours:  # the service read the head; the body follows on the socket
        _pass(channel, ours, invocation)
        client.sendall(body)
        head, answer = _read_answer(client)
        assert head.startswith("HTTP/1.1 200 ")
        assert "x-amzn-invoked-production-variant: AllTraffic" in head
        assert "x-amzn-requestid: " in head.lower()
        assert digits_of(answer) == digits
        # a model's 4xx is SageMaker's ModelError, naming the log group
        client.sendall(invocation.replace(b"%d" % len(body), b"2") + b"[1")
        head, answer = _read_answer(client)
        assert head.startswith("HTTP/1.1 424 ")
        error = json.loads(answer)
        assert error["__type"] == "ModelError" and error["OriginalStatusCode"] == 400
        assert error["LogStreamArn"] == "arn:log"
        # signed for another region: AWS's answer from a regional endpoint
        client.sendall(invocation.replace(b"\r\n\r\n", b"\r\nAuthorization: AWS4-HMAC-"
                                          b"SHA256 Credential=k/20260101/us-east-1/"
                                          b"sagemaker/aws4_request\r\n\r\n") + body)
        head, answer = _read_answer(client)
        assert head.startswith("HTTP/1.1 403 ")
        assert json.loads(answer)["__type"] == "InvalidSignatureException"
        # anything else goes back to the service, the request's bytes with it
        other = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.ListModels\r\n"
        client.sendall(other)
        returned, first = _passed_back(back)
        with returned:
            assert first == other
            returned.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")  # the "service" answers
        assert client.recv(100).startswith(b"HTTP/1.1 204 ")


def test_pipelined_requests_go_back_one_by_one_and_connections_when_it_stops(under_service):
    """An invocation and another request in one write: the invocation is answered here, then
    the request after it goes back alone (its bytes only); a connection idle when the server
    stops goes back too (it used to be closed, and the requests on their way lost), with
    whatever the client sends while it goes."""
    import socket
    import time

    proc, channel, back, invocation, body, digits = under_service
    other = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    client, ours = socket.socketpair()
    idle, idle_ours = socket.socketpair()
    with client, ours, idle, idle_ours:
        client.settimeout(30)
        _pass(channel, ours)
        _pass(channel, idle_ours)
        client.sendall(invocation + body + other)
        head, answer = _read_answer(client)
        assert head.startswith("HTTP/1.1 200 ") and digits_of(answer) == digits
        returned, first = _passed_back(back)
        returned.close()
        assert first == other
        proc.terminate()
        # while the "service" is slow to take it, the client sends a request: it is not read
        # over there (it was, and lost with the descriptor the server closed), it is ours
        time.sleep(1.0)
        idle.sendall(other)
        time.sleep(0.3)
        returned, first = _passed_back(back)
        with returned:
            returned.settimeout(30)
            assert first == b"" and returned.recv(100) == other
        proc.wait(10)  # and it ends (SIGTERM's exit status, re-raised, or 0)


def test_a_connection_still_on_its_way_when_the_server_stops_goes_back_too(under_service):
    """A connection whose passing ends after the server told its connections it stops (its
    first bytes were still arriving; a request half-read on another keeps the server up) is
    served and then passed back like the others: it used to stay, served by a server waiting
    for it to close, until the server was killed."""
    import array
    import socket
    import struct
    import time

    proc, channel, back, invocation, body, digits = under_service
    first = invocation + body
    slow, slow_ours = socket.socketpair()
    late, late_ours = socket.socketpair()
    with slow, slow_ours, late, late_ours, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sender:
        for sock in (slow, late, sender):
            sock.settimeout(30)
        _pass(channel, slow_ours, first[:-10])
        sender.connect("\0" + channel)  # the descriptor and the length of the first bytes ...
        sender.sendmsg([struct.pack("!I", len(first))], [
            (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [late_ours.fileno()]))])
        time.sleep(0.5)
        proc.terminate()
        time.sleep(1.0)  # ... and the bytes once the server has begun to stop
        sender.sendall(first)
        assert sender.recv(1) == b"1"
        slow.sendall(first[-10:])
        for client in (late, slow):
            head, answer = _read_answer(client)
            assert head.startswith("HTTP/1.1 200 ") and digits_of(answer) == digits
        for _ in range(2):  # both come back, nothing read from them
            returned, rest = _passed_back(back)
            returned.close()
            assert rest == b""
        proc.wait(10)


PID_HANDLERS = """
import os


def model_fn(model_dir):
    return None


def input_fn(body, content_type):
    return body


def predict_fn(data, model):
    return os.getpid()


def output_fn(prediction, accept):
    return str(prediction)
"""


def test_several_workers_are_dealt_connections_in_turn(tmp_path):
    """With two workers, connections go to one and the other in turn (a hash of the client's
    port left one worker with most of them)."""
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text(PID_HANDLERS)
    proc, port = start_server(model, tmp_path, "--workers", "2")
    try:
        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                       for _ in range(6)]
        pids = []
        for conn in connections:  # one after the other: the order they are accepted in
            conn.request("POST", "/invocations", body=b"x")
            pids.append(conn.getresponse().read())
        assert len(set(pids)) == 2 and pids[0::2] == [pids[0]] * 3 and \
            pids[1::2] == [pids[1]] * 3, pids
        for conn in connections:  # each stays with its worker
            conn.request("POST", "/invocations", body=b"x")
        assert [conn.getresponse().read() for conn in connections] == pids
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_connection_taken_is_taken_even_when_the_receiver_closed_first(monkeypatch):
    """Once the descriptor is sent, only the receiver's answer decides: a receiver that takes
    the connection and closes its channel before the sender goes on must count as taken (the
    sender used to fail sending nothing more, and dealt the connection out twice)."""
    import asyncio
    import socket
    import threading
    import uuid

    import connection_passing

    name = f"test-taken-{uuid.uuid4().hex}"
    listener = connection_passing.listener(name)
    received, closed = [], threading.Event()

    def receiver():
        channel, _ = listener.accept()
        with channel:
            received.append(asyncio.run(connection_passing.receive_connection(channel)))
        closed.set()

    real_sendmsg = socket.socket.sendmsg

    def sendmsg_then_wait(self, *args):  # the receiver runs to its end in between
        sent = real_sendmsg(self, *args)
        assert closed.wait(10)
        return sent

    monkeypatch.setattr(socket.socket, "sendmsg", sendmsg_then_wait)
    thread = threading.Thread(target=receiver)
    thread.start()
    client, ours = socket.socketpair()
    with client, ours, listener:
        assert asyncio.run(connection_passing.send_connection("\0" + name, ours.fileno(), b""))
        thread.join(10)
        sock, first = received[0]
        with sock:
            assert first == b""
            client.sendall(b"ping")
            assert sock.recv(4) == b"ping"  # the receiver's copy is the connection


@pytest.mark.parametrize("host, taken", [
    ("127.0.0.1", True), ("127.0.0.1:8080", True), ("localhost", True), ("LOCALHOST:1", True),
    ("[::1]", True), ("[::1]:8080", True), ("evil.example", False), ("127.0.0.1.evil", False),
    ("localhost.evil:80", False), ("", False), ("127.0.0.2", False),
])
def test_the_model_servers_own_host_check_takes_loopback_names_only(host, taken):
    import runtime_api

    assert runtime_api.loopback(host) is taken
