"""Processing and training jobs as subprocesses under SageMaker's container contract.

A per-job directory stands in for ``/opt/ml``: inputs are placed where the container would see
them, every ``/opt/ml/...`` path in the entrypoint and arguments points into that directory, and
the job's Python is the job environment's (MXNet 1.9, numpy 1.23), not ours. Training follows the
SageMaker training toolkit: ``input/config/*.json``, ``input/data/<channel>``, ``SM_*`` variables,
the user script run with hyperparameters as flags, ``model/`` packed into ``model.tar.gz``, and
``output/failure`` turned into the FailureReason. Each job's output is kept as its log.
"""
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from pipeline.local.s3 import LocalS3

OPT_ML = "/opt/ml"
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Children end when the service ends (no orphaned jobs after a crash or kill)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    os.setsid()


@dataclass
class JobResult:
    exit_code: int
    failure_reason: Optional[str]
    seconds: float  # the whole job, staging and upload included
    process_start: Optional[float] = None  # the container process itself
    process_end: Optional[float] = None


class JobRunner:
    """Runs jobs for the service; ``env`` reaches every job (endpoint URLs, credentials)."""

    def __init__(self, home: str, s3: LocalS3, job_python: str, env: Dict[str, str]):
        self.home, self.s3, self.job_python, self.env = home, s3, job_python, env
        self.logs_dir = os.path.join(home, "logs")
        os.makedirs(self.logs_dir, exist_ok=True)
        self._running: Dict[str, subprocess.Popen] = {}

    def log_path(self, job_name: str) -> str:
        return os.path.join(self.logs_dir, f"{job_name}.log")

    def job_dir(self, job_name: str) -> str:
        return os.path.join(self.home, "jobs", job_name)

    def stop(self, job_name: str) -> bool:
        procs = [p for n, p in self._running.items() if n == job_name or n.startswith(job_name + "#")]
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return bool(procs)

    # --- helpers ---
    def _rewrite(self, value: str, root: str) -> str:
        """/opt/ml/... inside the container -> the job's stand-in directory."""
        if value == OPT_ML or value.startswith(OPT_ML + "/"):
            return root + value[len(OPT_ML):]
        return value

    def _spawn(self, key: str, argv: List[str], env: Dict[str, str], cwd: str, log) -> subprocess.Popen:
        if argv and argv[0] in ("python", "python3"):
            argv = [self.job_python] + argv[1:]
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self._running[key] = proc
        return proc

    def _wait(self, keys: List[str]) -> List[int]:
        codes = [self._running[k].wait() for k in keys]
        for k in keys:
            self._running.pop(k, None)
        return codes

    def _base_env(self, root: str) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "DMLC_"))}
        env.update(self.env)
        env["SM_OUTPUT_DIR"] = os.path.join(root, "output")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @staticmethod
    def _failure(root: str, file_name: str, code: int, log_path: str) -> str:
        path = os.path.join(root, "output", file_name)
        if os.path.isfile(path):
            with open(path, errors="replace") as handle:
                text = handle.read().strip()
            if text:
                return text[:1024]
        tail = ""
        if os.path.isfile(log_path):
            with open(log_path, errors="replace") as handle:
                lines = [l.rstrip() for l in handle.readlines() if l.strip()]
            tail = " | ".join(lines[-3:])
        if code < 0:
            return f"stopped by signal {-code}"
        return f"AlgorithmError: exit code {code}: {tail}"[:1024]

    # --- processing ---
    def run_processing(self, name: str, request: dict) -> JobResult:
        start = time.time()
        root = self.job_dir(name)
        os.makedirs(os.path.join(root, "output"), exist_ok=True)
        os.makedirs(os.path.join(root, "config"), exist_ok=True)
        with open(os.path.join(root, "config", "processingjobconfig.json"), "w") as handle:
            json.dump(request, handle, indent=1)
        for item in request.get("ProcessingInputs", []):
            s3_input = item.get("S3Input")
            if s3_input:
                self.s3.download(s3_input["S3Uri"], self._rewrite(s3_input["LocalPath"], root))
        outputs = request.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for item in outputs:
            os.makedirs(self._rewrite(item["S3Output"]["LocalPath"], root), exist_ok=True)
        app = request["AppSpecification"]
        argv = [self._rewrite(a, root) for a in app.get("ContainerEntrypoint", []) +
                app.get("ContainerArguments", [])]
        env = self._base_env(root)
        env.update(request.get("Environment", {}))
        log_path = self.log_path(name)
        with open(log_path, "ab") as log:
            process_start = time.time()
            self._spawn(name, argv, env, root, log)
            [code] = self._wait([name])
            process_end = time.time()
        if code != 0:
            return JobResult(code, self._failure(root, "message", code, log_path),
                             time.time() - start, process_start, process_end)
        for item in outputs:
            self.s3.upload_dir(self._rewrite(item["S3Output"]["LocalPath"], root),
                               item["S3Output"]["S3Uri"])
        return JobResult(0, None, time.time() - start, process_start, process_end)

    # --- training ---
    def run_training(self, name: str, request: dict,
                     on_metric: Callable[[str, float], None] = None) -> JobResult:
        start = time.time()
        root = self.job_dir(name)
        count = int(request["ResourceConfig"].get("InstanceCount", 1))
        hosts = [f"algo-{i + 1}" for i in range(count)]
        hps = request.get("HyperParameters", {})
        submit = _decode(hps.get("sagemaker_submit_directory", '""'))
        program = _decode(hps.get("sagemaker_program", '""'))
        if not submit or not program:
            return JobResult(2, "ClientError: sagemaker_submit_directory and sagemaker_program "
                                "hyperparameters are required (script mode)", 0.0)
        code_dir = os.path.join(root, "code")
        os.makedirs(code_dir, exist_ok=True)
        with tarfile.open(self.s3.path_of(submit)) as tar:
            tar.extractall(code_dir, filter="data")
        channels = {}
        for channel in request.get("InputDataConfig", []):
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            target = os.path.join(root, "input", "data", channel["ChannelName"])
            self.s3.download(uri, target)
            channels[channel["ChannelName"]] = target
        user_args = []
        for key, value in sorted(hps.items()):
            if not key.startswith("sagemaker_"):
                user_args += [f"--{key}", str(_decode(value))]
        model_dir = os.path.join(root, "model")
        os.makedirs(model_dir, exist_ok=True)
        os.makedirs(os.path.join(root, "output", "data"), exist_ok=True)
        config_dir = os.path.join(root, "input", "config")
        os.makedirs(config_dir, exist_ok=True)
        for file_name, body in (("hyperparameters.json", hps),
                                ("inputdataconfig.json",
                                 {c: {"TrainingInputMode": "File"} for c in channels}),
                                ("resourceconfig.json",
                                 {"current_host": hosts[0], "hosts": hosts})):
            with open(os.path.join(config_dir, file_name), "w") as handle:
                json.dump(body, handle)
        env = self._base_env(root)
        env.update(request.get("Environment", {}))
        env.update({
            "SM_MODEL_DIR": model_dir, "SM_INPUT_DIR": os.path.join(root, "input"),
            "SM_INPUT_CONFIG_DIR": config_dir,
            "SM_OUTPUT_DATA_DIR": os.path.join(root, "output", "data"),
            "SM_CHANNELS": json.dumps(sorted(channels)), "SM_HPS": json.dumps(
                {k: _decode(v) for k, v in hps.items() if not k.startswith("sagemaker_")}),
            "SM_HOSTS": json.dumps(hosts), "SM_NUM_CPUS": str(os.cpu_count() or 1),
            "SM_NUM_GPUS": "0", "SM_USER_ENTRY_POINT": program, "SM_MODULE_DIR": submit,
            "SM_USER_ARGS": json.dumps(user_args),
        })
        for channel, path in channels.items():
            env[f"SM_CHANNEL_{channel.upper()}"] = path
        argv = [self.job_python, os.path.join(code_dir, program)] + user_args
        log_path = self.log_path(name)
        patterns = [(m["Name"], re.compile(m["Regex"])) for m in
                    request.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])]
        with open(log_path, "ab") as log:
            process_start = time.time()
            if count == 1:
                self._spawn(name, argv, {**env, "SM_CURRENT_HOST": hosts[0]}, code_dir, log)
                keys = [name]
            else:
                keys = self._spawn_cluster(name, argv, env, hosts, code_dir, log)
            codes = self._follow(keys, log_path, patterns, on_metric)
            process_end = time.time()
        code = next((c for c in codes if c != 0), 0)
        if code != 0:
            return JobResult(code, self._failure(root, "failure", code, log_path),
                             time.time() - start, process_start, process_end)
        output_uri = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        artifact = f"{output_uri}/{name}/output/model.tar.gz"
        target = self.s3.path_of(artifact)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with tarfile.open(target, "w:gz") as tar:
            for entry in sorted(os.listdir(model_dir)):
                tar.add(os.path.join(model_dir, entry), arcname=entry)
        return JobResult(0, None, time.time() - start, process_start, process_end)

    def _spawn_cluster(self, name, argv, env, hosts, code_dir, log) -> List[str]:
        """Several hosts on one machine: MXNet's parameter-server roles, as the MXNet
        container starts them for ``dist_sync`` (a scheduler, one server per host, a worker per
        host), all on loopback."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        dmlc = {"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(port),
                "DMLC_NUM_SERVER": str(len(hosts)), "DMLC_NUM_WORKER": str(len(hosts)),
                "DMLC_INTERFACE": "lo", "PS_VERBOSE": "0"}
        serve = [self.job_python, "-c", "import mxnet"]  # importing mxnet runs the role's loop
        keys = []
        self._spawn(f"{name}#scheduler", serve, {**env, **dmlc, "DMLC_ROLE": "scheduler"},
                    code_dir, log)
        for host in hosts:
            self._spawn(f"{name}#server-{host}", serve,
                        {**env, **dmlc, "DMLC_ROLE": "server", "SM_CURRENT_HOST": host},
                        code_dir, log)
        for host in hosts:
            key = f"{name}#worker-{host}"
            self._spawn(key, argv, {**env, **dmlc, "DMLC_ROLE": "worker",
                                    "SM_CURRENT_HOST": host}, code_dir, log)
            keys.append(key)
        return keys + [f"{name}#scheduler"] + [f"{name}#server-{h}" for h in hosts]

    def _follow(self, keys, log_path, patterns, on_metric) -> List[int]:
        """Wait for the processes, reporting metric lines as they appear in the log; if one
        process fails, stop the others (a cluster would otherwise wait for it forever)."""
        offset = 0
        while True:
            states = [self._running[k].poll() for k in keys]
            if any(code not in (None, 0) for code in states):
                for key in keys:
                    if self._running[key].poll() is None:
                        os.killpg(self._running[key].pid, signal.SIGTERM)
            done = all(code is not None for code in states)
            if patterns and on_metric and os.path.exists(log_path):
                with open(log_path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                cut = chunk.rfind(b"\n") + 1
                offset += cut
                for line in chunk[:cut].decode("utf-8", errors="replace").splitlines():
                    for metric, regex in patterns:
                        match = regex.search(line)
                        if match:
                            try:
                                on_metric(metric, float(match.group(1)))
                            except ValueError:
                                pass
            if done:
                return self._wait(keys)
            time.sleep(0.2)


def _decode(value):
    """Hyperparameters arrive JSON-encoded (the SDK's convention); plain strings pass through."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
