"""Endpoint latency and throughput, through the local service's runtime route and directly.

Runs the pipeline (5 epochs) on a fresh local service to get a real endpoint, then drives it with
wrk, a bounded loopback load generator (a fixed duration per row), with single-image JSON
requests (one real test digit, 784 values 0-255) at concurrency 1, 4, 8 and 16: once through
``POST /endpoints/NAME/invocations`` on the service (what boto3 calls) and once straight at the
endpoint's model server (``POST /invocations``). Run: `make bench-serve`.
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
from pipeline.local.server import LocalSageMaker  # noqa: E402

MNIST = os.path.join(ROOT, "data", "mnist")
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


def wrk(url, script, concurrency, seconds):
    out = subprocess.run(["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}",
                          f"-d{seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"p50": to_ms(pct["50"]), "p90": to_ms(pct["90"]), "p99": to_ms(pct["99"]),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "errors": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def deploy(service):
    clients = Clients.create(endpoint_url=service.url, local=True)
    install_pipeline(clients, PipelineConfig(bucket="sagemaker-local"))
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
        raise SystemExit(f"the pipeline {status}; see {service.home}/logs")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="duration of each row")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (make bench-serve does)", file=sys.stderr)
        return 2
    home = tempfile.mkdtemp(prefix="bench-serve-")
    service = LocalSageMaker(home).start_background()
    rows = []
    try:
        deploy(service)
        body = os.path.join(home, "digit.json")
        with open(body, "w") as handle:
            json.dump(first_test_digit(), handle)
        script = os.path.join(home, "post.lua")
        with open(script, "w") as handle:
            handle.write(LUA.format(body=body))
        targets = [("service runtime route", f"{service.url}/endpoints/bench/invocations"),
                   ("model server, direct",
                    f"http://127.0.0.1:{service.hosting.port_of('bench')}/invocations")]
        for name, url in targets:
            wrk(url, script, 1, 1)  # warm-up
            for concurrency in (1, 4, 8, 16):
                rows.append((name, concurrency, wrk(url, script, concurrency, args.seconds)))
    finally:
        service.close()
        shutil.rmtree(home, ignore_errors=True)

    print(f"machine: {machine()}")
    print(f"load: wrk, {args.seconds} s per row, single-image JSON (784 values), keep-alive\n")
    print("| target                 | conc | p50 ms | p90 ms | p99 ms |  req/s | errors |")
    print("|------------------------|------|--------|--------|--------|--------|--------|")
    for name, concurrency, r in rows:
        errors = str(r["errors"]) + (f" ({r['socket_errors']})" if r["socket_errors"] else "")
        print(f"| {name:<22} | {concurrency:>4} | {r['p50']:>6.2f} | {r['p90']:>6.2f} | "
              f"{r['p99']:>6.2f} | {r['rps']:>6.0f} | {errors:>6} |")
    print("\ntargets: p50 <= 1.5 ms and p99 <= 10 ms at concurrency 1; >= 1,200 req/s at 8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
