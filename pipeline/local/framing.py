"""Request bodies for the local service: how many bytes a route may take, read from the ASGI
server as they arrive.

The framing itself (Content-Length, chunked, folded or conflicting headers: what request
smuggling feeds on) is llhttp's, in the HTTP protocol both local servers share; what is left
here is the service's part: a body over its route's limit is refused from its declared size
(413) and never buffered to find out, large S3 objects are spooled to a file as they arrive,
and S3's ``aws-chunked`` content encoding is decoded.
"""
import hashlib
import tempfile

from pipeline.local.shared import protocol

SPOOL_IN_MEMORY = 8 * 1024 * 1024  # bodies above this go to a temporary file as they arrive


class BadRequest(Exception):
    """The request cannot be read safely (400; the connection is closed)."""


# Reading a body from the ASGI server is the shared protocol's (both servers read there).
TooLarge = protocol.BodyTooLarge  # over the route's limit (413; the rest is never read)
ClientGone = protocol.ClientGone


async def read_body(receive, headers, limit) -> bytes:
    """The whole body, in memory (routes whose limit is small)."""
    return await protocol.read_body(receive, headers.get("content-length"), limit)


async def spool_body(receive, headers, limit, directory):
    """A body that may be large (S3 objects): in memory, then in a temporary file once over
    ``SPOOL_IN_MEMORY``; returns (file positioned at 0, its MD5 hex digest)."""
    protocol.check_declared(headers.get("content-length"), limit)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=directory)
    digest = hashlib.md5()
    try:
        async for piece in protocol.body_pieces(receive, limit):
            digest.update(piece)
            spool.write(piece)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, digest.hexdigest()


def read_chunked(stream, limit) -> bytes:
    """A chunked body (``size[;ext] CRLF data CRLF ... 0 CRLF trailers CRLF``), as S3's
    ``aws-chunked`` Content-Encoding frames an object inside the HTTP body."""
    data = bytearray()
    while True:
        line = stream.readline(1024).split(b";")[0].strip()
        if not line or len(line) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in line):
            raise BadRequest(f"bad chunk size {line[:20]!r}")
        size = int(line, 16)
        if size == 0:
            for _ in range(100):  # trailers, then the blank line
                if stream.readline(8192) in (b"\r\n", b"\n", b""):
                    return bytes(data)
            raise BadRequest("too many trailer lines")
        if len(data) + size > limit:
            raise TooLarge(len(data) + size, limit)
        chunk = stream.read(size)
        if len(chunk) != size or stream.readline(1024) not in (b"\r\n", b"\n"):
            raise BadRequest("truncated chunk")
        data += chunk
