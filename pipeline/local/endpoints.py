"""Hosting: one model-server process per endpoint, in the job environment (processes only).

Create and update start a new server from the endpoint config's model and switch traffic only
once its ``/ping`` answers; the old server stops after the switch (no gap, no mixed state). A
failed update leaves the old server serving. A client's runtime connection is passed to its
endpoint's server (``channel_of``: the server's workers in turn), which answers from then on;
calls that are not passed are proxied over keep-alive loopback connections, asynchronously, on
the service's event loop.
"""
import asyncio
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import httptools

from pipeline.config import ROOT
from pipeline.local.errors import ServiceError
from pipeline.local.home import ServiceHome, log_tail
from pipeline.local.processes import end_group, end_leftover
from pipeline.local.resources import ACCOUNT

INVOCATION_LIMIT = 6 * 1024 * 1024  # SageMaker's real-time payload limit
INVOCATION_TIMEOUT = 60.0  # SageMaker's: a model must answer within 60 s
HEALTH_SECONDS = 2.0  # how often every model server is checked (/ping)
UNHEALTHY_AFTER = 3  # failed checks in a row before a live but frozen server is replaced
RESTARTS = 2  # a dead server is replaced this many times before its endpoint is Failed
SERVER_SCRIPT = os.path.join(ROOT, "src", "inference", "server.py")
KEPT_CONTAINER = ".container.json"  # in an extracted model: the container it serves with


@dataclass
class ModelServer:
    config_name: str
    port: int
    process: subprocess.Popen
    model_dir: str = ""
    channels: list = field(default_factory=list)  # one per worker: client connections are
    turn: int = 0  # passed to them in turn
    failed_checks: int = 0
    restarts: int = 0
    idle: list = field(default_factory=list)  # keep-alive connections to it, not in use

    def stop(self):
        """Stop the server's whole process group: its workers too, even when the server
        itself already died (a kill -9 leaves them running)."""
        if not end_group(self.process.pid):
            return
        end_group(self.process.pid, signal.SIGCONT)  # a frozen (stopped) one, to end it
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        end_group(self.process.pid, signal.SIGKILL)  # whatever did not end in time


def _workers(env) -> int:
    """The model server's worker processes, as SageMaker's containers choose them:
    SAGEMAKER_MODEL_SERVER_WORKERS, else one per CPU (the service names each one's channel)."""
    text = env.get("SAGEMAKER_MODEL_SERVER_WORKERS", "")
    return int(text) if text.isdigit() and int(text) > 0 else os.cpu_count() or 1


def log_group_arn(region, endpoint) -> str:
    """The endpoint's CloudWatch log group, which SageMaker's ModelError names."""
    return f"arn:aws:logs:{region}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{endpoint}"


class HostingError(Exception):
    pass


class InvocationTimeout(HostingError):
    """The model did not answer within SageMaker's 60 seconds."""


class Hosting:
    """Model-server processes; endpoint state is reported through the internal verbs
    (``backend.records``)."""

    def __init__(self, records, s3, home: ServiceHome, job_python, start_timeout=120.0,
                 invocation_timeout=INVOCATION_TIMEOUT, health_seconds=HEALTH_SECONDS,
                 service_channel=None):
        """``service_channel``: the service's channel for connections passed back; with it,
        model servers take the runtime route's connections themselves."""
        self.records, self.s3, self.home, self.job_python = records, s3, home, job_python
        self.service_channel = service_channel
        self.start_timeout, self.invocation_timeout = start_timeout, invocation_timeout
        self.servers: Dict[str, ModelServer] = {}
        self.lock = threading.Lock()
        self._closing = threading.Event()
        self._starting: List[threading.Thread] = []  # deployments whose server is starting
        threading.Thread(target=self._watch, args=(health_seconds,), daemon=True,
                         name="model-server-health").start()

    # --- lifecycle ---
    def deploy(self, endpoint, config_name, reuse=False):
        thread = threading.Thread(target=self._deploy, args=(endpoint, config_name, reuse),
                                  daemon=True, name=f"deploy-{endpoint}")
        with self.lock:
            self._starting = [t for t in self._starting if t.is_alive()] + [thread]
        thread.start()

    def _deploy(self, endpoint, config_name, reuse=False):
        try:
            server = self._start(endpoint, config_name, reuse)
        except Exception as err:  # noqa: BLE001 - every failure is reported on the endpoint
            with self.lock:
                serving = self.servers.get(endpoint)
            if self._closing.is_set() or not self.records.endpoint_exists(endpoint):
                return  # closing: the endpoint stays as recorded, and comes back on restart
            if serving:  # failed update: the old model keeps serving
                self.records.endpoint_update_failed(
                    endpoint, serving.config_name, f"update to {config_name} failed: {err}")
            else:
                self.records.endpoint_failed(endpoint, str(err))
            return
        with self.lock:
            if self._closing.is_set() or not self.records.endpoint_exists(endpoint):
                server.stop()  # the service is closing, or the endpoint went while starting
                return
            old = self.servers.get(endpoint)
            self.servers[endpoint] = server
        try:
            self.records.endpoint_in_service(endpoint, config_name)
        except ServiceError:  # the endpoint was deleted while its model started
            self.remove(endpoint)
            return
        if old and old is not server:
            _retire(old)

    # --- health: dead servers are replaced, frozen ones too; an endpoint fails only when its
    # model cannot be served at all
    def _watch(self, every):
        while not self._closing.wait(every):
            with self.lock:
                servers = list(self.servers.items())
            for endpoint, server in servers:
                try:
                    self._check(endpoint, server)
                except Exception:  # noqa: BLE001 - the watch must outlive any one endpoint
                    traceback.print_exc()

    def _check(self, endpoint, server):
        exited = server.process.poll()
        if exited is None:
            if self._ping(server.port):
                server.failed_checks = 0
                return
            server.failed_checks += 1
            if server.failed_checks < UNHEALTHY_AFTER:
                return
            problem = f"the model server stopped answering /ping ({UNHEALTHY_AFTER} checks)"
        else:
            problem = f"the model server exited with code {exited}"
        server.stop()
        if server.restarts >= RESTARTS:
            self._give_up(endpoint, server, f"{problem}; restarted {RESTARTS} times")
            return
        try:
            fresh = self._start(endpoint, server.config_name, reuse=True)
        except Exception as err:  # noqa: BLE001
            self._give_up(endpoint, server, f"{problem}; restart failed: {err}")
            return
        fresh.restarts = server.restarts + 1
        with self.lock:
            if self.servers.get(endpoint) is server:
                self.servers[endpoint] = fresh
                return
        fresh.stop()  # deleted or updated meanwhile

    def _give_up(self, endpoint, server, reason):
        """The endpoint's model cannot be served: it is Failed, with the reason."""
        with self.lock:
            if self.servers.get(endpoint) is server:
                del self.servers[endpoint]
        if self.records.endpoint_exists(endpoint):
            self.records.endpoint_failed(endpoint, reason)

    def _start(self, endpoint, config_name, reuse=False) -> ModelServer:
        """A server for the endpoint on this config. As on AWS, a running endpoint keeps what
        it needs: once its model is extracted, a restart (``reuse``: after a crash, or of the
        service) serves that copy, even if the model, its config or its data were deleted
        since. A create or update extracts afresh."""
        model_dir = self.home.model_dir(endpoint, config_name)
        kept = self._kept_container(model_dir) if reuse else None
        if kept is not None:
            return self._spawn(model_dir, kept, endpoint, config_name)
        model = self.records.endpoint_model(config_name)
        if model is None:
            raise HostingError(f"endpoint config {config_name} or its model no longer exists")
        container = model["PrimaryContainer"]
        try:
            self._extract(model_dir, container)
            return self._spawn(model_dir, container, endpoint, config_name)
        except BaseException:
            shutil.rmtree(model_dir, ignore_errors=True)  # no half-extracted model left behind
            raise

    @staticmethod
    def _kept_container(model_dir):
        """The container an extracted model was started with, if it is whole."""
        try:
            with open(os.path.join(model_dir, KEPT_CONTAINER)) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def _extract(self, model_dir, container):
        if os.path.isdir(model_dir):
            shutil.rmtree(model_dir)
        os.makedirs(model_dir)
        archive = self.s3.path_of(container["ModelDataUrl"])
        if not os.path.isfile(archive):
            raise HostingError(f"model data {container['ModelDataUrl']} does not exist")
        with tarfile.open(archive) as tar:
            tar.extractall(model_dir, filter="data")
        with open(os.path.join(model_dir, KEPT_CONTAINER), "w") as handle:
            json.dump(container, handle)  # written last: the copy is whole

    def _spawn(self, model_dir, container, endpoint, config_name) -> ModelServer:
        ready = os.path.join(model_dir, ".port")
        if os.path.exists(ready):
            os.remove(ready)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAGEMAKER_")}
        env.update(container.get("Environment", {}))
        env["PYTHONUNBUFFERED"] = "1"
        log_path = self.home.endpoint_log(endpoint, config_name)
        argv = [self.job_python, SERVER_SCRIPT, "--model-dir", model_dir, "--port", "0",
                "--ready-file", ready]
        channels = []
        if self.service_channel:  # it answers the runtime route on connections passed to it
            channel = f"sagemaker-endpoint-{os.getpid()}-{secrets.token_hex(6)}"
            workers = _workers(env)
            channels = [f"\0{channel}-{number}" for number in range(workers)]
            argv += ["--workers", str(workers), "--endpoint-name", endpoint,
                     "--region", self.records.region,
                     "--log-group-arn", log_group_arn(self.records.region, endpoint),
                     "--invocation-timeout", str(self.invocation_timeout),
                     "--channel", channel, "--service-channel", self.service_channel]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        # Not tied to the spawning thread's life (PDEATHSIG would fire when it ends); the pid is
        # kept so that a restarted service can stop servers a crash left behind.
        with open(os.path.join(model_dir, ".pid"), "w") as handle:
            handle.write(str(process.pid))
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self._closing.is_set():  # the service is closing: no server outlives it
                ModelServer(config_name, 0, process).stop()
                raise HostingError("the service closed while the model server started")
            if process.poll() is not None:
                raise HostingError(f"the model server exited with code {process.returncode}: "
                                   f"{log_tail(log_path)}")
            if os.path.exists(ready):
                with open(ready) as handle:
                    text = handle.read().strip()
                if text and self._ping(int(text)):
                    return ModelServer(config_name, int(text), process, model_dir, channels)
            time.sleep(0.05)
        ModelServer(config_name, 0, process).stop()
        raise HostingError(f"the model server did not answer /ping within "
                           f"{self.start_timeout:.0f} s")

    @staticmethod
    def _ping(port) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def remove(self, endpoint):
        with self.lock:
            server = self.servers.pop(endpoint, None)
        if server:
            _retire(server)

    def _stop_leftovers(self):
        """Model servers of a previous service process that did not stop cleanly."""
        if not os.path.isdir(self.home.endpoints_dir):
            return
        for folder, _, files in os.walk(self.home.endpoints_dir):
            if ".pid" in files:
                try:
                    with open(os.path.join(folder, ".pid")) as handle:
                        pid = int(handle.read())
                except (OSError, ValueError):
                    continue
                end_leftover(pid, SERVER_SCRIPT.encode())

    def restore(self, serve=True):
        """After a restart: model servers a previous run left are stopped, and the endpoints
        come back with the config they had (unless not ``serve``: a home that cannot be
        written could not record them serving)."""
        self._stop_leftovers()
        if not serve:
            return
        for item in self.records.endpoints_to_restore():
            self.deploy(item["EndpointName"], item["EndpointConfigName"], reuse=True)

    def shutdown(self, start_wait=30.0):
        """Stop every model server, those still starting too (their deployments see the
        service closing and stop what they started: none outlives the service)."""
        self._closing.set()
        with self.lock:
            starting = list(self._starting)
        deadline = time.time() + start_wait
        for thread in starting:
            thread.join(max(0.0, deadline - time.time()))
        with self.lock:
            servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            server.stop()

    # --- runtime ---
    def channel_of(self, endpoint) -> Optional[str]:
        """The address to pass a client's connection to, if the endpoint's server takes it:
        its workers' in turn."""
        server = self.servers.get(endpoint)
        if server is None or not server.channels:
            return None
        server.turn = (server.turn + 1) % len(server.channels)
        return server.channels[server.turn]

    def port_of(self, endpoint) -> Optional[int]:
        server = self.servers.get(endpoint)
        return server.port if server else None

    async def invoke(self, endpoint, body, content_type, accept, timeout=None):
        """(status, content type, body) from the endpoint's model server; on the service's
        event loop, over keep-alive connections kept per server. ``timeout``: SageMaker's 60 s
        unless given (asynchronous invocations get longer)."""
        timeout = self.invocation_timeout if timeout is None else timeout
        server = self.servers.get(endpoint)
        if server is None:
            raise HostingError(f"endpoint {endpoint} has no running model server")
        request = (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                   f"{content_type}\r\nAccept: {accept}\r\nContent-Length: {len(body)}"
                   "\r\n\r\n").encode("latin-1") + body
        for attempt in range(2):
            conn = server.idle.pop() if server.idle else None
            try:
                if conn is None:
                    conn = await _Connection.open(server.port)
                async with asyncio.timeout(timeout):
                    answer, keep = await conn.exchange(request)
            except TimeoutError:  # not retried: the model had its time
                conn.close()
                raise InvocationTimeout(f"no answer within {timeout:.0f} s")
            except (OSError, httptools.HttpParserError) as err:  # e.g. one the server dropped
                if conn is not None:
                    conn.close()
                if attempt:
                    raise HostingError(f"the model server did not answer: {err}") from err
                continue
            if keep:
                server.idle.append(conn)
            else:
                conn.close()
            return answer


class _Connection:
    """A keep-alive loopback connection to a model server; answers parsed by httptools."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port):
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def exchange(self, request):
        """((status, content type, body), whether the connection may be used again)"""
        answer = _Answer()
        parser = answer.parser = httptools.HttpResponseParser(answer)
        self.writer.write(request)
        while not answer.complete:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionResetError("the model server closed the connection")
            parser.feed_data(data)
        return ((parser.get_status_code(), answer.content_type, bytes(answer.body)),
                answer.keep_alive)

    def close(self):
        self.writer.close()


class _Answer:
    """httptools' callbacks, collecting one answer."""

    def __init__(self):
        self.content_type, self.body, self.complete = "application/json", bytearray(), False
        self.parser, self.keep_alive = None, False

    def on_header(self, name, value):
        if name.lower() == b"content-type":
            self.content_type = value.decode("latin-1")

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # reset once the message is done


def _retire(server: ModelServer):
    """Stop a server that is no longer used and delete its extracted model."""
    server.stop()
    if server.model_dir:
        shutil.rmtree(server.model_dir, ignore_errors=True)
