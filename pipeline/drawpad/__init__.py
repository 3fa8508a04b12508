"""The drawing pad: a page to draw a digit and see an endpoint's prediction, live.

The same page is served by the local service (``/draw/<endpoint>``) and by
``run_pipeline.py draw`` for SageMaker endpoints (a loopback proxy that signs the calls with the
user's credentials); it posts to ``/endpoints/<name>/invocations`` on its own origin either way.
"""
import os
from html import escape

_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "draw.html")


def page(endpoint_name: str) -> bytes:
    with open(_PAGE, encoding="utf-8") as handle:
        return handle.read().replace("{{ENDPOINT}}", escape(endpoint_name)).encode("utf-8")
