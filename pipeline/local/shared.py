"""What the local service shares with the model server: modules that live beside the server in
``src/inference`` (it runs in the job environment, which has no ``pipeline`` package), loaded
here by path: ``protocol`` (HTTP), ``passing`` (connections changing hands) and ``runtime_api``
(the runtime route's answers and checks). ``protocol`` imports its two siblings by their own
names, as it does beside the model server: they are registered under those names first."""
import importlib.util
import os
import sys

from pipeline.config import ROOT


def _load(name):
    path = os.path.join(ROOT, "src", "inference", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"local_shared_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


passing = sys.modules.setdefault("connection_passing", _load("connection_passing"))
sys.modules.setdefault("request_ends", _load("request_ends"))
protocol = _load("protocol")
runtime_api = _load("runtime_api")
