"""The model server over real HTTP: every input kind, and bad input answered with 4xx + message."""
import http.client
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import digits_of, start_server


def call(port, body, content_type="application/json", accept="application/json",
         method="POST", path="/invocations"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers={"Content-Type": content_type,
                                                   "Accept": accept})
    response = conn.getresponse()
    result = response.status, response.getheader("Content-Type"), response.read()
    conn.close()
    return result


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
