"""HTTP framing and limits, stalled requests, and the path-style S3 protocol."""
import os
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from servicehelpers import (_raw)


@pytest.mark.parametrize("request_bytes,status,message", [
    (b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application"
     b"/json\r\n Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n[]", 400,
     "Unexpected whitespace after header value"),  # a folded line (obs-fold)
    (b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "Transfer-Encoding can't be present with Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.ListModels\r\n"
     b"Content-Length: abc\r\n\r\n", 400, "Invalid character in Content-Length"),
    (b"PUT /sagemaker-local/k HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"-10\r\n", 400, "Invalid character in chunk size"),
    (b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000000"
     b"\r\n\r\n", 413, "over this route's limit of 6291456 bytes"),
    (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.ListModels\r\n"
     b"Content-Length: 99999999999\r\n\r\n", 413, "over this route's limit"),
    (b"GET / HTTP/1.1\r\nHost: rebound.example:80\r\n\r\n", 403, "loopback host name"),
    (b"POST / HTTP/1.1\r\nHost: evil.example\r\nX-Amz-Target: SageMaker.ListModels\r\n"
     b"Content-Length: 2\r\n\r\n{}", 403, "loopback host name"),
])
def test_the_service_refuses_ambiguous_oversized_or_foreign_requests(service, request_bytes,
                                                                     status, message):
    answer = _raw(service.url, request_bytes + b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    assert message in answer.decode("latin-1")
    assert answer.count(b"HTTP/1.1 ") == 1  # the connection closed: nothing more was read
    assert urllib.request.urlopen(service.url + "/ping").status == 200


def test_6_mib_invocations_pass_the_limit_and_one_byte_more_does_not(service):
    runtime = service.client("sagemaker-runtime")
    limit = 6 * 1024 * 1024
    with pytest.raises(ClientError) as err:  # read whole, then: no such endpoint
        runtime.invoke_endpoint(EndpointName="none", Body=b"x" * limit)
    assert "Endpoint none of account" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="none", Body=b"x" * (limit + 1))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    chunked = b"".join(b"%x\r\n%s\r\n" % (n, b"x" * n) for n in (limit // 2, limit // 2 + 1))
    answer = _raw(service.url, b"POST /endpoints/none/invocations HTTP/1.1\r\nHost: 127.0.0.1"
                  b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_large_s3_objects_are_spooled_not_held(service, tmp_path):
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="spooled")
    data = os.urandom(20 * 1024 * 1024)
    s3.put_object(Bucket="spooled", Key="big/object.bin", Body=data)
    assert s3.get_object(Bucket="spooled", Key="big/object.bin")["Body"].read() == data
    head = s3.head_object(Bucket="spooled", Key="big/object.bin")
    import hashlib
    assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_s3_keys_the_store_cannot_hold_get_400_and_change_nothing(service):
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="keys")
    s3.put_object(Bucket="keys", Key="a/b", Body=b"1")
    s3.put_object(Bucket="keys", Key="ends/with.part", Body=b"2")  # an ordinary key
    for key, message in (("a", "other keys lie below it"), ("a/b/c", "'a/b' is an object"),
                         ("x/..", "'..' segments"), ("s" * 256, "a segment over 255 bytes"),
                         ("../keys-evil/k", "'..' segments")):
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket="keys", Key=key, Body=b"x")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, key
        assert message in err.value.response["Error"]["Message"], key
    answer = _raw(service.url, b"PUT /keys/../keys-evil/k HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Length: 1\r\n\r\nx")
    assert answer.startswith(b"HTTP/1.1 400 ")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="keys")["Contents"]]
    assert keys == ["a/b", "ends/with.part"]
    assert not os.path.exists(os.path.join(service.home, "s3", "keys-evil"))


def test_s3_as_boto3s_transfer_manager_uses_it(service, tmp_path):
    """ListBuckets, HeadBucket; a 20 MB file uploaded in parts (multipart, as boto3 does over
    8 MB) and downloaded in ranges; DeleteObject; ranges served as S3 serves them."""
    from boto3.s3.transfer import TransferConfig

    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="transfers")
    assert "transfers" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="transfers")
    data = os.urandom(20 * 1024 * 1024 + 123)
    (tmp_path / "big.bin").write_bytes(data)
    parts = TransferConfig(multipart_threshold=8 * 1024 * 1024,
                           multipart_chunksize=8 * 1024 * 1024)
    s3.upload_file(str(tmp_path / "big.bin"), "transfers", "data/big.bin", Config=parts)
    head = s3.head_object(Bucket="transfers", Key="data/big.bin")
    assert head["ContentLength"] == len(data)
    s3.download_file("transfers", "data/big.bin", str(tmp_path / "back.bin"), Config=parts)
    assert (tmp_path / "back.bin").read_bytes() == data
    part = s3.get_object(Bucket="transfers", Key="data/big.bin", Range="bytes=100-199")
    assert part["ContentRange"] == f"bytes 100-199/{len(data)}" and \
        part["Body"].read() == data[100:200]
    assert s3.get_object(Bucket="transfers", Key="data/big.bin",
                         Range="bytes=-10")["Body"].read() == data[-10:]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket="transfers", Key="data/big.bin", Range=f"bytes={len(data)}-")
    assert err.value.response["Error"]["Code"] == "InvalidRange"
    upload = s3.create_multipart_upload(Bucket="transfers", Key="aborted")["UploadId"]
    s3.abort_multipart_upload(Bucket="transfers", Key="aborted", UploadId=upload)
    with pytest.raises(ClientError):
        s3.upload_part(Bucket="transfers", Key="aborted", UploadId=upload, PartNumber=1,
                       Body=b"x")
    s3.delete_object(Bucket="transfers", Key="data/big.bin")
    assert "Contents" not in s3.list_objects_v2(Bucket="transfers")


def test_list_objects_v2_pages_with_max_keys_and_continuation_tokens(service):
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="paged")
    keys = [f"p/{i:03d}" for i in range(25)]
    for key in keys:
        s3.put_object(Bucket="paged", Key=key, Body=b"x")
    first = s3.list_objects_v2(Bucket="paged", Prefix="p/", MaxKeys=10)
    assert first["IsTruncated"] and first["KeyCount"] == 10 and first["MaxKeys"] == 10
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="paged", Prefix="p/", PaginationConfig={"PageSize": 7})
    seen = [[o["Key"] for o in page["Contents"]] for page in pages]
    assert [len(p) for p in seen] == [7, 7, 7, 4]
    assert sum(seen, []) == keys
    after = s3.list_objects_v2(Bucket="paged", StartAfter="p/020")
    assert [o["Key"] for o in after["Contents"]] == keys[21:]


def test_a_request_that_stalls_half_way_gets_a_408(tmp_path):
    """The service's read timeout: headers or a body that stop arriving are refused after that
    many seconds without a byte (408, connection closed)."""
    from pipeline.local.server import LocalSageMaker

    service = LocalSageMaker(str(tmp_path / "home"), read_timeout=1.0).start_background()
    try:
        for partial in (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Tar",
                        b"PUT /bucket/key HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100"
                        b"\r\n\r\nfirst bytes"):
            answer = _raw(service.url, partial)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b"nothing arrived for 1 s" in answer
        assert urllib.request.urlopen(service.url + "/ping").status == 200
    finally:
        service.close()


def test_a_bare_lf_request_is_refused_at_once(service):
    """A request line ended by LF alone: 400 at once (as the model server answers), not a 408
    after the 60 s a stalled request gets."""
    started = time.time()
    answer = _raw(service.url, b"GET /ping HTTP/1.1\nHost: 127.0.0.1\n\n", timeout=10)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert time.time() - started < 5


def test_multipart_uploads_are_checked_as_s3_checks_them(service):
    """Complete takes only the parts uploaded, with their ETags, every part but the last at
    least 5 MiB; an unknown upload is NoSuchUpload (404); ListParts lists; the object's ETag
    has S3's multipart form (the MD5 of the parts' MD5s, then -N)."""
    import hashlib

    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="multi")
    first, last = b"a" * (5 * 1024 * 1024), b"b" * 1000

    def started():
        return s3.create_multipart_upload(Bucket="multi", Key="k")["UploadId"]

    def code(call, **args):
        with pytest.raises(ClientError) as err:
            call(Bucket="multi", Key="k", **args)
        return err.value.response["Error"]["Code"], err.value.response[
            "ResponseMetadata"]["HTTPStatusCode"]

    upload = started()
    small = s3.upload_part(Bucket="multi", Key="k", UploadId=upload, PartNumber=1,
                           Body=last)["ETag"]
    tail = s3.upload_part(Bucket="multi", Key="k", UploadId=upload, PartNumber=2,
                          Body=last)["ETag"]
    assert [(p["PartNumber"], p["Size"]) for p in s3.list_parts(
        Bucket="multi", Key="k", UploadId=upload)["Parts"]] == [(1, 1000), (2, 1000)]
    assert code(s3.complete_multipart_upload, UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'},
        {"PartNumber": 2, "ETag": tail}]}) == ("InvalidPart", 400)
    assert code(s3.complete_multipart_upload, UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": tail}]}) == (
        "EntityTooSmall", 400)
    assert code(s3.complete_multipart_upload, UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 3, "ETag": tail}]}) == ("InvalidPart", 400)
    big = s3.upload_part(Bucket="multi", Key="k", UploadId=upload, PartNumber=1,
                         Body=first)["ETag"]
    done = s3.complete_multipart_upload(Bucket="multi", Key="k", UploadId=upload,
                                        MultipartUpload={"Parts": [
                                            {"PartNumber": 1, "ETag": big},
                                            {"PartNumber": 2, "ETag": tail}]})
    parts = hashlib.md5(first).digest() + hashlib.md5(last).digest()
    assert done["ETag"] == f'"{hashlib.md5(parts).hexdigest()}-2"'
    assert s3.get_object(Bucket="multi", Key="k")["Body"].read() == first + last
    for call, args in ((s3.upload_part, {"PartNumber": 1, "Body": b"x"}),
                       (s3.list_parts, {}), (s3.abort_multipart_upload, {}),
                       (s3.complete_multipart_upload, {"MultipartUpload": {"Parts": [
                           {"PartNumber": 1, "ETag": big}]}})):
        assert code(call, UploadId=upload, **args) == ("NoSuchUpload", 404)  # completed
        assert code(call, UploadId="f" * 32, **args) == ("NoSuchUpload", 404)


def test_ranges_as_s3_serves_them(service):
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="ranges")
    s3.put_object(Bucket="ranges", Key="ten", Body=b"0123456789")
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket="ranges", Key="ten", Range="bytes=-0")
    assert err.value.response["Error"]["Code"] == "InvalidRange"
    for ignored in ("bytes=abc", "items=0-1", "bytes=0-1,3-4"):  # S3 serves the whole object
        answer = s3.get_object(Bucket="ranges", Key="ten", Range=ignored)
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert answer["Body"].read() == b"0123456789"
    assert s3.get_object(Bucket="ranges", Key="ten", Range="bytes=-3")["Body"].read() == b"789"


def test_a_full_disk_answers_s3_with_a_503_in_s3s_words(local_service, tmp_path, monkeypatch):
    """PUT (small, spooled, multipart) when the disk is full: 503 ServiceUnavailable in S3's
    XML, with the reason, and nothing half-written; a GET still reads."""
    import errno

    from pipeline.local import framing

    service, _, s3 = local_service(tmp_path / "full")
    s3.create_bucket(Bucket="full")
    s3.put_object(Bucket="full", Key="kept", Body=b"kept")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    class FullSpool:
        def __init__(self, *args, **kwargs):
            pass

        write = no_space

        def close(self):
            pass

    monkeypatch.setattr(service.s3, "put", no_space)
    monkeypatch.setattr(service.s3, "start_upload", no_space)
    monkeypatch.setattr(framing.tempfile, "SpooledTemporaryFile", FullSpool)
    for call in (lambda: s3.put_object(Bucket="full", Key="k", Body=b"x" * 10),
                 lambda: s3.create_multipart_upload(Bucket="full", Key="m")):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert "No space left on device" in err.value.response["Error"]["Message"]
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert s3.get_object(Bucket="full", Key="kept")["Body"].read() == b"kept"


def test_the_stall_timer_restarts_with_every_piece(tmp_path):
    """A body that keeps arriving, a piece every 0.6 s for 3 s, under a 1 s read timeout: it is
    slow, not stalled, and gets its answer."""
    import socket

    from pipeline.local.server import LocalSageMaker

    service = LocalSageMaker(str(tmp_path / "home"), read_timeout=1.0).start_background()
    try:
        body = b"{}" + b" " * 4
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: "
                         b"SageMaker.ListModels\r\nContent-Type: application/x-amz-json-1.1\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body))
            for index in range(len(body)):
                time.sleep(0.6)
                sock.sendall(body[index:index + 1])
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    finally:
        service.close()


def _peak_rss_kib(pid) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))


def test_a_large_get_is_streamed_not_held(service, tmp_path):
    """GET (and HEAD's ETag) of a 200 MB object: the service's peak memory grows by far less
    than the object (it streams from the file, piece by piece)."""
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="streamed")
    path = tmp_path / "big.bin"
    with open(path, "wb") as out:
        for _ in range(200):
            out.write(os.urandom(1024 * 1024))
    s3.upload_file(str(path), "streamed", "big.bin")
    before = _peak_rss_kib(service.proc.pid)
    s3.head_object(Bucket="streamed", Key="big.bin")
    s3.download_file("streamed", "big.bin", str(tmp_path / "back.bin"))
    body = s3.get_object(Bucket="streamed", Key="big.bin")["Body"]
    size = sum(len(piece) for piece in iter(lambda: body.read(1024 * 1024), b""))
    assert size == 200 * 1024 * 1024
    assert (tmp_path / "back.bin").read_bytes() == path.read_bytes()
    grown = _peak_rss_kib(service.proc.pid) - before
    assert grown < 60 * 1024, f"peak memory grew by {grown / 1024:.0f} MiB"
