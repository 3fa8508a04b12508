"""s3://bucket/key as files under the service's home, plus the few S3 calls boto3 makes here.

Jobs see inputs and outputs as files (hard links where possible, so a 40 MB data set costs
nothing to "download"); the CLI uploads code through the S3 API (path-style) like on AWS.
"""
import os
import shutil
import urllib.parse
from typing import List, Tuple


class LocalS3:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)

    @staticmethod
    def split(uri: str) -> Tuple[str, str]:
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3:// URI: {uri!r}")
        return parsed.netloc, parsed.path.lstrip("/")

    def path(self, bucket: str, key: str = "") -> str:
        full = os.path.normpath(os.path.join(self.root, bucket, key))
        if not full.startswith(os.path.join(self.root, bucket)):
            raise ValueError(f"key escapes its bucket: {key!r}")
        return full

    def path_of(self, uri: str) -> str:
        return self.path(*self.split(uri))

    # --- object API (used by the S3 routes) ---
    def bucket_exists(self, bucket: str) -> bool:
        return os.path.isdir(self.path(bucket))

    def create_bucket(self, bucket: str):
        os.makedirs(self.path(bucket), exist_ok=True)

    def put(self, bucket: str, key: str, data: bytes):
        target = self.path(bucket, key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".part"
        with open(tmp, "wb") as handle:
            if isinstance(data, (bytes, bytearray)):
                handle.write(data)
            else:  # a file (a spooled request body)
                shutil.copyfileobj(data, handle, 1024 * 1024)
        os.replace(tmp, target)

    def get(self, bucket: str, key: str):
        target = self.path(bucket, key)
        if not os.path.isfile(target):
            return None
        with open(target, "rb") as handle:
            return handle.read()

    def list(self, bucket: str, prefix: str = "") -> List[Tuple[str, int, float]]:
        """(key, size, modification time) of the objects under a prefix."""
        base = self.path(bucket)
        found = []
        # Walk only below the prefix's folder, not the whole bucket (it holds every run's data).
        for folder, _, files in os.walk(self.path(bucket, prefix.rpartition("/")[0])):
            for name in files:
                key = os.path.relpath(os.path.join(folder, name), base).replace(os.sep, "/")
                if key.startswith(prefix) and not key.endswith(".part"):
                    stat = os.stat(os.path.join(folder, name))
                    found.append((key, stat.st_size, stat.st_mtime))
        return sorted(found)

    # --- file transfer for jobs ---
    def download(self, uri: str, local_dir: str) -> int:
        """Like a job's S3Prefix input: the object itself, or all objects under the prefix."""
        bucket, key = self.split(uri)
        source = self.path(bucket, key)
        os.makedirs(local_dir, exist_ok=True)
        if os.path.isfile(source):
            _link_or_copy(source, os.path.join(local_dir, os.path.basename(source)))
            return 1
        count = 0
        for obj_key, _, _ in self.list(bucket, key.rstrip("/") + "/" if key else ""):
            rel = obj_key[len(key):].lstrip("/")
            target = os.path.join(local_dir, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _link_or_copy(self.path(bucket, obj_key), target)
            count += 1
        if count == 0:
            raise FileNotFoundError(f"no objects at {uri}")
        return count

    def upload_dir(self, local_dir: str, uri: str) -> int:
        """Like a job's output upload: every file under local_dir to the prefix."""
        count = 0
        target_root = self.path_of(uri)
        for folder, _, files in os.walk(local_dir):
            for name in files:
                rel = os.path.relpath(os.path.join(folder, name), local_dir)
                target = os.path.join(target_root, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _link_or_copy(os.path.join(folder, name), target)
                count += 1
        return count


def _link_or_copy(source: str, target: str):
    if os.path.exists(target):
        os.remove(target)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
