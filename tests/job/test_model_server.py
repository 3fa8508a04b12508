"""The model server over real HTTP: every input kind, and bad input answered with 4xx + message."""
import http.client
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    ready = tmp_path_factory.mktemp("server") / "port"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "src", "inference", "server.py"),
                             "--model-dir", str(trained[0]), "--port", "0", "--ready-file",
                             str(ready)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not (ready.exists() and ready.read_text()):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()  # then its output ends, and reading it cannot block
            pytest.fail(f"the model server did not start: {proc.communicate()[0]!r}")
        time.sleep(0.05)
    yield int(ready.read_text())
    proc.terminate()
    proc.wait(10)


def start_server(model_dir, folder, *options):
    """A model server of the test's own, with these command-line options: (process, port)."""
    ready = folder / "port"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "src", "inference", "server.py"),
                             "--model-dir", str(model_dir), "--port", "0", "--ready-file",
                             str(ready), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (ready.exists() and ready.read_text()):
        if proc.poll() is not None or time.time() > deadline:
            exited = proc.poll()
            proc.kill()
            proc.wait(10)
            pytest.fail(f"the model server did not start within 60 s (exit code {exited})")
        time.sleep(0.05)
    return proc, int(ready.read_text())


@pytest.fixture(scope="module")
def digits(prepared):
    with np.load(prepared / "test" / "test.npz") as data:
        return data["images"][:40], data["labels"][:40]


def call(port, body, content_type="application/json", accept="application/json",
         method="POST", path="/invocations"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers={"Content-Type": content_type,
                                                   "Accept": accept})
    response = conn.getresponse()
    result = response.status, response.getheader("Content-Type"), response.read()
    conn.close()
    return result


def digits_of(body):
    return [p["digit"] for p in json.loads(body)["predictions"]]


def picture(image28, fmt, size=280, dark_on_light=True, mode="L"):
    img = Image.fromarray(255 - image28 if dark_on_light else image28).resize((size, size))
    buf = io.BytesIO()
    img.convert(mode).save(buf, fmt)
    return buf.getvalue()


def test_ping(server):
    assert call(server, None, method="GET", path="/ping")[0] == 200


def test_json_batch_and_csv_answers(server, digits):
    images, labels = digits
    status, ctype, body = call(server, json.dumps(images.tolist()))
    assert status == 200 and ctype == "application/json"
    assert np.mean(np.array(digits_of(body)) == labels) >= 0.9
    status, ctype, body = call(server, json.dumps(images.tolist()), accept="text/csv")
    assert status == 200 and ctype == "text/csv"
    rows = [line.split(",") for line in body.decode().splitlines()]
    assert len(rows) == 40 and all(len(r) == 11 for r in rows)
    assert [int(r[0]) for r in rows] == digits_of(call(server, json.dumps(images.tolist()))[2])


def test_csv_and_npy_requests(server, digits):
    images, labels = digits
    csv = "\n".join(",".join(str(v) for v in img.reshape(784)) for img in images[:10])
    status, _, body = call(server, csv, "text/csv")
    assert status == 200 and np.mean(np.array(digits_of(body)) == labels[:10]) >= 0.8
    buf = io.BytesIO()
    np.save(buf, images[:10])
    status, _, body = call(server, buf.getvalue(), "application/x-npy")
    assert status == 200 and digits_of(body) == digits_of(
        call(server, json.dumps(images[:10].tolist()))[2])


@pytest.mark.parametrize("fmt,ctype,size,dark,mode", [
    ("PNG", "image/png", 280, True, "L"), ("JPEG", "image/jpeg", 500, True, "RGB"),
    ("PNG", "image/png", 28, False, "L"), ("PNG", "image/png", 64, True, "RGBA")])
def test_pictures_of_any_size_are_read_the_mnist_way(server, digits, fmt, ctype, size, dark,
                                                    mode):
    images, labels = digits
    correct = sum(digits_of(call(server, picture(img, fmt, size, dark, mode), ctype)[2]) ==
                  [label] for img, label in zip(images[:20], labels[:20]))
    assert correct >= 17


BAD = [
    (b"", "application/json", 400, "empty"),
    (b"{oops", "application/json", 400, "not valid JSON"),
    (b'"a string"', "application/json", 400, "rectangular array of numbers"),
    (b'{"pixels": []}', "application/json", 400, "instances"),
    (json.dumps([0.1] * 100).encode(), "application/json", 400, "cannot read shape [100]"),
    (json.dumps([[[0.1] * 28] * 28] * 2 + [[[0.1] * 28] * 27]).encode(), "application/json",
     400, "rectangular"),
    (json.dumps(["x"] * 784).encode(), "application/json", 400, "numbers"),
    (json.dumps([None] * 784).encode(), "application/json", 400, "NaN"),
    (b"[" + b",".join([b"NaN"] * 784) + b"]", "application/json", 400, "NaN"),
    (b"[" + b",".join([b"Infinity"] * 784) + b"]", "application/json", 400, "NaN or infinite"),
    (json.dumps([-3] * 784).encode(), "application/json", 400, "0-1 or 0-255"),
    (json.dumps([256] * 784).encode(), "application/json", 400, "0-1 or 0-255"),
    (json.dumps([[0] * 784] * 1001).encode(), "application/json", 413, "at most 1000"),
    (b"\x93NUMPY\x01\x00", "application/x-npy", 400, "not a valid .npy"),
    (b"not numpy at all", "application/x-npy", 400, "not a valid .npy"),
    (b"1,2,3\n4,5,6\n", "text/csv", 400, "cannot read shape [2, 3]"),
    (b"1,2,x\n", "text/csv", 400, "not a number"),
    (b"1,2\n3\n", "text/csv", 400, "different numbers of values"),
    (b"\n\n", "text/csv", 400, "no rows"),
    (b"\x89PNG\r\n\x1a\n truncated", "image/png", 400, "not a readable PNG or JPEG"),
    (b"GIF89a", "image/jpeg", 400, "not a readable PNG or JPEG"),
    (b"[1,2,3]", "text/plain", 415, "not supported"),
    (b"[1,2,3]", "application/xml", 415, "not supported"),
    (b"5", "application/json", 400, "no pixels"),  # a bare number
    (b"1" + b"0" * 400, "application/json", 400, "rectangular array of numbers"),  # 10**400
    (b"[" * 100000 + b"]" * 100000, "application/json", 400, "nested too deeply"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n", "image/png", 400,
     "not a readable PNG or JPEG"),  # never handed to Ghostscript
]


@pytest.mark.parametrize("body,ctype,status,message", BAD)
def test_bad_input_gets_4xx_with_a_message(server, body, ctype, status, message):
    got_status, got_type, got_body = call(server, body, ctype)
    assert got_status == status and got_type == "application/json"
    assert message in json.loads(got_body)["error"]


def test_blank_picture_wrong_accept_oversize_and_unknown_path(server):
    blank = io.BytesIO()
    Image.new("L", (100, 100), 255).save(blank, "PNG")
    status, _, body = call(server, blank.getvalue(), "image/png")
    assert status == 400 and "blank" in json.loads(body)["error"]
    status, _, body = call(server, json.dumps([0.5] * 784), accept="text/html")
    assert status == 406 and "text/html" in json.loads(body)["error"]
    status, _, body = call(server, b"[" + b"0," * (3 * 1024 * 1024) + b"0]")
    assert status == 413 and "6 MB" in json.loads(body)["error"]
    assert call(server, b"{}", path="/elsewhere")[0] == 404
    assert call(server, None, method="GET", path="/ping")[0] == 200  # still serving


def raw(port, request: bytes, timeout=10) -> bytes:
    """Send bytes as they are; everything the server answers until it closes (or goes quiet)."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                chunks.append(piece)
        except socket.timeout:
            pass
    return b"".join(chunks)


PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


def test_only_png_and_jpeg_pictures_are_decoded_and_big_ones_are_refused_first(server):
    for fmt in ("GIF", "BMP", "TIFF"):
        buffer = io.BytesIO()
        Image.new("L", (28, 28), 0).save(buffer, fmt)
        status, _, body = call(server, buffer.getvalue(), "image/png")
        assert status == 400 and "not a readable PNG or JPEG" in json.loads(body)["error"], fmt
    huge = io.BytesIO()
    Image.new("L", (4096, 4096), 255).save(huge, "PNG")  # 16 MP, a few KB compressed
    status, _, body = call(server, huge.getvalue(), "image/png")
    assert status == 413 and "4096x4096" in json.loads(body)["error"]  # before decoding


def test_channel_last_arrays_as_tensorflow_and_keras_send_them(server, digits):
    images, labels = digits
    first = call(server, json.dumps(images[:5].tolist()))
    last = call(server, json.dumps(images[:5, :, :, None].tolist()))
    assert first[0] == last[0] == 200
    assert digits_of(first[2]) == digits_of(last[2])
    assert sum(d == int(label) for d, label in zip(digits_of(last[2]), labels[:5])) >= 4


@pytest.mark.parametrize("request_bytes,status,message", [
    # a folded Transfer-Encoding hidden in Content-Type (obs-fold): smuggling, refused
    (b"POST /invocations HTTP/1.1\r\nContent-Type: application/json\r\n Transfer-Encoding: "
     b"chunked\r\nContent-Length: 4\r\n\r\n5\r\nxxxxx\r\n0\r\n\r\n", 400,
     "Unexpected whitespace after header value"),
    (b"POST /invocations HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, "Transfer-Encoding can't be present with Content-Length"),
    (b"POST /invocations HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n[1]x",
     400, "Duplicate Content-Length"),
    (b"POST /invocations HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400,
     "Invalid character in Content-Length"),
    (b"POST /invocations HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400,
     "Invalid character in Content-Length"),
    (b"POST /invocations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", 400,
     "Invalid character in chunk size"),
    # chunked must be the last coding; what follows is then no chunk size
    (b"POST /invocations HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400,
     "Invalid character in chunk size"),
    (b"POST /invocations HTTP/1.1\r\nContent-Length: 300000000\r\n\r\n", 413, "6 MB"),
])
def test_ambiguous_or_oversized_requests_are_refused_then_the_connection_closed(
        server, request_bytes, status, message):
    answer = raw(server, request_bytes + PING)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert message in answer.decode("latin-1")
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing after it was read as a request
    assert call(server, None, method="GET", path="/ping")[0] == 200


def test_a_body_of_exactly_6_mib_is_served_and_one_byte_more_is_not(server):
    limit = 6 * 1024 * 1024
    body = b"[" + b" " * (limit - 2) + b"]"
    status, _, answer = call(server, body)
    assert len(body) == limit and status == 400  # read whole, refused by the handler (empty)
    assert "6 MB" not in json.loads(answer)["error"]
    status, _, answer = call(server, body + b" ")
    assert status == 413 and "6291457 bytes is over the 6 MB limit" in json.loads(answer)["error"]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                       for part in (body[:limit // 2], body[limit // 2:] + b" ")) + b"0\r\n\r\n"
    answer = raw(server, b"POST /invocations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + chunked)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_an_oversized_body_is_never_buffered(server):
    """300 MB declared and sent: answered 413 from the header and the connection closed, so the
    sender is stopped long before 300 MB (the server used to read it all first)."""
    import socket
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nContent-Length: 314572800\r\n\r\n")
        sent = 0
        try:
            while sent < 314572800:
                sent += sock.send(b"\0" * 1048576)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        assert sent < 64 * 1048576  # the server stopped reading long before 300 MB


def test_a_request_that_stalls_half_way_gets_a_408(trained, tmp_path):
    """Headers or a body that stop arriving: refused after --read-timeout seconds without a
    byte (408, connection closed), where uvicorn alone would wait for ever."""
    proc, port = start_server(trained[0], tmp_path, "--workers", "1", "--read-timeout", "1")
    try:
        for partial in (b"POST /invocations HTTP/1.1\r\nContent-Le",  # inside its headers
                        b"POST /invocations HTTP/1.1\r\nContent-Length: 10\r\n\r\n[1,"):
            answer = raw(port, partial)  # sent, then silence: the server answers and closes
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b"nothing arrived for 1 s" in answer
        assert call(port, None, method="GET", path="/ping")[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)


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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_passed_connections_get_runtime_answers_and_other_requests_go_back(
        trained, digits, tmp_path, workers):
    """Under the local service: a client connection passed on --channel is answered as the
    runtime API answers (its invocations; its region and Host checked), and a request for
    anything else is passed back, with its bytes, on --service-channel."""
    import asyncio
    import socket
    import uuid

    import protocol

    name = uuid.uuid4().hex
    back = protocol.listener(f"test-service-{name}")  # stands in for the local service
    back.settimeout(30)
    proc, _ = start_server(
        trained[0], tmp_path, "--workers", workers, "--endpoint-name", "mnist", "--region",
        "eu-west-1", "--log-group-arn", "arn:log", "--channel", f"test-endpoint-{name}",
        "--service-channel", f"test-service-{name}")
    try:
        images, labels = digits
        body = json.dumps(images[:5].tolist()).encode()
        invocation = (b"POST /endpoints/mnist/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        client, ours = socket.socketpair()
        client.settimeout(30)
        with client, ours:  # the service read the head; the body follows on the socket
            last = int(workers) - 1  # each worker has its own channel: NAME-0, NAME-1, ...
            assert asyncio.run(protocol.send_connection(f"\0test-endpoint-{name}-{last}",
                                                        ours.fileno(), invocation))
            client.sendall(body)
            head, answer = _read_answer(client)
            assert head.startswith("HTTP/1.1 200 ")
            assert "x-amzn-invoked-production-variant: AllTraffic" in head
            assert "x-amzn-requestid: " in head.lower()
            assert digits_of(answer) == labels[:5].tolist()
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
            channel, _ = back.accept()
            with channel:
                returned, first = asyncio.run(protocol.receive_connection(channel))
            with returned:
                assert first == other
                returned.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")  # the "service" answers
            assert client.recv(100).startswith(b"HTTP/1.1 204 ")
    finally:
        back.close()
        proc.terminate()
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

    import protocol

    name = f"test-taken-{uuid.uuid4().hex}"
    listener = protocol.listener(name)
    received, closed = [], threading.Event()

    def receiver():
        channel, _ = listener.accept()
        with channel:
            received.append(asyncio.run(protocol.receive_connection(channel)))
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
        assert asyncio.run(protocol.send_connection("\0" + name, ours.fileno(), b""))
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
