"""Endpoint latency and throughput: ours (through the local service and directly) beside AWS's
own MXNet serving stack, serving the same model.

Runs the pipeline (5 epochs) on a fresh local service (its own process) to get a real
endpoint, then drives it with wrk, a bounded loopback load generator (a fixed duration per row,
after a warm-up of each target), with single-image JSON
requests (one real test digit, 784 values 0-255) at concurrency 1, 4, 8, 16 and 64: through
``POST /endpoints/NAME/invocations`` on the service (what boto3 calls), straight at the
endpoint's model server, and at multi-model-server 1.1.11 with sagemaker-mxnet-inference 1.5.5
(the stack of SageMaker's MXNet inference containers, started here on Java 17 the way the
container starts it) serving the same model directory with the same ``code/inference.py``.
The bench installs that stack into ``.venv-mms`` on first use. Run: `make bench-serve`.
"""
import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]


from common import machine  # noqa: E402
from pipeline.aws import Clients, install_pipeline  # noqa: E402
from pipeline.definition import PipelineConfig  # noqa: E402
from pipeline.local import launcher  # noqa: E402
from pipeline.local.home import ServiceHome  # noqa: E402

MNIST = os.path.join(ROOT, "data", "mnist")
CONCURRENCY = (1, 4, 8, 16, 64)
AWS = "AWS MMS + mxnet-inference"
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
"""


def first_test_digit():
    with gzip.open(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz")) as handle:
        raw = handle.read()
    return list(raw[16:16 + 784])


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def process_tree_cpu(roots):
    """CPU seconds used so far by the processes ``roots`` and all their descendants (Linux)."""
    tick, parent, cpu = os.sysconf("SC_CLK_TCK"), {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    inside = set(roots)
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in inside} - inside
        grew, inside = bool(more), inside | more
    return sum(cpu.get(pid, 0.0) for pid in inside)


def pids_running(text):
    """Processes whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if text.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def wrk(url, script, concurrency, seconds, roots=()):
    before = process_tree_cpu(roots)
    out = subprocess.run(["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}",
                          f"-d{seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    cpu_ms = (process_tree_cpu(roots) - before) * 1000 / max(requests, 1)
    return {"cpu_ms": cpu_ms, "p50": to_ms(pct["50"]), "p90": to_ms(pct["90"]),
            "p99": to_ms(pct["99"]),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "errors": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


MMS_VENV = os.path.join(ROOT, ".venv-mms")
MMS_CONFIG = """inference_address=http://127.0.0.1:{port}
management_address=http://127.0.0.1:{mgmt}
model_store={store}
load_models=model
enable_envvars_config=true
decode_input_request=false
"""


def free_port():
    """A free loopback port below 32768: multi-model-server rejects higher ones."""
    import random
    import socket
    for _ in range(100):
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise SystemExit("no free loopback port for multi-model-server")


def install_mms():
    """AWS's MXNet serving stack in its own environment (it pins its own dependencies)."""
    python = os.path.join(MMS_VENV, "bin", "python")
    if not os.path.exists(os.path.join(MMS_VENV, "bin", "multi-model-server")):
        print("installing multi-model-server + sagemaker-mxnet-inference into .venv-mms ...",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", MMS_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "-r",
                        os.path.join(ROOT, "requirements", "mms-bench.txt")], check=True)
    return os.path.join(MMS_VENV, "bin")


class AwsServingStack:
    """multi-model-server with SageMaker's MXNet handler service, as the container runs it:
    the model directory archived with model-archiver (no-archive), code/ on PYTHONPATH,
    SAGEMAKER_PROGRAM naming the handlers, default worker count."""

    def __init__(self, model_dir, work):
        self.bin = install_mms()
        self.store = os.path.join(work, "mms-store")
        os.makedirs(self.store, exist_ok=True)
        self.port, mgmt = free_port(), free_port()
        subprocess.run([os.path.join(self.bin, "model-archiver"), "--model-name", "model",
                        "--handler", "sagemaker_mxnet_serving_container.handler_service",
                        "--model-path", model_dir, "--export-path", self.store,
                        "--archive-format", "no-archive", "-f"], check=True)
        config = os.path.join(work, "mms.properties")
        with open(config, "w") as handle:
            handle.write(MMS_CONFIG.format(port=self.port, mgmt=mgmt, store=self.store))
        env = {**os.environ, "PATH": self.bin + os.pathsep + os.environ["PATH"],
               "PYTHONPATH": os.path.join(self.store, "model", "code"),
               "SAGEMAKER_PROGRAM": "inference.py"}
        self.env = env
        self.log = open(os.path.join(work, "mms.log"), "ab")
        subprocess.run([os.path.join(self.bin, "multi-model-server"), "--start", "--mms-config",
                        config, "--model-store", self.store], env=env, cwd=work,
                       stdout=self.log, stderr=subprocess.STDOUT, check=True)
        self.url = f"http://127.0.0.1:{self.port}/invocations"
        self._wait_ready()
        self.pids = pids_running(config)  # the Java frontend; its Python workers are its children

    def _wait_ready(self, timeout=120):
        import urllib.request
        body = json.dumps(first_test_digit()).encode()
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                request = urllib.request.Request(self.url, data=body, headers={
                    "Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    if json.loads(response.read())["predictions"][0]["digit"] == 7:
                        return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(1)
        self.log.flush()
        with open(self.log.name, errors="replace") as handle:
            tail = "".join(handle.readlines()[-15:])
        raise SystemExit(f"multi-model-server did not serve the model:\n{tail}")

    def stop(self):
        subprocess.run([os.path.join(self.bin, "multi-model-server"), "--stop"], env=self.env,
                       stdout=self.log, stderr=subprocess.STDOUT)
        self.log.close()


def deploy(url, home):
    """The pipeline run to its endpoint ``bench``: (the clients, the endpoint's config)."""
    clients = Clients.create(endpoint_url=url, local=True)
    install_pipeline(clients, PipelineConfig(bucket="sagemaker-local"), local=True)
    sm = clients.sagemaker
    arn = sm.start_pipeline_execution(PipelineName="mnist-mxnet", PipelineParameters=[
        {"Name": "MnistSourceUri", "Value": MNIST}, {"Name": "Epochs", "Value": "5"},
        {"Name": "EndpointName", "Value": "bench"}])["PipelineExecutionArn"]
    while True:
        status = sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
            "PipelineExecutionStatus"]
        if status != "Executing":
            break
        time.sleep(0.5)
    if status != "Succeeded":
        raise SystemExit(f"the pipeline {status}; see {ServiceHome(home).logs_dir}")
    return sm.describe_endpoint(EndpointName="bench")["EndpointConfigName"]


def verdicts(rows):
    """The serving targets, checked on this run's numbers: p99 at concurrency 16 and 64 no
    worse than AWS's stack, throughput at 16 at least 1.5x it, no errors."""
    by = {(n, c): r for n, c, r in rows}
    lines = []
    for ours in ("ours, via service route", "ours, model server"):
        checks = [(f"p99 at {c} <= AWS's ({by[(ours, c)]['p99']:.2f} vs "
                   f"{by[(AWS, c)]['p99']:.2f} ms)", by[(ours, c)]["p99"] <= by[(AWS, c)]["p99"])
                  for c in (16, 64)]
        ratio = by[(ours, 16)]["rps"] / by[(AWS, 16)]["rps"]
        checks.append((f"req/s at 16 >= 1.5x AWS's ({ratio:.2f}x)", ratio >= 1.5))
        errors = sum(by[(ours, c)]["errors"] for c in CONCURRENCY)
        sockets = [by[(ours, c)]["socket_errors"] for c in CONCURRENCY
                   if by[(ours, c)]["socket_errors"]]
        checks.append((f"no errors ({errors} non-2xx, socket errors: {sockets or 'none'})",
                       errors == 0 and not sockets))
        lines += [f"{ours}: {text}: {'met' if ok else 'NOT met'}" for text, ok in checks]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="duration of each row")
    parser.add_argument("--warmup", type=int, default=10,
                        help="seconds of load at concurrency 16 before a target's rows")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (make bench-serve does)", file=sys.stderr)
        return 2
    if shutil.which("java") is None:
        print("multi-model-server needs Java: apt-get install openjdk-17-jre-headless",
              file=sys.stderr)
        return 2
    home = tempfile.mkdtemp(prefix="bench-serve-")
    # its own process, as users run it (`run_pipeline.py local start`)
    process, info = launcher.spawn(home)
    try:
        rows = measure(args, home, info["url"], process.pid)
    finally:
        launcher.stop(home)
        shutil.rmtree(home, ignore_errors=True)
    print_table(args, rows)
    return 0


def measure(args, home, service_url, service_pid):
    """Deploy the model, then the rows: each target at each concurrency."""
    config = deploy(service_url, home)
    body = os.path.join(home, "digit.json")
    with open(body, "w") as handle:
        json.dump(first_test_digit(), handle)
    script = os.path.join(home, "post.lua")
    with open(script, "w") as handle:
        handle.write(LUA.format(body=body))
    model_dir = ServiceHome(home).model_dir("bench", config)
    with open(os.path.join(model_dir, ".port")) as handle:
        model_server_url = f"http://127.0.0.1:{handle.read().strip()}/invocations"
    with open(os.path.join(model_dir, ".pid")) as handle:
        model_server = int(handle.read())
    aws_stack = AwsServingStack(model_dir, home)
    targets = [("ours, via service route", f"{service_url}/endpoints/bench/invocations",
                [service_pid]),  # the model server is the service's child
               ("ours, model server", model_server_url, [model_server]),
               (AWS, aws_stack.url, aws_stack.pids)]
    rows = []
    try:
        for name, url, roots in targets:
            print(f"warming up and measuring {name} ...", file=sys.stderr, flush=True)
            wrk(url, script, 16, args.warmup)  # the JVM's JIT, caches, connections
            for concurrency in CONCURRENCY:
                rows.append((name, concurrency, wrk(url, script, concurrency, args.seconds,
                                                    roots)))
    finally:
        aws_stack.stop()
    return rows


def print_table(args, rows):
    print(f"machine: {machine()}")
    print(f"load: wrk, {args.warmup} s warm-up at concurrency 16 per target, then {args.seconds}"
          " s per row, single-image JSON (784 values), keep-alive")
    print("cpu ms/req: CPU time of the target's processes (all of them: service, model server "
          "workers; Java frontend and Python workers) per answered request\n")
    print("| target                     | conc | p50 ms | p90 ms | p99 ms |  req/s | cpu ms/req "
          "| errors |")
    print("|----------------------------|------|--------|--------|--------|--------|------------"
          "|--------|")
    for name, concurrency, r in rows:
        errors = str(r["errors"]) + (f" ({r['socket_errors']})" if r["socket_errors"] else "")
        print(f"| {name:<26} | {concurrency:>4} | {r['p50']:>6.2f} | {r['p90']:>6.2f} | "
              f"{r['p99']:>6.2f} | {r['rps']:>6.0f} | {r['cpu_ms']:>10.3f} | {errors:>6} |")
    print(f"\ntargets (each ours route against {AWS} in this run):")
    for line in verdicts(rows):
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
