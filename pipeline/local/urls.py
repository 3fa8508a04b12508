"""The service's routes, as moto's ``urls``: which handler answers a request, and how much body
it may send.

Routes, first match wins: ``POST /`` with ``X-Amz-Target: SageMaker.*`` (the SageMaker API),
``AWSEvents.*`` (the EventBridge subset) or ``Logs_20140328.*`` (the CloudWatch Logs subset);
``POST /endpoints/{name}/invocations`` and ``.../async-invocations`` (sagemaker-runtime);
``GET /ping`` (health); unsigned ``GET /draw/{endpoint}`` (the drawing pad) and the run
browser's pages and forms (``/``, ``/executions``, ``/jobs``, ``/packages``, ``/endpoints``,
``/compare``, ``/compare-packages``, ``/confirm``), for browsers; everything else is
path-style S3 (``s3``).
"""
import re
import urllib.parse

from pipeline.local import web
from pipeline.local.endpoints import INVOCATION_LIMIT

_HTML = {"Content-Type": "text/html; charset=utf-8"}


def _json_api(svc, request):
    """SageMaker (``SageMaker.*``), EventBridge (``AWSEvents.*``) or CloudWatch Logs
    (``Logs_20140328.*``), by the target's prefix."""
    target = request.headers["X-Amz-Target"]
    api = next((a for a in svc.json_apis if target.startswith(a.prefix)), svc.sagemaker)
    return api.handle(target, request.body)


async def _invoke(svc, request, endpoint):
    return await svc.runtime.invoke(endpoint, request.body,
                                    request.headers.get("Content-Type", "application/json"),
                                    request.headers.get("Accept", "application/json"))


async def _invoke_async(svc, request, endpoint):
    return await svc.runtime.invoke_async(endpoint, request.headers)


def _ping(svc, request):
    return 200, {"Content-Type": "application/json"}, b'{"status": "ok"}'


def _run_browser(svc, request):
    return svc.browser.get(request.url_path, urllib.parse.parse_qs(request.query))


def _run_browser_form(svc, request):
    return svc.browser.post(request.url_path, request.headers, request.body)


def _drawing_pad(svc, request, endpoint):
    return 200, _HTML, web.draw(endpoint)


def s3(svc, request):
    return svc.s3_api.handle(request.command, urllib.parse.unquote(request.url_path),
                             urllib.parse.parse_qs(request.query, keep_blank_values=True),
                             request.body, request.headers)


API_LIMIT = 10 * 1024 * 1024  # a JSON API request (a pipeline definition is at most 1 MB)
ASYNC_BODY_LIMIT = 128000  # InvokeEndpointAsync's Body (its input is read from S3)
FORM_LIMIT = 64 * 1024
S3_OBJECT_LIMIT = 5 * 1024 ** 3  # S3's largest single PUT


def _signed(request):
    return "Authorization" in request.headers


# (methods or None for any, path pattern, a predicate on the request or None, handler, body
# limit); a request no route takes is path-style S3. Coroutine handlers run on the event loop
# (the runtime: it only waits for a model server); the others on the API's worker threads.
ROUTES = [
    (None, r".*", lambda r: "X-Amz-Target" in r.headers, _json_api, API_LIMIT),
    ({"POST"}, r"/endpoints/(?P<endpoint>[^/]+)/invocations", None, _invoke, INVOCATION_LIMIT),
    ({"POST"}, r"/endpoints/(?P<endpoint>[^/]+)/async-invocations", None, _invoke_async,
     ASYNC_BODY_LIMIT),
    (None, r"/ping", None, _ping, 0),
    ({"GET"}, r"/draw/(?P<endpoint>[^/]+)", lambda r: not _signed(r), _drawing_pad, 0),
    ({"GET"}, r"/|/(executions|jobs|packages|endpoints|compare|compare-packages|confirm)(/.*)?",
     lambda r: not _signed(r), _run_browser, 0),
    ({"POST"}, r"/packages/approval|/endpoints/delete|/executions/(stop|retry)",
     lambda r: not _signed(r), _run_browser_form, FORM_LIMIT),
]
COMPILED = [(methods, re.compile(pattern), when, handler, limit)
             for methods, pattern, when, handler, limit in ROUTES]



# what a service that cannot write its home still answers (``LocalSageMaker.read_only``)
_READS = re.compile(r"(Describe|List|Search|Get|BatchDescribe|Filter|Test)[A-Z]")
_READING_HANDLERS = (_invoke, _ping, _run_browser, _drawing_pad)


def changes_state(handler, request) -> bool:
    """Whether a request may write the service's home (what a read-only service refuses)."""
    if handler is _json_api:
        return not _READS.match(request.headers["X-Amz-Target"].rpartition(".")[2])
    if handler is s3:
        return request.command not in ("GET", "HEAD")
    return handler not in _READING_HANDLERS
