"""The local SageMaker service: its parts wired together (state, jobs, hosting, the APIs), served
by uvicorn on one loopback port (the routes: ``urls``; the ASGI application: ``app``); and the
runtime connections it passes to model servers (``_hand_over``).
"""
import asyncio
import gc
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import sys
import threading
import time

import uvicorn

from pipeline.config import ROOT
from pipeline.local import web
from pipeline.local.app import ServiceApp
from pipeline.local.endpoints import Hosting
from pipeline.local.home import ServiceHome
from pipeline.local.jobs import JobRunner
from pipeline.local.backend import SageMakerBackend
from pipeline.local.backend.common import Tags
from pipeline.local.backend.hosting import HostingApi
from pipeline.local.backend.jobs import JobsApi
from pipeline.local.backend.pipelines import PipelinesApi
from pipeline.local.backend.records import Records
from pipeline.local.backend.registry import RegistryApi
from pipeline.local.backend.tuning import TuningApi
from pipeline.local.events import EventsBackend, Outbox
from pipeline.local.logs import LogsBackend
from pipeline.local.responses import EVENTS_MODEL, LOGS_MODEL, JsonProtocol, S3Protocol
from pipeline.local.runtime import RuntimeProtocol
from pipeline.local.s3 import LocalS3
from pipeline.local.search import SearchApi
from pipeline.local.shared import passing, protocol
from pipeline.local.standalone import StandaloneJobs
from pipeline.local.store import Store
from pipeline.local.tuning.runner import TuningRunner
from pipeline.local.workflow.handlers import default_handlers, job_handlers
from pipeline.local.workflow.orchestrator import Orchestrator
from pipeline.local.workflow.tuning_step import TuningHandler

DEFAULT_JOB_PYTHON = os.path.join(ROOT, ".venv-job", "bin", "python")
_INVOCATION = re.compile(r"/endpoints/([^/?]+)/invocations")


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
            channels = [(passing.listener(self.channel_name), {})]
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
        self.read_only = None  # why the service cannot write its home, if it cannot
        self._recover()

    def _recover(self):
        """What a previous run left: its processes end, its interrupted work is recorded as
        Failed (to retry), its endpoints serve again. A home that cannot take that record (a
        full disk, a read-only file system) is served read-only instead: everything can be
        read, nothing changed, until the service starts again with room to write."""
        self.jobs.stop_leftovers()
        try:
            self.records.recover_interrupted()
        except (sqlite3.OperationalError, OSError) as err:
            self.read_only = f"recording the work a previous run left failed: {err}"
            self.hosting.restore(serve=False)
            return
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
        self.tuning = TuningApi(store, region, tags, TuningRunner(store, job_steps["Training"],
                                                                  jobs))
        self.orchestrator = Orchestrator(
            records, default_handlers(job_steps, registry, hosting_api,
                                      TuningHandler(records, self.tuning)), self._read_json, jobs)
        pipelines = PipelinesApi(store, region, tags, records, self.orchestrator, self.s3)
        self.backend = SageMakerBackend(
            region, pipelines, registry, hosting_api,
            JobsApi(store, region, tags, StandaloneJobs(job_steps, jobs)), tags,
            SearchApi(store, tags), self.tuning)
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

    def write_service_file(self) -> bool:
        """Where clients find the service (``--local``); False if it cannot be written."""
        try:
            with open(self.home.service_file, "w") as handle:
                json.dump({"url": self.url, "port": self.port, "pid": os.getpid(),
                           "region": self.region}, handle)
        except OSError as err:
            print(f"warning: {self.home.service_file} cannot be written ({err}): give "
                  f"clients --endpoint-url {self.url}", file=sys.stderr, flush=True)
            return False
        return True

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
    if service.read_only:
        print(f"warning: serving read-only: {service.read_only}. Everything can be read; "
              "whatever would change state is refused (503) until the service is started "
              "again with room to write in its home.", file=sys.stderr, flush=True)
    service.serve_forever()
    sys.exit(0)
