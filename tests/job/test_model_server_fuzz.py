"""Property-based: thousands of generated requests, well and badly framed, to the model server:
every one gets an HTTP answer (never a dropped connection) and none is a 5xx."""
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rawhttp import FRAMINGS, exchange, frame, status_of  # noqa: E402

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
FRAMING = st.sampled_from(FRAMINGS)


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "BREW"]),
       path=st.sampled_from(["/invocations", "/ping", "/", "/x?y=1", "/invocations/../ping"]),
       content_type=CONTENT_TYPES, body=BODIES, framing=FRAMING)
def test_every_request_gets_an_answer_and_none_is_a_5xx(server, method, path,
                                                        content_type, body, framing):
    headers = [f"Content-Type: {content_type}"] if content_type else []
    answer = exchange(server, frame(method, path, headers, body, framing))
    assert answer.startswith(b"HTTP/1.1 "), (framing, answer[:100])  # answered, not dropped
    assert status_of(answer) < 500, answer[:300]
