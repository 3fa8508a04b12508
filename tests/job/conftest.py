"""Fixtures for the job code, run in the job environment with real MXNet on the shipped MNIST."""
import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MNIST = os.path.join(ROOT, "data", "mnist")
for folder in ("steps", os.path.join("src", "inference"), os.path.join("src", "train")):
    sys.path.insert(0, os.path.join(ROOT, folder))


def run_script(rel_path, *args, env=None, check=True):
    """Run a job script the way a job runs it: a separate Python process."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, rel_path), *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{rel_path} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """PrepareData output for the real, full MNIST."""
    out = tmp_path_factory.mktemp("prepared")
    run_script("steps/preprocess.py", "--source", MNIST, "--output-dir", out,
               "--failure-file", out / "failure")
    return out


@pytest.fixture(scope="session")
def trained(prepared, tmp_path_factory):
    """A short real training: 2 epochs on the 54,000 training images. Returns (model dir, log)."""
    model_dir = tmp_path_factory.mktemp("model")
    proc = run_script("src/train/train.py", "--epochs", 2, "--batch-size", 64,
                      "--learning-rate", 0.002, env={
                          "SM_MODEL_DIR": str(model_dir),
                          "SM_CHANNEL_TRAIN": str(prepared / "train"),
                          "SM_CHANNEL_VALIDATION": str(prepared / "validation"),
                          "SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"})
    return model_dir, proc.stdout


@pytest.fixture(scope="session")
def model_tar(trained, tmp_path_factory):
    model_dir, _ = trained
    path = tmp_path_factory.mktemp("artifact") / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in os.listdir(model_dir):
            tar.add(os.path.join(model_dir, name), arcname=name)
    return path


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """A model server serving the trained model, for a test module: its port."""
    ready = tmp_path_factory.mktemp("server") / "port"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "src", "inference", "server.py"),
                             "--model-dir", str(trained[0]), "--port", "0", "--ready-file",
                             str(ready)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not (ready.exists() and ready.read_text()):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()  # then its output ends, and reading it cannot block
            pytest.fail(f"the model server did not start: {proc.communicate()[0]!r}")
        time.sleep(0.05)
    yield int(ready.read_text())
    proc.terminate()
    proc.wait(10)


def start_server(model_dir, folder, *options):
    """A model server of the test's own, with these command-line options: (process, port)."""
    ready = folder / "port"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "src", "inference", "server.py"),
                             "--model-dir", str(model_dir), "--port", "0", "--ready-file",
                             str(ready), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (ready.exists() and ready.read_text()):
        if proc.poll() is not None or time.time() > deadline:
            exited = proc.poll()
            proc.kill()
            proc.wait(10)
            pytest.fail(f"the model server did not start within 60 s (exit code {exited})")
        time.sleep(0.05)
    return proc, int(ready.read_text())


@pytest.fixture(scope="module")
def digits(prepared):
    with np.load(prepared / "test" / "test.npz") as data:
        return data["images"][:40], data["labels"][:40]


def digits_of(body):
    """The digits a model server's JSON answer predicts."""
    return [p["digit"] for p in json.loads(body)["predictions"]]
