"""A model server under SageMaker's hosting contract: ``GET /ping``, ``POST /invocations``.

Serves a model directory (model.tar.gz extracted) with the handlers it carries in
``code/inference.py`` (or ``$SAGEMAKER_PROGRAM``): model_fn once, then input_fn, predict_fn and
output_fn per request. Bad input gets the handler's 4xx status and message as JSON; the server
keeps serving. Runs in the job environment (MXNet), one process per endpoint.

HTTP is uvicorn's (httptools' llhttp parser on uvloop): it refuses ambiguous framing (folded
headers, Content-Length with Transfer-Encoding, bad chunk sizes) with a 400 and closes the
connection. Predictions run one at a time on a worker thread, in arrival order, so the event
loop keeps answering ``/ping`` while a slow model works and no connection waits behind a
later one.

Under the local service it also answers the runtime route (``POST /endpoints/NAME/invocations``)
on connections the service passes to it (``--channel``): as the runtime API answers, with the
service's checks, and passing the connection back (``--service-channel``) for anything else.
"""
import argparse
import asyncio
import functools
import gc
import importlib.util
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import uvicorn

import connection_passing
import protocol
import runtime_api
import toolkit
from protocol import Protocol

MAX_BODY = 6 * 1024 * 1024  # SageMaker's real-time payload limit
DRAIN_LIMIT = 16 * 1024 * 1024  # an oversized body up to this is read and dropped, so that the
# client, still sending, gets to read the 413; a larger one is refused unread
IDLE_SECONDS = 60  # an idle keep-alive connection, or a request stalled half-way, is closed


def load_handlers(model_dir):
    program = os.environ.get("SAGEMAKER_PROGRAM", "inference.py")
    path = os.path.join(model_dir, "code", program)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no handler module {path}")
    spec = importlib.util.spec_from_file_location("user_inference", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))
    spec.loader.exec_module(module)
    return module


class ModelService:
    """The model and the functions that serve it (toolkit.py: the MXNet serving toolkit's
    rules for transform_fn, the three handlers and their defaults)."""

    def __init__(self, model_dir):
        self.handlers = toolkit.Handlers(load_handlers(model_dir), model_dir)

    def invoke(self, body, content_type, accept):
        """(status, content type, body bytes)"""
        try:
            result, out_type = self.handlers(body, content_type, accept)
        except Exception as err:  # noqa: BLE001 - every failure becomes an HTTP answer
            status = getattr(err, "status_code", None)
            if not isinstance(status, int) or not 400 <= status < 600:
                status = 500
            message = getattr(err, "message", None) or str(err) or type(err).__name__
            return status, "application/json", _error_body(message)
        if isinstance(result, str):
            result = result.encode("utf-8")
        return 200, out_type or "application/json", result


def _error_body(message):
    return json.dumps({"error": message}).encode()


class RuntimeRoute:
    """The runtime API's InvokeEndpoint for one endpoint, answered here for the local service."""

    def __init__(self, endpoint, region, log_group_arn, timeout):
        self.path = f"/endpoints/{endpoint}/invocations"
        self.region, self.log_group_arn, self.timeout = region, log_group_arn, timeout

    def passed_connections(self, service_channel) -> dict:
        """How the connections the service passes are served: their requests but ours go back
        to the service (each one, in order), and so do the connections when this server stops.
        Requests up to what an oversized body's drain reads are split from the next."""
        ours = ("POST", self.path)
        back = "\0" + service_channel

        def rule(head):
            line = protocol.request_line(head)
            if line is protocol.MORE:
                return line
            return None if line == ours else back
        return {"hand_over": rule, "hand_back": back, "close_unpassed": True,
                "split_limit": DRAIN_LIMIT + protocol.HEAD_LIMIT * 8}

    async def answer(self, app, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        if not runtime_api.loopback(headers.get("host", "")):
            return await _send(send, runtime_api.foreign_host(), close=True)
        foreign = runtime_api.foreign_region(headers.get("authorization", ""),
                                             scope["query_string"].decode("latin-1"),
                                             self.region)
        if foreign is not None:
            return await _send(send, runtime_api.wrong_region(foreign, self.region))
        try:
            body = await protocol.read_body(receive, headers.get("content-length"), MAX_BODY)
        except protocol.BodyTooLarge as err:
            return await _send(send, runtime_api.too_large(err.size),
                               close=not await _drained(receive, err))
        except protocol.ClientGone:
            return
        work = asyncio.get_running_loop().run_in_executor(
            app.worker, app.service.invoke, body,
            headers.get("content-type", "application/json"),
            headers.get("accept") or "application/json")
        try:
            status, content_type, out = await asyncio.wait_for(work, self.timeout)
        except asyncio.TimeoutError:
            return await _send(send, runtime_api.timed_out(self.log_group_arn))
        await _send(send, runtime_api.answer(status, content_type, out, self.log_group_arn))


class HostingApp:
    """The ASGI application: the two routes of the hosting contract (and, under the local
    service, the runtime route)."""

    def __init__(self, service, runtime=None):
        self.service, self.runtime = service, runtime
        # One worker: MXNet's engine is shared, and a single queue serves callers in order.
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="predict")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan events need nothing here
            return
        method, route = scope["method"], scope["path"]
        if self.runtime is not None and route == self.runtime.path and method == "POST":
            return await self.runtime.answer(self, scope, receive, send)
        if route == "/ping" and method == "GET":
            return await _reply(send, 200, "text/plain", b"")
        if route not in ("/ping", "/invocations"):
            return await _error(send, 404, f"no route {route}; use GET /ping or "
                                "POST /invocations")
        if route == "/ping" or method != "POST":
            return await _error(send, 405, f"{method} is not allowed on {route}")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await protocol.read_body(receive, headers.get("content-length"), MAX_BODY)
        except protocol.BodyTooLarge as err:
            return await _error(send, 413, f"request body of {err.size} bytes is over the 6 MB "
                                "limit", close=not await _drained(receive, err))
        except protocol.ClientGone:
            return
        answer = await asyncio.get_running_loop().run_in_executor(
            self.worker, self.service.invoke, body,
            headers.get("content-type", "application/json"),
            headers.get("accept") or "application/json")
        await _reply(send, *answer)


async def _drained(receive, err) -> bool:
    """After a body over the limit: whether the rest of it was read and dropped (up to
    DRAIN_LIMIT in all), so that the connection can serve the next request."""
    return not err.more or (err.size <= DRAIN_LIMIT and
                            await _drain(receive, DRAIN_LIMIT - err.read))


async def _drain(receive, budget) -> bool:
    """Read and drop the rest of a body; False if it is over ``budget`` or the client left."""
    while budget >= 0:
        message = await receive()
        if message["type"] != "http.request":
            return False
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return budget >= 0
    return False


# The model server writes answers with its own small function, not with the service's
# (server.ServiceApp): a merged version (one response writer and one invocation for both
# routes) cost about a third more CPU per request in bench-serve runs beside this code (0.46
# against 0.34 ms at concurrency 16 straight at the model server, AWS's stack unchanged in both
# runs). This is the hot path; keep it lean.
async def _reply(send, status, content_type, body, close=False):
    headers = [(b"content-type", content_type.encode("latin-1")),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send, status, message, close=False):
    await _reply(send, status, "application/json", _error_body(message), close)


async def _send(send, response, close=False):
    """A (status, headers, body) answer, with its request id."""
    status, headers, body = response
    headers = dict(headers, **{"Content-Length": str(len(body)),
                               "x-amzn-RequestId": runtime_api.request_id()})
    if close:
        headers["Connection"] = "close"
    await send({"type": "http.response.start", "status": status, "headers": [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]})
    await send({"type": "http.response.body", "body": body})


def run_worker(model_dir, sockets, on_ready, read_timeout=IDLE_SECONDS, runtime=None,
               dealt=None, passed=None, service_channel=None):
    """One worker: the model, and an event loop answering on the listening ``sockets`` (one
    worker alone), on the connections the server's acceptor deals it on ``dealt``, and on the
    ones the local service passes it on ``passed`` (answered for ``runtime``, the rest passed
    back to ``service_channel``)."""
    class WorkerProtocol(Protocol):
        """The protocol with this worker's read timeout."""

    WorkerProtocol.read_timeout = read_timeout
    http = WorkerProtocol
    app = HostingApp(ModelService(model_dir), runtime)
    # The model and the libraries live as long as the worker: out of the garbage collector's
    # sight, a full collection scans only what requests allocate (80,000 objects from MXNet
    # and numpy took 34 ms to scan, a stall in the latency tail).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(app, loop="uvloop",
                            http=http, lifespan="off", access_log=False, log_level="warning",
                            backlog=1024, timeout_keep_alive=IDLE_SECONDS,
                            server_header=False, date_header=False, proxy_headers=False)
    channels = [(dealt, {})] if dealt is not None else []
    if passed is not None:
        channels.append((passed, runtime.passed_connections(service_channel)))
    protocol.Server(config, on_ready, channels).run(sockets=sockets)


class LocalOptions:
    """What the local service tells a model server: the endpoint it serves, the region and log
    group its answers name, SageMaker's invocation timeout, and the channels connections are
    passed on (to this server's workers, and back to the service)."""

    FLAGS = ("endpoint_name", "region", "log_group_arn", "invocation_timeout", "channel",
             "service_channel")

    def __init__(self, args):
        for flag in self.FLAGS:
            setattr(self, flag, getattr(args, flag))

    def argv(self):
        return [part for flag in self.FLAGS for part in
                (f"--{flag.replace('_', '-')}", str(getattr(self, flag)))]

    def runtime(self):
        return RuntimeRoute(self.endpoint_name, self.region, self.log_group_arn,
                            self.invocation_timeout)


def serve(model_dir, port, host="127.0.0.1", ready_file=None, workers=1,
          read_timeout=IDLE_SECONDS, local=None):
    """Serve with ``workers`` processes (SageMaker's containers start one per vCPU); the
    ready file is written once all of them answer. If one of them ends, the others are stopped
    and the server exits, so that whoever watches it (the local hosting's health check) sees
    one failure, not a half-working server. ``local``: LocalOptions under the local service."""
    _size_compute_pools(workers)
    sock = socket.create_server((host, port), backlog=1024)
    bound = sock.getsockname()[1]
    # Under the local service, one channel per worker, NAME-0 .. NAME-(workers - 1): the
    # service deals the connections it passes out in turn.
    passed = [connection_passing.listener(f"{local.channel}-{n}")
              for n in range(workers)] if local else []

    def ready():
        print(f"serving {model_dir} on http://{host}:{bound} with {workers} worker(s)",
              flush=True)
        if ready_file:
            with open(ready_file, "w") as handle:
                handle.write(str(bound))

    if workers == 1:
        return run_worker(model_dir, [sock], ready, read_timeout, local and local.runtime(),
                          passed=passed[0] if passed else None,
                          service_channel=local and local.service_channel)
    # Several workers: this process accepts the connections and deals them to the workers in
    # turn, each through its own channel. (Workers listening on the port themselves, with
    # SO_REUSEPORT, got them by a hash of the client's port: 64 connections split 24 / 40 as
    # often as not, and the busier worker made the latency tail.) Each worker writes a byte to
    # the pipe once it answers.
    base = f"model-server-{os.getpid()}-{os.urandom(6).hex()}"
    dealt = [connection_passing.listener(f"{base}-{n}") for n in range(workers)]
    read_end, write_end = os.pipe()
    children = []
    for number in range(workers):
        own = [dealt[number].fileno()] + ([passed[number].fileno()] if passed else [])
        options = ["--dealt-fd", str(own[0])]
        if local:
            options += local.argv() + ["--passed-fd", str(own[1])]
        children.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--model-dir", model_dir,
             "--read-timeout", str(read_timeout), "--worker-ready-fd", str(write_end)] + options,
            pass_fds=[write_end] + own))
    os.close(write_end)
    for channel in dealt + passed:  # each worker holds its own
        channel.close()

    signal.signal(signal.SIGTERM, functools.partial(_stop_workers, children))
    signal.signal(signal.SIGINT, functools.partial(_stop_workers, children))
    with os.fdopen(read_end, "rb") as pipe:
        if len(pipe.read(workers)) < workers:  # a worker died before it was ready
            _end_with_workers(children)
    ready()
    threading.Thread(target=_end_with_workers, args=(children,), daemon=True).start()
    asyncio.run(_deal(sock, [f"\0{base}-{n}" for n in range(workers)]))


async def _deal(listener, channels):
    """Accept connections and pass each to the next worker (to the one after it if that one
    does not take it)."""
    loop = asyncio.get_running_loop()
    listener.setblocking(False)
    turns = itertools.cycle(range(len(channels)))

    async def give(conn, first):
        with conn:
            for turn in (first, (first + 1) % len(channels)):
                if await connection_passing.send_connection(channels[turn], conn.fileno(), b""):
                    return

    while True:
        conn, _ = await loop.sock_accept(listener)
        loop.create_task(give(conn, next(turns)))


_STOPPING = threading.Event()


def _stop_workers(children, signum, frame):
    """Each worker answers what it has begun and passes its connections back (under the local
    service) before the server exits."""
    _STOPPING.set()
    for child in children:
        child.terminate()
    for child in children:
        child.wait()
    os._exit(0)


def _end_with_workers(children):
    """Wait for any worker to end; then stop the others and end the server."""
    try:
        pid, status = os.wait()
    except ChildProcessError:  # ``stop`` reaped them all first
        return
    if _STOPPING.is_set():
        return  # asked to stop: ``stop`` waits for them all
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(f"worker {pid} exited with code {code}; stopping the server", flush=True)
    for child in children:
        if child.pid != pid:
            child.terminate()
            child.wait()
    os._exit(1)


def _size_compute_pools(workers):
    """The CPUs shared out among the workers' BLAS and OpenMP thread pools (unless set): pools
    sized for the whole machine spin on the cores the other workers need. Measured on 2 cores,
    2 workers: 0.51 -> 0.36 ms of CPU per request, 3,700 -> 5,000 requests/s."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)


def default_workers():
    """SageMaker's model-server setting, else one worker per CPU, as the containers do."""
    text = os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", "")
    return int(text) if text.isdigit() and int(text) > 0 else os.cpu_count() or 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="/opt/ml/model")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ready-file",
                        help="write the bound port here once serving")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes (default: $SAGEMAKER_MODEL_SERVER_WORKERS, "
                        "else one per CPU)")
    parser.add_argument("--read-timeout", type=float, default=IDLE_SECONDS,
                        help="seconds a request may stall half-way before a 408 (default 60)")
    local = parser.add_argument_group("under the local service (all or none)")
    local.add_argument("--endpoint-name", help="also answer POST /endpoints/NAME/invocations "
                       "as the runtime API does, on connections passed on --channel")
    local.add_argument("--region", help="the region requests must be signed for")
    local.add_argument("--log-group-arn", help="named by ModelError answers")
    local.add_argument("--invocation-timeout", type=float, default=60.0,
                       help="seconds a runtime invocation may take (SageMaker's 60)")
    local.add_argument("--channel", help="abstract Unix socket names connections arrive on: "
                       "NAME-0 .. NAME-(workers - 1), one per worker")
    local.add_argument("--service-channel", help="where other requests' connections go back")
    parser.add_argument("--worker-ready-fd", type=int, help=argparse.SUPPRESS)  # a worker's:
    parser.add_argument("--dealt-fd", type=int, help=argparse.SUPPRESS)  # its two channels
    parser.add_argument("--passed-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    given = [flag for flag in LocalOptions.FLAGS[:3] + LocalOptions.FLAGS[4:]
             if getattr(args, flag) is not None]
    if given and len(given) != 5:
        parser.error("--endpoint-name, --region, --log-group-arn, --channel and "
                     "--service-channel go together")
    local = LocalOptions(args) if given else None
    if args.worker_ready_fd is not None:
        def ready():
            os.write(args.worker_ready_fd, b"1")
            os.close(args.worker_ready_fd)
        passed = socket.socket(fileno=args.passed_fd) if args.passed_fd is not None else None
        return run_worker(args.model_dir, [], ready, args.read_timeout,
                          local and local.runtime(), socket.socket(fileno=args.dealt_fd),
                          passed, local and local.service_channel)
    serve(args.model_dir, args.port, args.host, args.ready_file, args.workers, args.read_timeout,
          local)


if __name__ == "__main__":
    main()
