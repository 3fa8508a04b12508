"""Property-based: thousands of generated requests, well and badly framed, to the model server:
every one gets an HTTP answer (never a dropped connection) and none is a 5xx."""
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_model_server import server  # noqa: F401 - the running model server fixture

pytestmark = pytest.mark.slow

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=30)
BODIES = st.one_of(st.binary(max_size=3000),
                   JSON_VALUES.map(lambda v: repr(v).replace("'", '"').encode()),
                   st.lists(st.lists(st.integers(0, 255), min_size=784, max_size=784),
                            min_size=1, max_size=3).map(lambda v: str(v).encode()),
                   st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b))
CONTENT_TYPES = st.sampled_from(["application/json", "application/x-npy", "text/csv",
                                 "image/png", "image/jpeg", "text/plain", "", "a/b; x=y"])
FRAMING = st.sampled_from(["length", "chunked", "both", "short", "negative", "folded",
                           "bad-chunk", "none"])


def frame(method, path, content_type, body, framing):
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    if framing in ("length", "both"):
        head.append(f"Content-Length: {len(body)}")
    if framing == "short":
        head.append(f"Content-Length: {len(body) + 10}")
    if framing == "negative":
        head.append("Content-Length: -1")
    if framing in ("chunked", "both", "bad-chunk"):
        head.append("Transfer-Encoding: chunked")
    if framing == "folded":
        head.append(" Transfer-Encoding: chunked")
    payload = body
    if framing in ("chunked", "both"):
        payload = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    if framing == "bad-chunk":
        payload = b"zz\r\n" + body
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def exchange(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)  # the server sees the end of what we send
        except OSError:  # it answered and closed before reading it all: fine, read that
            pass
        answer = b""
        try:
            while piece := sock.recv(65536):
                answer += piece
        except ConnectionResetError:  # closed with our unread bytes pending: keep the answer
            pass
    return answer


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "BREW"]),
       path=st.sampled_from(["/invocations", "/ping", "/", "/x?y=1", "/invocations/../ping"]),
       content_type=CONTENT_TYPES, body=BODIES, framing=FRAMING)
def test_every_request_gets_an_answer_and_none_is_a_5xx(server, method, path,  # noqa: F811
                                                        content_type, body, framing):
    answer = exchange(server, frame(method, path, content_type, body, framing))
    assert answer.startswith(b"HTTP/1.1 "), (framing, answer[:100])  # answered, not dropped
    status = int(answer.split(b" ", 2)[1])
    assert status < 500, answer[:300]
