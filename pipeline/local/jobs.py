"""Processing and training jobs as processes of the job environment (MXNet 1.9, numpy 1.23).

What a job sees is the container contract's (``container``); this module only starts, follows
and stops processes, keeps each job's output as its log, and answers with a ``JobResult``.
State is not its business: the step handlers report results through the backend.
"""
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set

from pipeline.local.container import ProcessingContainer, TrainingContainer
from pipeline.local.home import ServiceHome
from pipeline.local.processes import end_group, end_leftover
from pipeline.local.s3 import LocalS3


@dataclass
class JobResult:
    exit_code: int
    failure_reason: Optional[str]
    seconds: float  # the whole job, staging and upload included
    process_start: Optional[float] = None  # the container process itself
    process_end: Optional[float] = None
    fault: Optional[str] = None  # a retry exception type when the service, not the job, failed


class JobRunner:
    """Runs jobs for the service; ``env`` reaches every job (endpoint URLs, credentials).

    Each job process starts in a session of its own (no code runs between fork and exec: the
    service has many threads), so that stopping it ends what it started too; the service ends
    them when it closes, and a restarted service ends what a crash left running (their pids
    are kept in ``home.running_jobs_dir``)."""

    def __init__(self, home: ServiceHome, s3: LocalS3, job_python: str, env: Dict[str, str]):
        self.home, self.s3, self.job_python, self.env = home, s3, job_python, env
        os.makedirs(home.logs_dir, exist_ok=True)
        os.makedirs(home.running_jobs_dir, exist_ok=True)
        self._lock = threading.Lock()  # guards the three below (steps run on many threads)
        self._running: Dict[str, subprocess.Popen] = {}
        self._owners: Dict[str, str] = {}  # process key -> the execution or job it runs for
        self._stopped: Set[str] = set()  # owners asked to stop: what they start later ends too

    def stop_owner(self, owner: str) -> bool:
        """Stop every process started for ``owner`` (an execution, or a job created through
        the API), and any it starts later (a stop can come while its inputs are staged)."""
        with self._lock:
            self._stopped.add(owner)
            procs = [self._running[k] for k, o in self._owners.items()
                     if o == owner and k in self._running]
        for proc in procs:
            end_group(proc.pid)
        return bool(procs)

    def stop_all(self):
        """The service closes: every job process ends with it."""
        with self._lock:
            procs = list(self._running.values())
        for proc in procs:
            end_group(proc.pid)

    def stop_leftovers(self):
        """Job processes a crashed service left running (a pid recorded and still running
        the job environment's Python) end now."""
        for entry in os.listdir(self.home.running_jobs_dir):
            if entry.isdigit():
                end_leftover(int(entry), self.job_python.encode())
            os.remove(os.path.join(self.home.running_jobs_dir, entry))

    # --- processes ---
    def _environment(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "DMLC_"))}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, key, owner, argv, env, cwd, log) -> subprocess.Popen:
        if argv and argv[0] in ("python", "python3"):
            argv = [self.job_python] + argv[1:]
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        with open(os.path.join(self.home.running_jobs_dir, str(proc.pid)), "w") as handle:
            handle.write(key)
        with self._lock:
            self._running[key], self._owners[key] = proc, owner
            stopped = owner in self._stopped
        if stopped:
            end_group(proc.pid)
        return proc

    def resume_owner(self, owner: str):
        """``owner`` runs again (a retried execution): its stop no longer applies."""
        with self._lock:
            self._stopped.discard(owner)

    def _process(self, key: str) -> subprocess.Popen:
        with self._lock:
            return self._running[key]

    def _wait(self, keys: List[str]) -> List[int]:
        procs = [self._process(k) for k in keys]
        codes = [proc.wait() for proc in procs]
        with self._lock:
            for k in keys:
                self._running.pop(k, None)
                self._owners.pop(k, None)
        for proc in procs:
            try:
                os.remove(os.path.join(self.home.running_jobs_dir, str(proc.pid)))
            except FileNotFoundError:
                pass
        return codes

    # --- processing ---
    def run_processing(self, name: str, request: dict, owner: str = "") -> JobResult:
        start = time.time()
        container = ProcessingContainer(self.home.job_dir(name), request)
        container.prepare(self.s3)
        env = {**self._environment(), **container.variables()}
        log_path = self.home.job_log(name)
        with open(log_path, "ab") as log:
            process_start = time.time()
            self._spawn(name, owner, container.argv(), env, container.root, log)
            [code] = self._wait([name])
            process_end = time.time()
        if code != 0:
            return JobResult(code, container.failure_reason(code, log_path),
                             time.time() - start, process_start, process_end)
        container.collect(self.s3)
        return JobResult(0, None, time.time() - start, process_start, process_end)

    # --- training ---
    def run_training(self, name: str, request: dict, owner: str = "",
                     on_metric: Optional[Callable[[str, float], None]] = None) -> JobResult:
        start = time.time()
        container = TrainingContainer(self.home.job_dir(name), request)
        container.prepare(self.s3)
        env = self._environment()
        argv = container.argv(self.job_python)
        log_path = self.home.job_log(name)
        with open(log_path, "ab") as log:
            process_start = time.time()
            if len(container.hosts) == 1:
                self._spawn(name, owner, argv, {**env, **container.variables()},
                            container.code_dir, log)
                keys = [name]
            else:
                keys = self._spawn_cluster(name, owner, argv, env, container, log)
            codes = self._follow(keys, log_path, container.metric_patterns(), on_metric)
            process_end = time.time()
        code = next((c for c in codes if c != 0), 0)
        if code != 0:
            return JobResult(code, container.failure_reason(code, log_path),
                             time.time() - start, process_start, process_end)
        container.pack_model(self.s3, name)
        return JobResult(0, None, time.time() - start, process_start, process_end)

    def _spawn_cluster(self, name, owner, argv, env, container, log) -> List[str]:
        """Several hosts on one machine: MXNet's parameter-server roles, as the MXNet
        container starts them for ``dist_sync`` (a scheduler, one server per host, a worker per
        host), all on loopback."""
        hosts = container.hosts
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        dmlc = {"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(port),
                "DMLC_NUM_SERVER": str(len(hosts)), "DMLC_NUM_WORKER": str(len(hosts)),
                "DMLC_INTERFACE": "lo", "PS_VERBOSE": "0"}
        serve = [self.job_python, "-c", "import mxnet"]  # importing mxnet runs the role's loop
        cwd = container.code_dir
        self._spawn(f"{name}#scheduler", owner, serve,
                    {**env, **container.variables(), **dmlc, "DMLC_ROLE": "scheduler"}, cwd, log)
        for host in hosts:
            self._spawn(f"{name}#server-{host}", owner, serve,
                        {**env, **container.variables(host), **dmlc, "DMLC_ROLE": "server"},
                        cwd, log)
        workers = []
        for host in hosts:
            key = f"{name}#worker-{host}"
            self._spawn(key, owner, argv,
                        {**env, **container.variables(host), **dmlc, "DMLC_ROLE": "worker"},
                        cwd, log)
            workers.append(key)
        return workers + [f"{name}#scheduler"] + [f"{name}#server-{h}" for h in hosts]

    def _follow(self, keys, log_path, patterns, on_metric) -> List[int]:
        """Wait for the processes, reporting metric lines as they appear in the log; if one
        process fails, stop the others (a cluster would otherwise wait for it forever)."""
        offset = 0
        while True:
            procs = [self._process(k) for k in keys]
            states = [proc.poll() for proc in procs]
            if any(code not in (None, 0) for code in states):
                for proc in procs:
                    if proc.poll() is None:
                        end_group(proc.pid)
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
