"""The local SageMaker service: the route table (as moto's ``urls``) and the wiring of its parts.

Routes, first match wins: ``POST /`` with ``X-Amz-Target: SageMaker.*`` (the SageMaker API),
``AWSEvents.*`` (the EventBridge subset) or ``Logs_20140328.*`` (the CloudWatch Logs subset);
``POST /endpoints/{name}/invocations`` (sagemaker-runtime); ``GET /ping`` (health); unsigned
``GET /draw/{endpoint}`` (the drawing pad) and the run browser's pages and forms (``/``,
``/executions``, ``/jobs``, ``/packages``, ``/endpoints``, ``/compare``), for browsers;
everything else is path-style S3.
"""
import hashlib
import io
import json
import os
import re
import signal
import socket
import sys
import threading
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.config import ROOT
from pipeline.local import framing, web
from pipeline.local.endpoints import INVOCATION_LIMIT, Hosting
from pipeline.local.home import ServiceHome
from pipeline.local.jobs import JobRunner
from pipeline.local.models import SageMakerBackend
from pipeline.local.events import EventsBackend
from pipeline.local.logs import LogsBackend
from pipeline.local.responses import (EVENTS_MODEL, LOGS_MODEL, JsonProtocol, RuntimeProtocol,
                                      S3Protocol, error)
from pipeline.local.s3 import LocalS3
from pipeline.local.store import Store
from pipeline.local.workflow.handlers import default_handlers
from pipeline.local.workflow.orchestrator import Orchestrator

DEFAULT_JOB_PYTHON = os.path.join(ROOT, ".venv-job", "bin", "python")
_HTML = {"Content-Type": "text/html; charset=utf-8"}


def _json_api(svc, request):
    """SageMaker (``SageMaker.*``), EventBridge (``AWSEvents.*``) or CloudWatch Logs
    (``Logs_20140328.*``), by the target's prefix."""
    target = request.headers["X-Amz-Target"]
    api = next((a for a in svc.json_apis if target.startswith(a.prefix)), svc.sagemaker)
    return api.handle(target, request.body)


def _invoke(svc, request, endpoint):
    return svc.runtime.invoke(endpoint, request.body,
                              request.headers.get("Content-Type", "application/json"),
                              request.headers.get("Accept", "application/json"))


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
FORM_LIMIT = 64 * 1024
S3_OBJECT_LIMIT = 5 * 1024 ** 3  # S3's largest single PUT
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


def _signed(request):
    return "Authorization" in request.headers


# (methods or None for any, path pattern, a predicate on the request or None, handler, body
# limit); a request no route takes is path-style S3.
ROUTES = [
    (None, r".*", lambda r: "X-Amz-Target" in r.headers, _json_api, API_LIMIT),
    ({"POST"}, r"/endpoints/(?P<endpoint>[^/]+)/invocations", None, _invoke, INVOCATION_LIMIT),
    (None, r"/ping", None, _ping, 0),
    ({"GET"}, r"/draw/(?P<endpoint>[^/]+)", lambda r: not _signed(r), _drawing_pad, 0),
    ({"GET"}, r"/|/(executions|jobs|packages|endpoints|compare)(/.*)?",
     lambda r: not _signed(r), _run_browser, 0),
    ({"POST"}, r"/packages/approval|/endpoints/delete", lambda r: not _signed(r),
     _run_browser_form, FORM_LIMIT),
]
_COMPILED = [(methods, re.compile(pattern), when, handler, limit)
             for methods, pattern, when, handler, limit in ROUTES]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service = None  # the LocalSageMaker instance, set per server class
    timeout = 60  # per-connection read timeout: idle or stalled clients are dropped

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def _read_body(self, limit, s3_object=False):
        """The body under the route's limit; an S3 object's is spooled (file, MD5)."""
        if s3_object:
            body = framing.spool_body(self.rfile, self.headers, limit, self.service.home.root)
            if "aws-chunked" in self.headers.get("Content-Encoding", ""):
                data = framing.read_chunked(body[0], limit)
                body = (io.BytesIO(data), hashlib.md5(data).hexdigest())
            return body
        body = framing.read_body(self.rfile, self.headers, limit)
        if "aws-chunked" in self.headers.get("Content-Encoding", ""):
            body = framing.read_chunked(io.BytesIO(body), limit)
        return body

    def _reply(self, response):
        status, headers, body = response
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        headers = dict(headers)
        headers.setdefault("Content-Length", str(len(body)))
        headers["x-amzn-RequestId"] = str(uuid.uuid4())  # one per response, as AWS's
        lines += [f"{k}: {v}" for k, v in headers.items()]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(payload + (body if self.command != "HEAD" else b""))

    def _route(self):
        parsed = urllib.parse.urlsplit(self.path)
        self.url_path, self.query, self.is_s3 = parsed.path, parsed.query, False
        for methods, pattern, when, handler, limit in _COMPILED:
            match = pattern.fullmatch(parsed.path)
            if match and (methods is None or self.command in methods) and \
                    (when is None or when(self)):
                self.body = self._read_body(limit)
                args = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                return handler(self.service, self, **args)
        object_put = self.command == "PUT" and "/" in parsed.path.strip("/")
        self.is_s3 = True
        self.body = self._read_body(S3_OBJECT_LIMIT if object_put else API_LIMIT, object_put)
        return _s3(self.service, self)

    def _refusal(self, code, message, status):
        """An error in the shape of the API the request was for (S3's XML, else JSON)."""
        if getattr(self, "is_s3", False):
            return S3Protocol.error(code, message, status)
        return error(code, message, status)

    def _host_allowed(self) -> bool:
        """Only loopback names: a page on another site that rebinds its DNS name to 127.0.0.1
        sends its own name as Host, and is refused."""
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.lower() in LOOPBACK_HOSTS

    def _handle(self):
        try:
            framing.check_headers(self.headers)
            if not self._host_allowed():
                self.close_connection = True
                self._reply(error("AccessDenied", "the local service answers only requests "
                                  "addressed to a loopback host name", 403))
                return
            self._reply(self._route())
        except framing.BadRequest as err:
            self.close_connection = True
            self._reply(self._refusal("BadRequest", str(err), 400))
        except framing.TooLarge as err:
            self.close_connection = True  # what is left of the body is never read
            code = "ValidationError" if self.path.endswith("/invocations") else \
                "EntityTooLarge" if getattr(self, "is_s3", False) else "RequestEntityTooLarge"
            self._reply(self._refusal(code, str(err), 413))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as err:  # noqa: BLE001 - answer, log, keep serving
            traceback.print_exc()
            self._reply(error("InternalFailure", f"{type(err).__name__}: {err}", 500))

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

    def __getattr__(self, name):
        """Any other method: 405 (a client's mistake), not http.server's 501."""
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self):
        self.close_connection = True  # its body, if any, is not read
        status, headers, body = error("MethodNotAllowed", f"{self.command} is not supported; "
                                      "use GET, HEAD, PUT, POST or DELETE", 405)
        self._reply((status, {**headers, "Allow": "GET, HEAD, PUT, POST, DELETE"}, body))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: bursts of clients wait in the kernel

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # a real bug: keep its traceback


class LocalSageMaker:
    """The whole service. ``port=0`` picks a free loopback port."""

    def __init__(self, home, port=0, job_python=None, region="us-east-1", **hosting_options):
        """``hosting_options``: Hosting's timeouts (invocation_timeout, health_seconds), for
        tests that need them short."""
        self.home = ServiceHome(home)
        os.makedirs(self.home.root, exist_ok=True)
        handler = type("BoundHandler", (Handler,), {"service": self})
        self.httpd = _Server(("127.0.0.1", port), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        job_python = job_python or os.environ.get("MNIST_JOB_PYTHON", DEFAULT_JOB_PYTHON)
        if not os.path.exists(job_python):
            raise FileNotFoundError(f"job environment python {job_python} not found: run "
                                    "`make setup` (or set MNIST_JOB_PYTHON)")
        self.s3 = LocalS3(self.home.s3_root)
        self.backend = SageMakerBackend(Store(self.home.state_db), region)
        job_env = {"AWS_ENDPOINT_URL_SAGEMAKER": self.url,
                   "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url,
                   "AWS_ENDPOINT_URL_S3": self.url, "AWS_ACCESS_KEY_ID": "local",
                   "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": region,
                   "AWS_EC2_METADATA_DISABLED": "true"}
        jobs = JobRunner(self.home, self.s3, job_python, job_env)
        self.orchestrator = Orchestrator(self.backend, default_handlers(self.backend, jobs),
                                         self._read_json, jobs)
        self.hosting = Hosting(self.backend, self.s3, self.home, job_python, **hosting_options)
        self.backend.orchestrator, self.backend.hosting = self.orchestrator, self.hosting
        self.events = EventsBackend(self.backend.store, region, self.backend.start_from_event)
        self.backend.events = self.events
        self.sagemaker = JsonProtocol(self.backend)
        self.json_apis = [self.sagemaker, JsonProtocol(self.events, EVENTS_MODEL),
                          JsonProtocol(LogsBackend(self.backend.store, self.home, region),
                                       LOGS_MODEL)]
        self.runtime = RuntimeProtocol(self.backend, self.hosting)
        self.s3_api = S3Protocol(self.s3)
        self.browser = web.RunBrowser(self.backend, self.s3, self.home, self.url)
        self.backend.recover_interrupted()
        self.hosting.restore()

    def _read_json(self, uri):
        with open(self.s3.path_of(uri)) as handle:
            return json.load(handle)

    def write_service_file(self):
        with open(self.home.service_file, "w") as handle:
            json.dump({"url": self.url, "port": self.port, "pid": os.getpid()}, handle)

    def serve_forever(self):
        self.write_service_file()
        try:
            self.httpd.serve_forever()
        finally:
            self.close()

    def start_background(self):
        """For tests and benchmarks in one process: serve from a thread."""
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        return self

    def close(self):
        self.hosting.shutdown()
        self.httpd.server_close()
        try:
            with open(self.home.service_file) as handle:
                if json.load(handle).get("pid") == os.getpid():
                    os.remove(self.home.service_file)
        except (OSError, ValueError):
            pass


def serve(home, port=0, job_python=None):
    service = LocalSageMaker(home, port, job_python)

    def stop(signum, frame):
        threading.Thread(target=service.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"local SageMaker serving on {service.url} (home {service.home.root})", flush=True)
    service.serve_forever()
    sys.exit(0)
