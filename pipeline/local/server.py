"""The local SageMaker service: routes HTTP requests to the protocols, and wires the parts.

Routes: ``POST /`` with ``X-Amz-Target: SageMaker.*`` (the SageMaker API);
``POST /endpoints/{name}/invocations`` (sagemaker-runtime); ``GET /ping`` (health);
unsigned ``GET /`` and ``GET /draw/{endpoint}`` (the run browser and the drawing pad, for
browsers); everything else is path-style S3.
"""
import json
import os
import signal
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.local.endpoints import Hosting
from pipeline.local.executor import Executor
from pipeline.local.jobs import JobRunner
from pipeline.local.launcher import ROOT, SERVICE_FILE
from pipeline.local.models import SageMakerBackend
from pipeline.local.responses import (RuntimeProtocol, S3Protocol, SageMakerProtocol,
                                      decode_aws_chunked, error)
from pipeline.local.s3 import LocalS3
from pipeline.local.store import Store
from pipeline.local import web

DEFAULT_JOB_PYTHON = os.path.join(ROOT, ".venv-job", "bin", "python")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service = None  # the LocalSageMaker instance, set per server class

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            body = bytes(data)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "aws-chunked" in self.headers.get("Content-Encoding", ""):
            body = decode_aws_chunked(body)
        return body

    def _reply(self, response):
        status, headers, body = response
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        headers = dict(headers)
        headers.setdefault("Content-Length", str(len(body)))
        headers["x-amzn-RequestId"] = "local"
        lines += [f"{k}: {v}" for k, v in headers.items()]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(payload + (body if self.command != "HEAD" else b""))

    def _route(self):
        parsed = urllib.parse.urlsplit(self.path)
        body = self._body()
        target = self.headers.get("X-Amz-Target")
        svc = self.service
        if target:
            return svc.sagemaker.handle(target, body)
        parts = parsed.path.strip("/").split("/")
        if self.command == "POST" and len(parts) == 3 and parts[0] == "endpoints" and \
                parts[2] == "invocations":
            return svc.runtime.invoke(urllib.parse.unquote(parts[1]), body,
                                      self.headers.get("Content-Type", "application/json"),
                                      self.headers.get("Accept", "application/json"))
        if parsed.path == "/ping":
            return 200, {"Content-Type": "application/json"}, b'{"status": "ok"}'
        if self.command == "GET" and "Authorization" not in self.headers:  # a browser, not S3
            html = {"Content-Type": "text/html; charset=utf-8"}
            if parsed.path in ("/", "/ui"):
                return 200, html, web.index(svc.store)
            if len(parts) == 2 and parts[0] == "draw":
                return 200, html, web.draw(urllib.parse.unquote(parts[1]))
        return svc.s3_api.handle(self.command, urllib.parse.unquote(parsed.path),
                                 urllib.parse.parse_qs(parsed.query), body)

    def _handle(self):
        try:
            self._reply(self._route())
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as err:  # noqa: BLE001 - answer, log, keep serving
            import traceback
            traceback.print_exc()
            self._reply(error("InternalFailure", f"{type(err).__name__}: {err}", 500))

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # a real bug: keep its traceback


class LocalSageMaker:
    """The whole service. ``port=0`` picks a free loopback port."""

    def __init__(self, home, port=0, job_python=None, region="us-east-1"):
        self.home = os.path.abspath(home)
        os.makedirs(self.home, exist_ok=True)
        handler = type("BoundHandler", (Handler,), {"service": self})
        self.httpd = _Server(("127.0.0.1", port), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        job_python = job_python or os.environ.get("MNIST_JOB_PYTHON", DEFAULT_JOB_PYTHON)
        if not os.path.exists(job_python):
            raise FileNotFoundError(f"job environment python {job_python} not found: run "
                                    "`make setup` (or set MNIST_JOB_PYTHON)")
        self.store = Store(os.path.join(self.home, "state.db"))
        self.s3 = LocalS3(os.path.join(self.home, "s3"))
        self.backend = SageMakerBackend(self.store, region)
        job_env = {"AWS_ENDPOINT_URL_SAGEMAKER": self.url,
                   "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url,
                   "AWS_ENDPOINT_URL_S3": self.url, "AWS_ACCESS_KEY_ID": "local",
                   "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": region,
                   "AWS_EC2_METADATA_DISABLED": "true"}
        self.jobs = JobRunner(self.home, self.s3, job_python, job_env)
        self.executor = Executor(self.backend, self.jobs, self.s3)
        self.hosting = Hosting(self.backend, self.s3, self.home, job_python)
        self.backend.executor, self.backend.hosting = self.executor, self.hosting
        self.sagemaker = SageMakerProtocol(self.backend)
        self.runtime = RuntimeProtocol(self.backend, self.hosting)
        self.s3_api = S3Protocol(self.s3)
        self.executor.recover()
        self.hosting.restore()

    def write_service_file(self):
        with open(os.path.join(self.home, SERVICE_FILE), "w") as handle:
            json.dump({"url": self.url, "port": self.port, "pid": os.getpid()}, handle)

    def serve_forever(self):
        self.write_service_file()
        try:
            self.httpd.serve_forever()
        finally:
            self.close()

    def start_background(self):
        """For tests in one process: serve from a thread."""
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        return self

    def close(self):
        self.hosting.shutdown()
        self.httpd.server_close()
        path = os.path.join(self.home, SERVICE_FILE)
        try:
            with open(path) as handle:
                if json.load(handle).get("pid") == os.getpid():
                    os.remove(path)
        except (OSError, ValueError):
            pass


def serve(home, port=0, job_python=None):
    service = LocalSageMaker(home, port, job_python)

    def stop(signum, frame):
        threading.Thread(target=service.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"local SageMaker serving on {service.url} (home {service.home})", flush=True)
    service.serve_forever()
    sys.exit(0)
