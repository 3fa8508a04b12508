"""HTTP message framing for the local service: which bytes are a request's body, and how many
it may have, decided before any of it is read.

Ambiguous framing is what request smuggling feeds on, so it is refused outright: folded header
lines (obs-fold), Content-Length together with Transfer-Encoding, a Transfer-Encoding other than
chunked, a Content-Length that is not a plain number, a chunk size that is not plain hex. A body
over its route's limit is refused from its declared size (413), never buffered to find out.
"""
import hashlib
import io
import tempfile

SPOOL_IN_MEMORY = 8 * 1024 * 1024  # bodies above this go to a temporary file as they arrive
PIECE = 64 * 1024


class BadRequest(Exception):
    """The request cannot be read safely (400; the connection is closed)."""


class TooLarge(Exception):
    """The body is over the route's limit (413). ``unread``: bytes still on the wire."""

    def __init__(self, size, limit, unread=0):
        super().__init__(f"request body of {size} bytes is over this route's limit of "
                         f"{limit} bytes")
        self.size, self.limit, self.unread = size, limit, unread


def check_headers(headers) -> None:
    """Refuse header sets whose framing could be read two ways."""
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise BadRequest(f"folded header line in {name} (obs-fold) is not accepted")
    lengths = headers.get_all("Content-Length") or []
    encodings = headers.get_all("Transfer-Encoding") or []
    if encodings and lengths:
        raise BadRequest("both Content-Length and Transfer-Encoding")
    if len(set(lengths)) > 1:
        raise BadRequest("conflicting Content-Length headers")
    if encodings and [e.strip().lower() for e in encodings] != ["chunked"]:
        raise BadRequest(f"unsupported Transfer-Encoding {', '.join(encodings)!r}")
    if lengths and (not lengths[0].strip().isdigit() or len(lengths[0].strip()) > 18):
        raise BadRequest(f"bad Content-Length {lengths[0][:40]!r}")


def declared_length(headers):
    """The Content-Length (0 when absent), or None for a chunked body."""
    if headers.get("Transfer-Encoding"):
        return None
    return int(headers.get("Content-Length", "0").strip() or 0)


def read_chunked(stream, limit) -> bytes:
    """A chunked body (``size[;ext] CRLF data CRLF ... 0 CRLF trailers CRLF``), as HTTP's
    Transfer-Encoding and S3's ``aws-chunked`` Content-Encoding both frame it."""
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


def read_body(stream, headers, limit) -> bytes:
    """The whole body, in memory (routes whose limit is small)."""
    length = declared_length(headers)
    if length is None:
        return read_chunked(stream, limit)
    if length > limit:
        raise TooLarge(length, limit, unread=length)
    body = stream.read(length)
    if len(body) != length:
        raise BadRequest("body shorter than its Content-Length")
    return body


def spool_body(stream, headers, limit, directory):
    """A body that may be large (S3 objects): read in pieces into memory, then a temporary file
    once over ``SPOOL_IN_MEMORY``; returns (file positioned at 0, its MD5 hex digest)."""
    length = declared_length(headers)
    if length is None:
        data = read_chunked(stream, min(limit, SPOOL_IN_MEMORY * 8))
        length, stream = len(data), io.BytesIO(data)
    elif length > limit:
        raise TooLarge(length, limit, unread=length)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=directory)
    digest, left = hashlib.md5(), length
    while left:
        piece = stream.read(min(left, PIECE))
        if not piece:
            spool.close()
            raise BadRequest("body shorter than its Content-Length")
        digest.update(piece)
        spool.write(piece)
        left -= len(piece)
    spool.seek(0)
    return spool, digest.hexdigest()

