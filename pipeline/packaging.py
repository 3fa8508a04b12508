"""Package the job code ourselves: reproducible archives under content-hashed S3 keys.

The SDK would upload (and re-pack) code as a side effect of building the definition; doing it
here keeps the definition free of network calls and byte-identical for identical code, and makes
``upsert`` the one place where code is uploaded.
"""
import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from pipeline.config import ROOT


# (archive member name, path in the checkout) per artifact. Training ships inference.py so that
# train.py can place it in the model directory as code/inference.py, and the job side's shared
# helper of the container contract.
TRAINING_SOURCE = [("train.py", "src/train/train.py"),
                   ("inference.py", "src/inference/inference.py"),
                   ("job_contract.py", "steps/job_contract.py")]
STEPS_DIR = "steps"  # the processing steps' source folder: every script and their helper
CODE_FOLDER = "steps/"  # artifacts named "steps/<file>" are that folder's files


@dataclass(frozen=True)
class Artifact:
    """One file to upload: its bytes and the S3 key its content determines."""

    name: str
    data: bytes
    key: str

    def uri(self, bucket: str) -> str:
        return f"s3://{bucket}/{self.key}"


def _read(rel_path: str) -> bytes:
    with open(os.path.join(ROOT, rel_path), "rb") as handle:
        return handle.read()


def reproducible_tar_gz(members: List[Tuple[str, bytes]]) -> bytes:
    """A tar.gz whose bytes depend only on the member names and contents."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _artifact(prefix: str, name: str, data: bytes) -> Artifact:
    digest = hashlib.sha256(data).hexdigest()[:16]
    return Artifact(name=name, data=data, key=f"{prefix}/code/{digest}/{name}")


def _step_folder(prefix: str) -> Dict[str, Artifact]:
    """The steps' source folder, each file under one key prefix that the whole folder's
    content determines (a processing job's code input downloads the prefix)."""
    names = sorted(f for f in os.listdir(os.path.join(ROOT, STEPS_DIR)) if f.endswith(".py"))
    files = {name: _read(os.path.join(STEPS_DIR, name)) for name in names}
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    folder = f"{prefix}/code/steps-{digest.hexdigest()[:16]}"
    return {CODE_FOLDER + name: Artifact(name=name, data=data, key=f"{folder}/{name}")
            for name, data in files.items()}


def step_folder_uri(artifacts: Dict[str, Artifact], bucket: str) -> str:
    """The S3 prefix of the steps' folder (what a processing job's code input names)."""
    key = artifacts[CODE_FOLDER + "job_contract.py"].key
    return f"s3://{bucket}/{key.rpartition('/')[0]}/"


def build_artifacts(prefix: str) -> Dict[str, Artifact]:
    """All code the pipeline's jobs run: the steps' folder ("steps/<file>") and the training
    source archive ("sourcedir.tar.gz")."""
    artifacts = _step_folder(prefix)
    source = reproducible_tar_gz([(name, _read(path)) for name, path in TRAINING_SOURCE])
    artifacts["sourcedir.tar.gz"] = _artifact(prefix, "sourcedir.tar.gz", source)
    return artifacts


def upload_artifacts(s3_client, bucket: str, artifacts: Dict[str, Artifact]) -> List[str]:
    """Upload what is not there yet (keys are content hashes); return the URIs uploaded."""
    uploaded = []
    for artifact in artifacts.values():
        try:
            s3_client.head_object(Bucket=bucket, Key=artifact.key)
            continue
        except s3_client.exceptions.ClientError as err:
            if err.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                raise
        s3_client.put_object(Bucket=bucket, Key=artifact.key, Body=artifact.data)
        uploaded.append(artifact.uri(bucket))
    return uploaded


def source_commit() -> Optional[str]:
    """The checkout's git commit (with "+changes" when files differ from it), or None when the
    code is not a git checkout. Recorded per execution, never in the definition."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+changes" if dirty else "")
