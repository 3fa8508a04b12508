"""s3://bucket/key as files under the service's home, plus the few S3 calls boto3 makes here.

Jobs get copies of their inputs and their outputs are moved in; the CLI uploads code through the
S3 API (path-style) like on AWS. Buckets and keys are validated before they become paths: S3's
bucket naming rules, and keys a file system can hold (every segment a file name of at most 255
bytes, no "." or ".." segment, no key that is both an object and a "folder" of others).
"""
import hashlib
import os
import re
import shutil
import tempfile
import urllib.parse
import uuid
from typing import List, Tuple

BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's general-purpose rules
MAX_KEY_BYTES = 1024  # S3's


class UnsupportedName(ValueError):
    """A bucket or key this store cannot hold (HTTP 400, the message says why)."""


class NoSuchUpload(LookupError):
    """S3's 404 NoSuchUpload: no upload by that id for that key."""


class InvalidPart(ValueError):
    """S3's InvalidPart: a listed part was never uploaded, or its ETag is not the part's."""


class EntityTooSmall(ValueError):
    """S3's EntityTooSmall: a part before the last is under 5 MiB."""


MIN_PART = 5 * 1024 * 1024  # every part but the last, as S3 requires

class LocalS3:
    def __init__(self, root: str):
        self.root = root
        self.incoming = os.path.join(root, ".incoming")  # no bucket name starts with "."
        os.makedirs(self.incoming, exist_ok=True)

    @staticmethod
    def split(uri: str) -> Tuple[str, str]:
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3:// URI: {uri!r}")
        return parsed.netloc, parsed.path.lstrip("/")

    def path(self, bucket: str, key: str = "") -> str:
        if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
            raise UnsupportedName(f"invalid bucket name {bucket!r}")
        if len(key.encode()) > MAX_KEY_BYTES:
            raise UnsupportedName(f"keys are at most {MAX_KEY_BYTES} bytes")
        segments = key.split("/")
        for index, segment in enumerate(segments):
            if segment in (".", "..") or "\0" in segment or (
                    segment == "" and index != len(segments) - 1):
                raise UnsupportedName(f"the local store cannot hold key {key!r}: empty, '.' and "
                                      "'..' segments are not supported")
            if len(segment.encode()) > 255:
                raise UnsupportedName(f"the local store cannot hold key {key!r}: a segment "
                                      "over 255 bytes")
        base = os.path.join(self.root, bucket)
        full = os.path.normpath(os.path.join(base, key))
        if full != base and not full.startswith(base + os.sep):
            raise UnsupportedName(f"key escapes its bucket: {key!r}")
        return full

    def path_of(self, uri: str) -> str:
        return self.path(*self.split(uri))

    # --- object API (used by the S3 routes) ---
    def bucket_exists(self, bucket: str) -> bool:
        return os.path.isdir(self.path(bucket))

    def create_bucket(self, bucket: str):
        os.makedirs(self.path(bucket), exist_ok=True)

    def put(self, bucket: str, key: str, data):
        target = self.path(bucket, key)
        if not key or key.endswith("/"):
            raise UnsupportedName(f"the local store cannot hold key {key!r} (a folder marker)")
        if os.path.isdir(target):
            raise UnsupportedName(f"the local store cannot hold key {key!r}: other keys lie "
                                  "below it")
        parent = os.path.dirname(target)
        while parent != os.path.join(self.root, bucket):
            if os.path.isfile(parent):
                raise UnsupportedName(f"the local store cannot hold key {key!r}: "
                                f"{os.path.relpath(parent, os.path.join(self.root, bucket))!r} "
                                "is an object")
            parent = os.path.dirname(parent)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # written aside, then moved in whole: a reader never sees half an object
        handle, tmp = tempfile.mkstemp(dir=self.incoming)
        try:
            with os.fdopen(handle, "wb") as out:
                if isinstance(data, (bytes, bytearray)):
                    out.write(data)
                else:  # a file (a spooled request body)
                    shutil.copyfileobj(data, out, 1024 * 1024)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def buckets(self) -> List[Tuple[str, float]]:
        """(name, creation time) of every bucket."""
        return sorted((name, os.stat(os.path.join(self.root, name)).st_mtime)
                      for name in os.listdir(self.root)
                      if BUCKET_NAME.fullmatch(name) and os.path.isdir(os.path.join(self.root,
                                                                                   name)))

    def delete(self, bucket: str, key: str):
        """DeleteObject: gone if it was there (S3 answers the same either way)."""
        target = self.path(bucket, key)
        if os.path.isfile(target):
            os.remove(target)

    # --- multipart uploads: parts kept aside until Complete puts them together ---
    def _upload_dir(self, bucket, key, upload_id) -> str:
        if not re.fullmatch(r"[0-9a-f]{32}", upload_id):
            raise NoSuchUpload(upload_id)
        folder = os.path.join(self.incoming, f"upload-{upload_id}")
        target = os.path.join(folder, "target")
        if not os.path.isfile(target):
            raise NoSuchUpload(upload_id)
        with open(target) as handle:
            if handle.read() != f"{bucket}/{key}":
                raise NoSuchUpload(upload_id)  # S3 knows it under its own key only
        return folder

    def start_upload(self, bucket: str, key: str) -> str:
        self.path(bucket, key)  # a key the store can hold
        upload_id = uuid.uuid4().hex
        folder = os.path.join(self.incoming, f"upload-{upload_id}")
        os.makedirs(folder)
        with open(os.path.join(folder, "target"), "w") as handle:
            handle.write(f"{bucket}/{key}")
        return upload_id

    def put_part(self, bucket, key, upload_id, number, data):
        """Keep one part, and its MD5 (its ETag) beside it."""
        folder = self._upload_dir(bucket, key, upload_id)
        digest = hashlib.md5()
        with open(os.path.join(folder, f"part-{number:05d}"), "wb") as out:
            for piece in iter(lambda: data.read(1024 * 1024), b""):
                digest.update(piece)
                out.write(piece)
        with open(os.path.join(folder, f"part-{number:05d}.md5"), "w") as handle:
            handle.write(digest.hexdigest())
        return digest.hexdigest()

    def parts(self, bucket, key, upload_id) -> List[Tuple[int, int, str]]:
        """(number, size, MD5) of the parts uploaded so far, in order (ListParts)."""
        folder = self._upload_dir(bucket, key, upload_id)
        found = []
        for name in sorted(os.listdir(folder)):
            if re.fullmatch(r"part-\d{5}", name):
                with open(os.path.join(folder, name + ".md5")) as handle:
                    found.append((int(name[5:]), os.path.getsize(os.path.join(folder, name)),
                                  handle.read()))
        return found

    def complete_upload(self, bucket, key, upload_id, listed) -> List[str]:
        """Put the listed parts ((number, ETag) each) together as the object, as S3 does: each
        must have been uploaded with that ETag, and all but the last be 5 MiB at least. Returns
        their MD5s, in order."""
        folder = self._upload_dir(bucket, key, upload_id)
        uploaded = {number: (size, md5) for number, size, md5 in self.parts(
            bucket, key, upload_id)}
        for index, (number, etag) in enumerate(listed):
            if number not in uploaded or etag.strip('"') != uploaded[number][1]:
                raise InvalidPart(number)
            if index < len(listed) - 1 and uploaded[number][0] < MIN_PART:
                raise EntityTooSmall(number)
        digests = [uploaded[number][1] for number, _ in listed]
        joined = os.path.join(folder, "joined")
        with open(joined, "wb") as out:
            for number, _ in listed:
                with open(os.path.join(folder, f"part-{number:05d}"), "rb") as part:
                    shutil.copyfileobj(part, out, 1024 * 1024)
        with open(joined, "rb") as data:
            self.put(bucket, key, data)
        shutil.rmtree(folder)
        return digests

    def abort_upload(self, bucket, key, upload_id):
        shutil.rmtree(self._upload_dir(bucket, key, upload_id))

    def get(self, bucket: str, key: str):
        target = self.path(bucket, key)
        if not os.path.isfile(target):
            return None
        with open(target, "rb") as handle:
            return handle.read()

    def open(self, bucket: str, key: str):
        """The object as an open file (None if absent): a reader holds that version even if a
        PUT replaces the object meanwhile (objects are moved in whole)."""
        target = self.path(bucket, key)
        try:
            return open(target, "rb") if os.path.isfile(target) else None
        except (FileNotFoundError, IsADirectoryError):
            return None

    def list(self, bucket: str, prefix: str = "") -> List[Tuple[str, int, float]]:
        """(key, size, modification time) of the objects under a prefix."""
        base = self.path(bucket)
        found = []
        # Walk only below the prefix's folder, not the whole bucket (it holds every run's data).
        for folder, _, files in os.walk(self.path(bucket, prefix.rpartition("/")[0])):
            for name in files:
                key = os.path.relpath(os.path.join(folder, name), base).replace(os.sep, "/")
                if key.startswith(prefix):
                    stat = os.stat(os.path.join(folder, name))
                    found.append((key, stat.st_size, stat.st_mtime))
        return sorted(found)

    # --- file transfer for jobs ---
    def download(self, uri: str, local_dir: str) -> int:
        """Like a job's S3Prefix input: the object itself, or all objects under the prefix, as
        copies (a job may change its inputs; the store must not change with them)."""
        bucket, key = self.split(uri)
        source = self.path(bucket, key)
        os.makedirs(local_dir, exist_ok=True)
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(local_dir, os.path.basename(source)))
            return 1
        count = 0
        for obj_key, _, _ in self.list(bucket, key.rstrip("/") + "/" if key else ""):
            rel = obj_key[len(key):].lstrip("/")
            target = os.path.join(local_dir, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # a copy: a job that edits its input in place must not change the stored object
            shutil.copyfile(self.path(bucket, obj_key), target)
            count += 1
        if count == 0:
            raise FileNotFoundError(f"no objects at {uri}")
        return count

    def upload_dir(self, local_dir: str, uri: str) -> int:
        """Like a job's output upload: every file under local_dir to the prefix (moved)."""
        count = 0
        target_root = self.path_of(uri)
        for folder, _, files in os.walk(local_dir):
            for name in files:
                rel = os.path.relpath(os.path.join(folder, name), local_dir)
                target = os.path.join(target_root, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _move(os.path.join(folder, name), target)
                count += 1
        return count


def _move(source: str, target: str):
    """A job's output into the store: moved, so no file is shared between a job's folder and
    a stored object (as SageMaker's container, the job's folder is scratch once it ends)."""
    try:
        os.replace(source, target)
    except OSError:  # another file system
        shutil.copyfile(source, target)
        os.remove(source)
