"""The wire: SageMaker's AWS JSON 1.1 API (requests checked with botocore's own service model,
then handed to the backend as keyword arguments) and the path-style S3 calls boto3 makes here
(sagemaker-runtime's are runtime.py's). Errors leave in AWS's shapes."""
import functools
import hashlib
import inspect
import io
import json
import os
import re
import sqlite3
import xml.sax.saxutils as saxutils
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Tuple, Union

import botocore
import botocore.session
from botocore.validate import ParamValidator

from pipeline.local import constraints
from pipeline.local.errors import ServiceError, missing_parameter
from pipeline.local.backend.common import as_kwargs
from pipeline.local.resources import ACCOUNT, SERVICE_MODEL
from pipeline.local.s3 import EntityTooSmall, InvalidPart, NoSuchUpload
from pipeline.local.shared import runtime_api

Response = Tuple[int, dict, Union[bytes, "FileBody"]]  # FileBody: an S3 object, streamed
EVENTS_MODEL = botocore.session.get_session().get_service_model("events")
LOGS_MODEL = botocore.session.get_session().get_service_model("logs")


MAX_NESTING = 64  # levels of objects and arrays (20 Search sub-expressions, one in another: 43)


def nesting(value) -> int:
    """How deep objects and arrays nest in a parsed JSON value (without recursion: a stranger's
    body cannot exhaust the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _json(status, body, headers=None) -> Response:
    return status, {"Content-Type": "application/x-amz-json-1.1", **(headers or {})}, \
        json.dumps(body, default=str).encode()


error = runtime_api.error  # AWS's JSON 1.1 error: (code, message, status) -> Response


@functools.lru_cache(maxsize=None)
def _parameters(method):
    """(names it takes, names it requires, whether it takes any other member too)."""
    params_by_name = inspect.signature(method).parameters
    params = params_by_name.values()
    named = {p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD} - {"self"}
    required = {p for p in named if params_by_name[p].default is inspect.Parameter.empty}
    return named, required, any(p.kind == p.VAR_KEYWORD for p in params)


class JsonProtocol:
    """An AWS JSON 1.1 service (``X-Amz-Target: <prefix>.<Operation>``) over a backend with one
    keyword-argument method per operation, as botocore names it."""

    def __init__(self, backend, service_model=SERVICE_MODEL):
        self.backend, self.model = backend, service_model
        self.prefix = service_model.metadata["targetPrefix"] + "."
        self.snake = {name: botocore.xform_name(name) for name in service_model.operation_names}
        self.validator = ParamValidator()

    def handle(self, target: str, body: bytes) -> Response:
        operation = target.rpartition(".")[2]
        if not target.startswith(self.prefix) or operation not in self.snake:
            return error("UnknownOperationException", f"Unknown operation {target!r}")
        method = getattr(self.backend, self.snake[operation], None)
        if method is None:
            return error("UnknownOperationException",
                         f"{operation} is not implemented by the local service")
        try:
            params = json.loads(body or b"{}")
        except RecursionError:
            return error("SerializationException", "request body is nested too deeply")
        except ValueError as err:
            return error("SerializationException", f"request body is not JSON: {err}")
        if nesting(params) > MAX_NESTING:
            return error("SerializationException", f"request body is nested deeper than "
                         f"{MAX_NESTING} levels")
        input_shape = self.model.operation_model(operation).input_shape
        report = self.validator.validate(params, input_shape)
        if report.has_errors():
            return error("ValidationException", report.generate_report())
        try:
            constraints.check(params, input_shape)  # patterns, lengths, enums, ranges
            return _json(200, method(**self._kwargs(method, input_shape, params)))
        except ServiceError as err:
            return error(err.code, err.message, err.status)
        except (sqlite3.OperationalError, OSError) as err:  # e.g. a full disk: try again later
            return error("ServiceUnavailable", f"the local service cannot store this now: "
                         f"{err}", 503)

    @staticmethod
    def _kwargs(method, input_shape, params) -> dict:
        """The members the operation takes (others are accepted and not used here); a member
        the API leaves optional but this service needs is a ValidationException."""
        named, required, takes_any = _parameters(method.__func__)
        kwargs = as_kwargs(params)
        for member in input_shape.members:
            if botocore.xform_name(member) in required - set(kwargs):
                raise missing_parameter(member)
        return kwargs if takes_any else {k: v for k, v in kwargs.items() if k in named}


class FileBody:
    """A response body sent from an open file, piece by piece (the ASGI app streams it)."""

    PIECE = 1024 * 1024

    def __init__(self, handle, first: int, length: int):
        self.handle, self.left = handle, length
        handle.seek(first)

    def __len__(self):
        return self.left

    def read(self) -> bytes:
        """The next piece ("" when done); the file is closed after the last."""
        piece = self.handle.read(min(self.PIECE, self.left)) if self.left > 0 else b""
        self.left -= len(piece)
        if not piece or self.left <= 0:
            self.close()
        return piece

    def close(self):
        self.handle.close()


class S3Protocol:
    """Path-style S3 as boto3 and its transfer manager use it: ListBuckets, CreateBucket,
    HeadBucket, ListObjectsV2, PutObject, GetObject (ranges too), HeadObject, DeleteObject and
    the multipart uploads files over 8 MB take (Create, UploadPart, Complete, Abort)."""

    def __init__(self, s3):
        self.s3 = s3

    @staticmethod
    def error(code, message, status) -> Response:
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                f"<Message>{saxutils.escape(message)}</Message></Error>").encode()
        return status, {"Content-Type": "application/xml"}, body

    @staticmethod
    def _xml(body) -> Response:
        return 200, {"Content-Type": "application/xml"}, (
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>" + body).encode()

    def handle(self, method, path, query, body, headers=None) -> Response:
        bucket, _, key = path.lstrip("/").partition("/")
        try:
            if not bucket:
                if method == "GET":
                    return self._list_buckets()
                return self.error("InvalidRequest", "path-style bucket name required", 400)
            if not key:
                return self._bucket(method, bucket, query)
            if not self.s3.bucket_exists(bucket):
                return self.error("NoSuchBucket", f"The specified bucket {bucket} does not "
                                  "exist", 404)
            if "uploads" in query or "uploadId" in query:
                return self._multipart(method, bucket, key, query, body)
            return self._object(method, bucket, key, body, headers or {})
        except NoSuchUpload:
            return self.error("NoSuchUpload", "The specified upload does not exist. The upload "
                              "ID may be invalid, or the upload may have been aborted or "
                              "completed.", 404)
        except ValueError as err:
            return self.error("InvalidArgument", str(err), 400)

    def _list_buckets(self):
        buckets = "".join(
            f"<Bucket><Name>{name}</Name><CreationDate>{_iso(created)}</CreationDate></Bucket>"
            for name, created in self.s3.buckets())
        return self._xml(f"<ListAllMyBucketsResult><Owner><ID>{ACCOUNT}</ID></Owner>"
                         f"<Buckets>{buckets}</Buckets></ListAllMyBucketsResult>")

    def _bucket(self, method, bucket, query):
        if method == "PUT":
            self.s3.create_bucket(bucket)
            return 200, {"Location": f"/{bucket}"}, b""
        if not self.s3.bucket_exists(bucket):
            return self.error("NoSuchBucket", f"The specified bucket {bucket} does not exist",
                              404)
        if method == "HEAD":
            return 200, {}, b""
        if method == "GET":
            return self._list_objects(bucket, query)
        return self.error("MethodNotAllowed", f"{method} on a bucket", 405)

    def _list_objects(self, bucket, query):
        """ListObjectsV2 (and V1's marker): MaxKeys (at most 1,000) and continuation tokens,
        which here are the last key of the previous page."""
        def first(name, default=""):
            return query.get(name, [default])[0]

        prefix = first("prefix")
        try:
            max_keys = min(int(first("max-keys", "1000")), 1000)
        except ValueError:
            return self.error("InvalidArgument", "max-keys must be an integer", 400)
        after = first("continuation-token") or first("start-after") or first("marker")
        if max_keys < 0:
            return self.error("InvalidArgument", "max-keys must not be negative", 400)
        objects = [o for o in self.s3.list(bucket, prefix) if o[0] > after]
        page, truncated = objects[:max_keys], len(objects) > max_keys
        items = "".join(
            f"<Contents><Key>{saxutils.escape(k)}</Key><Size>{size}</Size><LastModified>"
            f"{_iso(mtime)}</LastModified><ETag>\"{size:x}-{int(mtime * 1000):x}\"</ETag>"
            f"<StorageClass>STANDARD</StorageClass></Contents>" for k, size, mtime in page)
        more = (f"<NextContinuationToken>{saxutils.escape(page[-1][0])}</NextContinuationToken>"
                f"<NextMarker>{saxutils.escape(page[-1][0])}</NextMarker>"
                if truncated and page else "")
        token = first("continuation-token")
        return self._xml(f"<ListBucketResult><Name>{bucket}</Name><Prefix>"
                         f"{saxutils.escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>"
                         f"<MaxKeys>{max_keys}</MaxKeys>"
                         + (f"<ContinuationToken>{saxutils.escape(token)}</ContinuationToken>"
                            if token else "")
                         + f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
                         f"{more}{items}</ListBucketResult>")

    def _object(self, method, bucket, key, body, headers):
        if method == "PUT":
            body, digest = body if isinstance(body, tuple) else (
                body, hashlib.md5(body).hexdigest())
            self.s3.put(bucket, key, body)
            return 200, {"ETag": f"\"{digest}\""}, b""
        if method == "DELETE":
            self.s3.delete(bucket, key)
            return 204, {}, b""
        if method in ("GET", "HEAD"):
            return self._read_object(method, bucket, key, headers)
        return self.error("MethodNotAllowed", f"{method} on an object", 405)

    def _read_object(self, method, bucket, key, headers) -> Response:
        """GET or HEAD: the object streamed from its file (``FileBody``), never read whole
        into memory; its ETag is the MD5 of the same version, read piece by piece."""
        handle = self.s3.open(bucket, key)
        if handle is None:
            if method == "HEAD":
                return 404, {}, b""
            return self.error("NoSuchKey", "The specified key does not exist.", 404)
        size, digest = os.fstat(handle.fileno()).st_size, hashlib.md5()
        for piece in iter(lambda: handle.read(FileBody.PIECE), b""):
            digest.update(piece)
        out = {"Content-Type": "binary/octet-stream", "Accept-Ranges": "bytes",
               "ETag": f"\"{digest.hexdigest()}\"", "Last-Modified": formatdate(usegmt=True)}
        status, first, length = 200, 0, size
        if RANGE.fullmatch(headers.get("Range", "").strip()):  # S3 ignores any other form
            span = _byte_range(headers["Range"], size)
            if span is None:
                handle.close()
                return self.error("InvalidRange", "The requested range is not satisfiable",
                                  416)
            status, first, length = 206, span[0], span[1] - span[0] + 1
            out["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
        out["Content-Length"] = str(length)
        if method == "HEAD":
            handle.close()
            return status, out, b""
        return status, out, FileBody(handle, first, length)

    def _multipart(self, method, bucket, key, query, body):
        if method == "POST" and "uploads" in query:
            upload = self.s3.start_upload(bucket, key)
            return self._xml(f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>"
                             f"{saxutils.escape(key)}</Key><UploadId>{upload}</UploadId>"
                             "</InitiateMultipartUploadResult>")
        upload = query["uploadId"][0]
        if method == "PUT":
            number = int(query.get("partNumber", ["0"])[0])
            if not 1 <= number <= 10000:
                return self.error("InvalidArgument", "partNumber must be 1 to 10,000", 400)
            data = body[0] if isinstance(body, tuple) else io.BytesIO(body)
            digest = self.s3.put_part(bucket, key, upload, number, data)
            return 200, {"ETag": f"\"{digest}\""}, b""
        if method == "GET":
            return self._xml(f"<ListPartsResult><Bucket>{bucket}</Bucket><Key>"
                             f"{saxutils.escape(key)}</Key><UploadId>{upload}</UploadId>" + "".join(
                                 f"<Part><PartNumber>{n}</PartNumber><ETag>\"{md5}\"</ETag>"
                                 f"<Size>{size}</Size></Part>"
                                 for n, size, md5 in self.s3.parts(bucket, key, upload)) +
                             "<IsTruncated>false</IsTruncated></ListPartsResult>")
        if method == "POST":
            listed = _listed_parts(body if isinstance(body, bytes) else b"")
            numbers = [n for n, _ in listed]
            if not numbers or numbers != sorted(set(numbers)):
                return self.error("InvalidPartOrder", "parts must be listed once each, in "
                                  "ascending order, each with its PartNumber and ETag", 400)
            try:
                digests = self.s3.complete_upload(bucket, key, upload, listed)
            except InvalidPart:
                return self.error("InvalidPart", "One or more of the specified parts could not "
                                  "be found. The part may not have been uploaded, or the "
                                  "specified entity tag may not match the part's entity tag.",
                                  400)
            except EntityTooSmall:
                return self.error("EntityTooSmall", "Your proposed upload is smaller than the "
                                  "minimum allowed size", 400)
            etag = hashlib.md5(b"".join(bytes.fromhex(d) for d in digests)).hexdigest()
            return self._xml(f"<CompleteMultipartUploadResult><Bucket>{bucket}</Bucket><Key>"
                             f"{saxutils.escape(key)}</Key><ETag>\"{etag}-{len(numbers)}\""
                             "</ETag></CompleteMultipartUploadResult>")
        if method == "DELETE":
            self.s3.abort_upload(bucket, key, upload)
            return 204, {}, b""
        return self.error("MethodNotAllowed", f"{method} on a multipart upload", 405)


def _iso(epoch) -> str:
    return f"{datetime.fromtimestamp(epoch, timezone.utc):%Y-%m-%dT%H:%M:%S.000Z}"


def _listed_parts(body: bytes) -> list:
    """(PartNumber, ETag) of each <Part> a CompleteMultipartUpload lists, in its order (the
    members in any order, as SDKs write them)."""
    listed = []
    for part in re.findall(rb"<Part>(.*?)</Part>", body, re.S):
        number = re.search(rb"<PartNumber>\s*(\d{1,5})\s*</PartNumber>", part)
        etag = re.search(rb"<ETag>([^<]*)</ETag>", part)
        listed.append((int(number.group(1)) if number else 0,
                       etag.group(1).decode("latin-1").replace("&quot;", '"') if etag else ""))
    return listed


RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _byte_range(header, size):
    """(first, last) of a single ``bytes=`` range, or None when it cannot be served."""
    match = RANGE.fullmatch(header.strip())
    if not match or match.groups() == ("", "") or size == 0:
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes (none: nothing to serve)
        return (max(size - int(last), 0), size - 1) if int(last) > 0 else None
    first = int(first)
    last = min(int(last), size - 1) if last else size - 1
    return (first, last) if first <= last else None
