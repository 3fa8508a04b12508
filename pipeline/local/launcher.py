"""Find, start and stop the local service in the background (``run_pipeline.py --local``)."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Optional

from pipeline.config import ROOT
from pipeline.local.home import ServiceHome, log_tail

# Kept free of the service's own imports: every CLI command loads this module.
DEFAULT_HOME = os.path.join(ROOT, ".sagemaker-local")


def default_home() -> str:
    return os.environ.get("MNIST_LOCAL_HOME", DEFAULT_HOME)


def _read(home) -> Optional[dict]:
    try:
        with open(ServiceHome(home).service_file) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _alive(info) -> bool:
    try:
        os.kill(info["pid"], 0)
        with urllib.request.urlopen(info["url"] + "/ping", timeout=2) as resp:
            return resp.status == 200
    except (OSError, KeyError, ValueError):
        return False


def running(home) -> Optional[dict]:
    info = _read(home)
    return info if info and _alive(info) else None


def spawn(home, port=0, timeout=60.0, region=None):
    """Start a service process on ``home`` in the background: (process, service.json info);
    ``region``: the one it serves (the home's by default)."""
    layout = ServiceHome(home)
    os.makedirs(layout.root, exist_ok=True)
    try:
        os.remove(layout.service_file)
    except OSError:
        pass
    with open(layout.service_log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.local", "serve", "--home", home,
                                 "--port", str(port)] + (["--region", region] if region else []),
                                cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = _read(home)
        if info and info.get("pid") == proc.pid and _alive(info):
            return proc, info
        if proc.poll() is not None:  # 2: it refused its arguments (a region, a home)
            error = ValueError if proc.returncode == 2 else RuntimeError
            raise error(f"the local service exited with code {proc.returncode}: "
                        f"{log_tail(layout.service_log, 1) or 'see ' + layout.service_log}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the local service did not start within {timeout:.0f} s")


def ensure_running(home, region=None) -> dict:
    """The service on ``home`` (its service.json: url, region), started first when none runs;
    ValueError when the one running serves another region than ``region``."""
    info = running(home)
    if info:
        if region and info.get("region", region) != region:
            raise ValueError(f"the local service on {home} serves {info['region']}, not "
                               f"{region}: drop --region, or use another --local-home")
        return info
    _, info = spawn(home, region=region)
    print(f"started the local SageMaker service for {info['region']} at {info['url']} (home "
          f"{home}, log service.log)", file=sys.stderr)
    return info


def stop(home, timeout=30.0) -> bool:
    info = running(home)
    if not info:
        return False
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _exists(info["pid"]):
            return True
        time.sleep(0.1)
    os.kill(info["pid"], signal.SIGKILL)
    return True


def _exists(pid) -> bool:
    """Whether the process still runs; one this process started is reaped once it ended
    (an unreaped child would look alive forever)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
