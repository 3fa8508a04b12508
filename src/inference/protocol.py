"""HTTP/1.1 for the local servers (the model server, and the local service, which loads this
file from here): uvicorn's protocol on httptools' llhttp parser, with three answers it does not
give. Its 400 for a request llhttp refuses (folded headers, Content-Length with
Transfer-Encoding, bad chunk sizes: the ambiguities request smuggling feeds on) says why; a
client that half-closes its side (sends, then shuts down writing) still gets its answer, or a
400 if the request was cut short, instead of a silently dropped connection; and a request that
stops arriving half-way (headers or body) gets a 408 after ``read_timeout`` seconds without a
byte (uvicorn times out only idle keep-alive connections).

Connections can also change hands between the two servers (``hand_over``, ``adopt``): a client
of the local service's runtime route is passed, socket and first bytes, to the endpoint's model
server, which answers its invocations itself from then on and passes the connection back for
any other request. One loopback hop per invocation less: the service's Python never sees them.
"""
import array
import asyncio
import functools
import socket
import struct

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MORE = object()  # a hand-over rule's answer: the request line is not whole yet
HEAD_LIMIT = 8192  # bytes of a request line waited for before deciding without it
PASS_LIMIT = 1024 * 1024  # first bytes passed with a connection, at most
_LENGTH = struct.Struct("!I")



class ClientGone(Exception):
    """The client left before its request was whole: there is no one to answer."""


class BodyTooLarge(Exception):
    """A request body over its route's limit (413). It is never buffered to find out: refused
    from its declared length, or once its pieces pass the limit. ``read``: the bytes of it
    read so far; ``more``: whether some of it is still unread."""

    def __init__(self, size, limit, read=0, more=True):
        super().__init__(f"request body of {size} bytes is over this route's limit of "
                         f"{limit} bytes")
        self.size, self.limit, self.read, self.more = size, limit, read, more


def check_declared(declared, limit):
    """Refuse a body from its Content-Length (llhttp has checked it is a number)."""
    if declared is not None and int(declared) > limit:
        raise BodyTooLarge(int(declared), limit)


async def read_body(receive, declared, limit) -> bytes:
    """A whole body, in memory, from the ASGI server (both servers read bodies here). One
    loop, no generator: the model server's every invocation comes through it."""
    check_declared(declared, limit)
    body, more = bytearray(), True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            raise BodyTooLarge(len(body), limit, len(body), more)
    return bytes(body)


async def body_pieces(receive, limit):
    """A body's pieces as they arrive, up to ``limit`` bytes in all (for bodies that are
    streamed to a file, not held)."""
    total, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        piece, more = message.get("body", b""), message.get("more_body", False)
        total += len(piece)
        if total > limit:
            raise BodyTooLarge(total, limit, total, more)
        yield piece


# What this module uses of uvicorn beyond its public API, by where it lives: the pins in
# requirements/ hold them, and ``missing_uvicorn_internals`` (run by the tests of both
# environments) names any that a version change removed.
UVICORN_INTERNALS = {
    "HttpToolsProtocol methods": ("data_received", "eof_received", "connection_made",
                                  "connection_lost", "on_message_begin", "on_headers_complete",
                                  "on_message_complete", "on_response_complete",
                                  "send_400_response", "_unset_keepalive_if_required"),
    "HttpToolsProtocol attributes": ("parser", "cycle", "pipeline", "transport",
                                     "server_state"),
    "RequestResponseCycle attributes": ("response_complete", "more_body"),
    "Server": ("startup", "server_state", "lifespan", "should_exit", "config"),
    "Config": ("http_protocol_class",),
}


def missing_uvicorn_internals() -> list:
    """The internals of ``UVICORN_INTERNALS`` the installed uvicorn lacks ("where: name"):
    methods looked up on their class, attributes found assigned in their class's source."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    def assigned(cls):
        source = inspect.getsource(cls)
        return lambda name: f"self.{name} =" in source or f"self.{name}:" in source

    def defined(cls):
        return lambda name: hasattr(cls, name)

    checks = {"HttpToolsProtocol methods": defined(HttpToolsProtocol),
              "HttpToolsProtocol attributes": assigned(HttpToolsProtocol),
              "RequestResponseCycle attributes": assigned(RequestResponseCycle),
              "Server": lambda name: defined(uvicorn.Server)(name) or
              assigned(uvicorn.Server)(name),
              "Config": assigned(uvicorn.Config)}
    return [f"{where}: {name}" for where, names in UVICORN_INTERNALS.items()
            for name in names if not checks[where](name)]


class _ParserReason:
    """The parser, remembering why it refused a request."""

    def __init__(self, parser):
        self._parser, self.reason = parser, ""

    def feed_data(self, data):
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self.reason = str(err)
            raise

    def __getattr__(self, name):
        return getattr(self._parser, name)


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the three answers above."""

    read_timeout = 60.0  # seconds a started request may go without a byte

    # (first bytes of a request) -> the abstract Unix socket to pass the connection to, None
    # to answer it here, or MORE; set per server (or per adopted connection)
    hand_over = None
    close_unpassed = False  # True: a request it would pass but cannot is not answered here

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parser = _ParserReason(self.parser)
        self._in_headers = self._answer_then_close = self._in_request = False
        self._stall_timer = None
        self._head = b""  # a request line still arriving, between requests
        self._passing = None  # the task passing the connection on, while it runs
        self.first_bytes = b""  # an adopted connection's, read by the server that passed it

    def connection_made(self, transport):
        super().connection_made(transport)
        if self.first_bytes:  # before anything else is read from the socket
            data, self.first_bytes = self.first_bytes, b""
            self.data_received(data)

    def data_received(self, data):
        if self.hand_over is not None and self._between_requests():
            data, self._head = self._head + data, b""
            where = self.hand_over(data)
            if where is MORE and len(data) < HEAD_LIMIT:
                self._head = data
                self._watch()
                return
            if where not in (None, MORE):  # nothing more is read until it is decided
                self.transport.pause_reading()
                self._passing = self.loop.create_task(self._pass(where, data))
                return
        elif self._passing is not None:  # read before the pause took: goes with the rest
            self._head += data
            return
        super().data_received(data)
        self._watch()

    def _between_requests(self) -> bool:
        cycle = self.cycle
        return self._passing is None and not self._in_request and not self.pipeline and (
            cycle is None or cycle.response_complete)

    async def _pass(self, where, data):
        """Hand the connection and its first bytes to the server listening on ``where``; if
        that server does not take it, answer here (or close, with ``close_unpassed``)."""
        sock = self.transport.get_extra_info("socket")
        taken = sock is not None and await send_connection(where, sock.fileno(), data)
        self._passing = None
        if self.transport.is_closing():
            return
        if taken or self.close_unpassed:  # ours is only a descriptor: the connection lives on
            self._unset_keepalive_if_required()  # over there (or the client reconnects)
            self.transport.close()
            return
        data, self._head = data + self._head, b""
        self.transport.resume_reading()
        super().data_received(data)
        self._watch()

    def _watch(self):
        """(Re)start the stall timer while a request is incomplete."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._started() and not self.transport.is_closing():
            self._stall_timer = self.loop.call_later(self.read_timeout, self._stalled)

    def _started(self) -> bool:
        """Whether a request has begun (its first bytes may still wait in ``_head``)."""
        return self._in_request or bool(self._head)

    def _stalled(self):
        self._stall_timer = None
        if self._started() and not self.transport.is_closing():
            message = (f"Request timed out: nothing arrived for {self.read_timeout:g} s "
                       "in the middle of the request.").encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; "
                                 b"charset=utf-8\r\ncontent-length: %d\r\nconnection: close"
                                 b"\r\n\r\n%s" % (len(message), message))
            self.transport.close()

    def connection_lost(self, exc):
        self._in_request = False
        self._watch()
        super().connection_lost(exc)

    def on_message_complete(self):
        self._in_request = False
        super().on_message_complete()

    def send_400_response(self, msg):
        reason = getattr(self.parser, "reason", "")
        super().send_400_response(f"{msg} {reason}".strip())

    def on_message_begin(self):
        super().on_message_begin()
        self._in_headers = self._in_request = True

    def on_headers_complete(self):
        self._in_headers = False
        super().on_headers_complete()

    def eof_received(self):
        if self._head:  # a request line cut short: the parser tells what is wrong with it
            head, self._head = self._head, b""
            super().data_received(head)
        cycle = self.cycle
        if self._in_headers:
            self.send_400_response("The request ended inside its headers.")
        elif cycle is not None and not cycle.response_complete:
            if cycle.more_body:
                self.send_400_response("The request ended before its body did.")
            else:
                self._answer_then_close = True
                return True  # keep the transport open for the answer
        return None  # close

    def on_response_complete(self):
        super().on_response_complete()
        if self._answer_then_close:
            self.transport.close()


class Server(uvicorn.Server):
    """uvicorn's server, which also adopts the connections passed to it on ``channels``
    (listening Unix sockets, each with the rule its connections' requests follow then, or None
    for the protocol class's own) and calls ``on_ready`` once it serves."""

    def __init__(self, config, on_ready=None, channels=()):
        super().__init__(config)
        self.on_ready, self.channels = on_ready, list(channels)

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        for channel, rule in self.channels:
            adopt(asyncio.get_running_loop(), channel,
                  functools.partial(self._adopted_protocol, rule))
        if self.on_ready is not None:
            self.on_ready()

    def _adopted_protocol(self, rule):
        protocol = self.config.http_protocol_class(
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state)
        if rule is not None:
            protocol.hand_over, protocol.close_unpassed = rule, True
        return protocol


async def send_connection(where, fd, data, timeout=2.0) -> bool:
    """Pass a connection (its descriptor) and the bytes already read from it to the server
    listening on ``where``, without blocking the event loop: True once that server has taken
    it, False if it did not (then it is still ours alone). Once the descriptor is sent the
    receiver decides: it takes the connection or closes the channel, never both, so a slow
    receiver is waited for rather than given up on (two owners would split its requests)."""
    if len(data) > PASS_LIMIT:
        return False
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(channel, where), timeout)
            # a few bytes into an empty socket buffer: never blocks
            channel.sendmsg([_LENGTH.pack(len(data))], [
                (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            if data:  # (sending nothing to a receiver already done would fail: EPIPE)
                await loop.sock_sendall(channel, data)
        except OSError:
            pass  # whether it took the connection all the same, it tells below
        try:
            return await loop.sock_recv(channel, 1) == b"1"
        except OSError:
            return False


async def receive_connection(channel):
    """(the passed socket, its first bytes), from a channel connection ``send_connection``
    made; the sender is told it was taken. On any failure the socket is closed, not taken."""
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    ready = loop.create_future()
    loop.add_reader(channel.fileno(), ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_reader(channel.fileno())
    fds = array.array("i")
    head, ancillary, _, _ = channel.recvmsg(_LENGTH.size, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if len(fds) != 1 or len(head) != _LENGTH.size:
        for fd in fds:
            socket.close(fd)
        raise ValueError("not a passed connection")
    sock = socket.socket(fileno=fds[0])
    try:
        size, data = _LENGTH.unpack(head)[0], bytearray()
        while len(data) < size:
            chunk = await loop.sock_recv(channel, min(65536, size - len(data)))
            if not chunk:
                raise ValueError("the passed bytes were cut short")
            data += chunk
        await loop.sock_sendall(channel, b"1")
    except BaseException:  # errors, and a timeout's cancellation: not taken
        sock.close()
        raise
    return sock, bytes(data)


TAKE_SECONDS = 10.0  # a sender has this long to send what it passes


def adopt(loop, listener, make_protocol):
    """Take connections other servers pass on ``listener`` (a listening Unix socket): each
    becomes a connection of ``make_protocol()`` (a Protocol), its first bytes read first."""
    listener.setblocking(False)

    def accept():
        try:
            channel, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        loop.create_task(_take(loop, channel, make_protocol))

    loop.add_reader(listener.fileno(), accept)


async def _take(loop, channel, make_protocol):
    with channel:
        try:
            sock, data = await asyncio.wait_for(receive_connection(channel), TAKE_SECONDS)
        except (OSError, ValueError, asyncio.TimeoutError):
            return
    protocol = make_protocol()
    protocol.first_bytes = data
    await loop.connect_accepted_socket(lambda: protocol, sock)


def listener(name):
    """A listening abstract Unix socket (Linux: no file, no path length limit)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0" + name)
    sock.listen(128)
    return sock


def request_line(head):
    """(method, target) of the request ``head`` starts with; MORE while its line is not whole;
    None if it is not a request line."""
    end = head.find(b"\r\n")
    if end < 0:
        # a line ended by a bare LF is no request line: the parser answers it (400) at once,
        # rather than the hand-over waiting for a CRLF that will not come
        return None if b"\n" in head else MORE
    parts = head[:end].split(b" ")
    if len(parts) != 3:
        return None
    return parts[0].decode("latin-1"), parts[1].decode("latin-1")
