"""The local SageMaker service: the route table (as moto's ``urls``) and the wiring of its parts.

Routes, first match wins: ``POST /`` with ``X-Amz-Target: SageMaker.*`` (the SageMaker API),
``AWSEvents.*`` (the EventBridge subset) or ``Logs_20140328.*`` (the CloudWatch Logs subset);
``POST /endpoints/{name}/invocations`` and ``.../async-invocations`` (sagemaker-runtime);
``GET /ping`` (health); unsigned ``GET /draw/{endpoint}`` (the drawing pad) and the run
browser's pages and forms (``/``,
``/executions``, ``/jobs``, ``/packages``, ``/endpoints``, ``/compare``, ``/compare-packages``,
``/confirm``), for browsers;
everything else is path-style S3.
"""
import asyncio
import functools
import gc
import hashlib
import io
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import uvicorn

from pipeline.config import ROOT
from pipeline.local import framing, web
from pipeline.local.endpoints import INVOCATION_LIMIT, Hosting
from pipeline.local.home import ServiceHome
from pipeline.local.jobs import JobRunner
from pipeline.local.backend import SageMakerBackend
from pipeline.local.backend.common import Tags
from pipeline.local.backend.hosting import HostingApi
from pipeline.local.backend.jobs import JobsApi
from pipeline.local.backend.pipelines import PipelinesApi
from pipeline.local.backend.records import Records
from pipeline.local.backend.registry import RegistryApi
from pipeline.local.events import EventsBackend, Outbox
from pipeline.local.logs import LogsBackend
from pipeline.local.responses import (EVENTS_MODEL, LOGS_MODEL, FileBody, JsonProtocol,
                                      S3Protocol, error)
from pipeline.local.runtime import RuntimeProtocol
from pipeline.local.s3 import LocalS3
from pipeline.local.search import SearchApi
from pipeline.local.shared import protocol, runtime_api
from pipeline.local.standalone import StandaloneJobs
from pipeline.local.store import Store
from pipeline.local.workflow.handlers import default_handlers, job_handlers
from pipeline.local.workflow.orchestrator import Orchestrator

DEFAULT_JOB_PYTHON = os.path.join(ROOT, ".venv-job", "bin", "python")
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


def _s3(svc, request):
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
_COMPILED = [(methods, re.compile(pattern), when, handler, limit)
             for methods, pattern, when, handler, limit in ROUTES]


METHODS = {"GET", "HEAD", "PUT", "POST", "DELETE"}
_INVOCATION = re.compile(r"/endpoints/([^/?]+)/invocations")
EXECUTOR_THREADS = 64  # API calls, S3 and pages in flight at once (SQLite and disk are quick)


class Headers(dict):
    """A request's headers by lower-cased name (HTTP's names are case-insensitive)."""

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def get(self, name, default=None):
        return super().get(name.lower(), default)

    def __contains__(self, name):
        return super().__contains__(name.lower())


class Request:
    """What a route handler reads: ``command``, ``url_path``, ``query``, ``headers``, ``body``
    (an S3 object's: (file, MD5))."""

    def __init__(self, scope):
        # the path as sent (percent-encoded): handlers decode the parts they take
        self.command, self.url_path = scope["method"], scope["raw_path"].decode("latin-1")
        self.query = scope["query_string"].decode("latin-1")
        headers = Headers()
        for name, value in scope["headers"]:
            name, value = name.decode("latin-1"), value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers, self.body, self.is_s3 = headers, b"", False


class ServiceApp:
    """The service as an ASGI application, served by uvicorn (the HTTP protocol is the model
    server's too): route, read the body under the route's limit, answer."""

    def __init__(self, service):
        self.service = service
        self.workers = ThreadPoolExecutor(EXECUTOR_THREADS, thread_name_prefix="api")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        request = Request(scope)
        try:
            status, headers, body = await self._answer(request, receive)
        except framing.ClientGone:
            return
        headers = dict(headers)
        headers.setdefault("Content-Length", str(len(body)))
        headers["x-amzn-RequestId"] = runtime_api.request_id()
        await send({"type": "http.response.start", "status": status, "headers": [
            (k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]})
        if isinstance(body, FileBody):  # an S3 object: streamed, never whole in memory
            await self._stream(body, send)
            return
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, body, send):
        loop = asyncio.get_running_loop()
        try:
            while True:
                piece = await loop.run_in_executor(self.workers, body.read)
                await send({"type": "http.response.body", "body": piece,
                            "more_body": bool(piece) and len(body) > 0})
                if not piece or len(body) == 0:
                    return
        finally:
            body.close()

    async def _answer(self, request, receive):
        try:
            if not runtime_api.loopback(request.headers.get("Host", "")):
                return _closing(runtime_api.foreign_host())
            foreign = runtime_api.foreign_region(request.headers.get("Authorization", ""),
                                                 request.query, self.service.region)
            if foreign is not None:  # AWS's answer from a regional endpoint
                return runtime_api.wrong_region(foreign, self.service.region)
            if request.command not in METHODS:
                status, headers, body = error("MethodNotAllowed", f"{request.command} is not "
                                              "supported; use GET, HEAD, PUT, POST or DELETE", 405)
                return status, {**headers, "Allow": "GET, HEAD, PUT, POST, DELETE"}, body
            return await self._route(request, receive)
        except framing.BadRequest as err:
            return _closing(_refusal(request, "BadRequest", str(err), 400))
        except framing.TooLarge as err:  # what is left of the body is never read
            code = "ValidationError" if request.url_path.endswith("/invocations") else \
                "EntityTooLarge" if request.is_s3 else "RequestEntityTooLarge"
            return _closing(_refusal(request, code, str(err), 413))
        except framing.ClientGone:
            raise
        except OSError as err:  # a full disk: nothing was stored; the client may try again
            return _closing(_refusal(request, "ServiceUnavailable", "the local service cannot "
                                     f"store this now: {err}", 503))
        except Exception as err:  # noqa: BLE001 - answer, log, keep serving
            traceback.print_exc()
            return error("InternalFailure", f"{type(err).__name__}: {err}", 500)

    async def _route(self, request, receive):
        svc = self.service
        for methods, pattern, when, handler, limit in _COMPILED:
            match = pattern.fullmatch(request.url_path)
            if match and (methods is None or request.command in methods) and \
                    (when is None or when(request)):
                args = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                request.body = await self._body(request, receive, limit)
                if asyncio.iscoroutinefunction(handler):
                    return await handler(svc, request, **args)
                return await self._in_worker(handler, svc, request, **args)
        request.is_s3 = True
        object_put = request.command == "PUT" and "/" in request.url_path.strip("/")
        request.body = await self._body(request, receive,
                                        S3_OBJECT_LIMIT if object_put else API_LIMIT, object_put)
        return await self._in_worker(_s3, svc, request)

    async def _body(self, request, receive, limit, s3_object=False):
        """The body under the route's limit; an S3 object's is spooled (file, MD5)."""
        aws_chunked = "aws-chunked" in request.headers.get("Content-Encoding", "")
        if s3_object:
            body = await framing.spool_body(receive, request.headers, limit,
                                            self.service.home.root)
            if aws_chunked:
                data = await self._in_worker(framing.read_chunked, body[0], limit)
                body = (io.BytesIO(data), hashlib.md5(data).hexdigest())
            return body
        body = await framing.read_body(receive, request.headers, limit)
        if aws_chunked:
            body = framing.read_chunked(io.BytesIO(body), limit)
        return body

    async def _in_worker(self, function, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            self.workers, functools.partial(function, *args, **kwargs))


def _refusal(request, code, message, status):
    """An error in the shape of the API the request was for (S3's XML, else JSON)."""
    if request.is_s3:
        return S3Protocol.error(code, message, status)
    return error(code, message, status)


def _closing(response):
    """The response, and the connection closed after it (its request is not read further)."""
    status, headers, body = response
    return status, {**headers, "Connection": "close"}, body


class LocalSageMaker:
    """The whole service. ``port=0`` picks a free loopback port."""

    def __init__(self, home, port=0, job_python=None, region=None, read_timeout=60.0,
                 **hosting_options):
        """``region``: the one region it serves, as a regional endpoint does (the home's, fixed
        at its first start; us-east-1 unless given then); ``read_timeout``: seconds a request
        may stall half-way before a 408; ``hosting_options``: Hosting's timeouts
        (invocation_timeout, health_seconds); both for tests that need them short."""
        self.home = ServiceHome(home)
        os.makedirs(self.home.root, exist_ok=True)
        self.region = region = home_region(self.home, region)
        self.sock = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # connections model servers pass back (requests other than their own invocations);
        # where abstract Unix sockets do not exist (not Linux), every runtime call is proxied
        self.channel_name = f"sagemaker-local-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            channels = [(protocol.listener(self.channel_name), None)]
        except OSError:
            self.channel_name, channels = None, []
        self.http = protocol.Server(uvicorn.Config(
            ServiceApp(self), loop="uvloop", lifespan="off",
            http=self._protocol_class(read_timeout),
            access_log=False, log_level="error", backlog=1024, timeout_keep_alive=60,
            server_header=False, date_header=False, proxy_headers=False),
            on_ready=self._serving, channels=channels)
        self._thread = None
        job_python = job_python or os.environ.get("MNIST_JOB_PYTHON", DEFAULT_JOB_PYTHON)
        if not os.path.exists(job_python):
            raise FileNotFoundError(f"job environment python {job_python} not found: run "
                                    "`make setup` (or set MNIST_JOB_PYTHON)")
        self.s3 = LocalS3(self.home.s3_root)
        self._build(Store(self.home.state_db), job_python, hosting_options)
        self.jobs.stop_leftovers()
        self.records.recover_interrupted()
        self.hosting.restore()

    def _build(self, store, job_python, hosting_options):
        """The parts, each built with what it needs (nothing set afterwards): the internal
        verbs first, then the processes that report through them, then the API families."""
        region = self.region
        tags, outbox = Tags(store), Outbox()
        self.records = records = Records(store, region, tags)
        job_env = {"AWS_ENDPOINT_URL_SAGEMAKER": self.url,
                   "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url,
                   "AWS_ENDPOINT_URL_S3": self.url, "AWS_ACCESS_KEY_ID": "local",
                   "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": region,
                   "AWS_EC2_METADATA_DISABLED": "true"}
        self.jobs = jobs = JobRunner(self.home, self.s3, job_python, job_env)
        self.hosting = Hosting(records, self.s3, self.home, job_python,
                               service_channel=self.channel_name, **hosting_options)
        registry = RegistryApi(store, region, tags, outbox)
        hosting_api = HostingApi(store, region, tags, registry, self.hosting)
        job_steps = job_handlers(records, jobs)
        self.orchestrator = Orchestrator(
            records, default_handlers(job_steps, registry, hosting_api), self._read_json, jobs)
        pipelines = PipelinesApi(store, region, tags, records, self.orchestrator, self.s3)
        self.backend = SageMakerBackend(
            region, pipelines, registry, hosting_api,
            JobsApi(store, region, tags, StandaloneJobs(job_steps, jobs)), tags,
            SearchApi(store, tags))
        self.store = store
        self.events = EventsBackend(store, region, pipelines.start_from_event, outbox)
        self.sagemaker = JsonProtocol(self.backend)
        self.json_apis = [self.sagemaker, JsonProtocol(self.events, EVENTS_MODEL),
                          JsonProtocol(LogsBackend(store, self.home, region), LOGS_MODEL)]
        self.runtime = RuntimeProtocol(self.backend, self.hosting, self.s3, store)
        self.s3_api = S3Protocol(self.s3)
        self.browser = web.RunBrowser(self.backend, self.s3, self.home, self.url)

    def _protocol_class(self, read_timeout):
        """The HTTP protocol with this service's read timeout and hand-over rule."""
        service = self

        class ServiceProtocol(protocol.Protocol):
            def hand_over(self, head):
                return service._hand_over(head)

        ServiceProtocol.read_timeout = read_timeout
        return ServiceProtocol

    def _hand_over(self, head):
        """Where a connection goes, from the first bytes of its next request: an invocation of
        an endpoint whose model server serves goes to that server, which answers it and the
        invocations after it itself."""
        line = protocol.request_line(head)
        if line is protocol.MORE or line is None:
            return line
        method, target = line
        match = _INVOCATION.fullmatch(target)
        if method != "POST" or match is None or "%" in match.group(1):
            return None  # (an encoded name is answered here: the model server takes its
        return self.hosting.channel_of(match.group(1))  # path as sent, and would pass it back)

    def _read_json(self, uri):
        with open(self.s3.path_of(uri)) as handle:
            return json.load(handle)

    def write_service_file(self):
        with open(self.home.service_file, "w") as handle:
            json.dump({"url": self.url, "port": self.port, "pid": os.getpid(),
                       "region": self.region}, handle)

    def _serving(self):
        """Once the loop serves: the asynchronous invocations a previous run accepted and did
        not answer are finished (runtime.RuntimeProtocol.resume)."""
        self._resuming = asyncio.get_running_loop().create_task(self.runtime.resume())

    def _settle(self):
        """Everything loaded so far lives as long as the service: out of the garbage
        collector's sight (gc.freeze), a full collection scans only what requests allocate,
        not 100,000 long-lived objects (a 70 ms pause mid-request otherwise)."""
        gc.collect()
        gc.freeze()

    def serve_forever(self):
        """Serve until SIGTERM or SIGINT, then close. uvicorn catches the signal, stops
        serving, then raises it again for the handler it found: a no-op, so that closing runs
        (hosting's model servers stopped, the service file removed)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: None)
        self._settle()
        self.write_service_file()
        try:
            self.http.run(sockets=[self.sock])
        finally:
            self.close()

    def start_background(self):
        """For tests and benchmarks in one process: serve from a thread."""
        self._settle()
        self._thread = threading.Thread(target=self.http.run, kwargs={"sockets": [self.sock]},
                                        daemon=True)
        self._thread.start()
        while not self.http.started and self._thread.is_alive():
            time.sleep(0.01)
        return self

    def close(self):
        self.http.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30)
        self.hosting.shutdown()
        self.jobs.stop_all()
        self.sock.close()
        for channel, _ in self.http.channels:
            channel.close()
        try:
            with open(self.home.service_file) as handle:
                if json.load(handle).get("pid") == os.getpid():
                    os.remove(self.home.service_file)
        except (OSError, ValueError):
            pass


REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


def home_region(home: ServiceHome, asked=None) -> str:
    """The region a home's resources belong to: recorded at its first start, and then the
    only one it serves (its ARNs name it); asking for another is refused."""
    try:
        with open(home.region_file) as handle:
            kept = handle.read().strip()
    except FileNotFoundError:
        kept = None
    if asked is not None and not REGION.fullmatch(asked):
        raise ValueError(f"{asked!r} is not a region name (such as us-east-1)")
    if kept and asked and asked != kept:
        raise ValueError(f"the home {home.root} keeps resources of {kept}, not {asked}: serve "
                         f"{kept} from it, or {asked} from another home")
    if not kept:
        kept = asked or "us-east-1"
        with open(home.region_file, "w") as handle:
            handle.write(kept + "\n")
    return kept


def serve(home, port=0, job_python=None, region=None):
    try:
        service = LocalSageMaker(home, port, job_python, region)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"local SageMaker serving {service.region} on {service.url} (home "
          f"{service.home.root})", flush=True)
    service.serve_forever()
    sys.exit(0)
