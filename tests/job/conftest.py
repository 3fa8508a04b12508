"""Fixtures for the job code, run in the job environment with real MXNet on the shipped MNIST."""
import os
import subprocess
import sys
import tarfile

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
