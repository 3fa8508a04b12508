"""HTTP/1.1 for the local servers (the model server, and the local service, which loads this
file from here): uvicorn's protocol on httptools' llhttp parser, with answers it does not give.
Its 400 for a request llhttp refuses (folded headers, Content-Length with Transfer-Encoding, bad
chunk sizes: the ambiguities request smuggling feeds on) says why, and comes after the answers
to the requests before it; a client that half-closes its side (sends, then shuts down writing)
still gets every answer, or a 400 if its last request was cut short; a request that stops
arriving half-way (headers or body) gets a 408 after ``read_timeout`` seconds without a byte
(uvicorn times out only idle keep-alive connections); and a connection is closed as HTTP
servers close it (``_Lingering``), so that no reset destroys an answer.

Connections can also change hands between the two servers (``hand_over``,
``connection_passing``): a client of the local service's runtime route is passed, socket and
first bytes, to the endpoint's model server, which answers its invocations itself and passes
the connection back for any other request, and when it stops. One loopback hop per invocation
less: the service's Python never sees them. With a hand-over rule the parser gets one request
at a time (``request_ends``), so each request of a pipelined mix goes to its own server.
"""
import asyncio
import functools

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from connection_passing import adopt, send_connection, stop_adopting
from request_ends import RequestEnds

MORE = object()  # a hand-over rule's answer: the request line is not whole yet
HEAD_LIMIT = 8192  # bytes of a request line waited for before deciding without it



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
                                  "send_400_response", "_unset_keepalive_if_required",
                                  "shutdown"),
    "HttpToolsProtocol attributes": ("parser", "cycle", "pipeline", "transport",
                                     "server_state", "flow", "loop"),
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


class _Lingering:
    """The connection's transport, closed the way HTTP servers close: our side ends first
    (FIN), and what the client still sends is read and dropped until it ends too, for
    ``LINGER_SECONDS`` or ``LINGER_BYTES`` at most. Closed at once with unread bytes, the
    kernel would answer with a reset, which can destroy the answer just written before the
    client reads it."""

    LINGER_SECONDS = 2.0
    LINGER_BYTES = 1024 * 1024  # a sender of more is cut off (a body refused as too large)

    def __init__(self, transport, protocol):
        self._transport, self._protocol, self._closed = transport, protocol, False
        self._dropped = 0

    def drop(self, data):
        """Bytes read after we closed our side."""
        self._dropped += len(data)
        if self._dropped > self.LINGER_BYTES:
            self._transport.close()

    def close(self):
        transport = self._transport
        if self._closed or transport.is_closing():
            return
        self._closed = True
        if self._protocol.client_done:
            transport.close()  # nothing more can come
            return
        try:
            transport.write_eof()  # after what is still buffered
            transport.resume_reading()
        except (OSError, RuntimeError, NotImplementedError):
            transport.close()
            return
        self._protocol.lingering = True
        self._protocol.loop.call_later(self.LINGER_SECONDS, transport.close)

    def close_now(self):
        """Close our descriptor only (a passed connection lives on with its new owner)."""
        self._closed = True
        self._transport.close()

    def is_closing(self):
        return self._closed or self._transport.is_closing()

    def write(self, data):
        if not self._closed:  # (an answer still being written when the connection was ended)
            self._transport.write(data)

    def __getattr__(self, name):
        return getattr(self._transport, name)


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the answers above, and connections that change hands.

    With a hand-over rule, bytes are held (``_held``) and given to the parser one request at a
    time (``RequestEnds``): each request, once the one before it is answered, goes where the
    rule says; so every request of a pipelined mix is answered by its own server, in order.
    """

    read_timeout = 60.0  # seconds a started request may go without a byte

    # (first bytes of a request) -> the abstract Unix socket to pass the connection to, None
    # to answer it here, or MORE; set per server (or per adopted connection)
    hand_over = None
    close_unpassed = False  # True: a request it would pass but cannot is not answered here
    hand_back = None  # an adopted connection's way back: where it goes when this server stops
    split_limit = 1024 * 1024  # bytes of a request kept to find its end (past it: answered
    # here, with the requests after it)
    server_stopping = None  # an adopted connection's: whether its server has begun to stop

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parser = _ParserReason(self.parser)
        self._in_headers = self._answer_then_close = self._in_request = False
        self.client_done = self._leaving = self._here_once = self.lingering = False
        self._refused = None  # a 400 held back until the answers before it are written
        self._unanswered = 0  # requests read whose answers are not all written yet
        self._stall_timer = None
        self._held = b""  # bytes read and not yet given to the parser
        self._passing = None  # the task passing the connection on, while it runs
        self._ends = None  # where each request ends, with a hand-over rule
        self.first_bytes = b""  # an adopted connection's, read by the server that passed it

    def connection_made(self, transport):
        super().connection_made(transport)
        self.transport = _Lingering(transport, self)
        if self.hand_over is not None:  # (an adopted one's rule and limit are set by now)
            self._ends = RequestEnds(self.split_limit)
        if self.first_bytes:  # before anything else is read from the socket
            data, self.first_bytes = self.first_bytes, b""
            if self.hand_over is None:
                self.data_received(data)
            else:  # decided once reading runs: uvloop starts reading after this returns,
                self._held = data  # undoing a pause made now (bytes read meanwhile follow)
                self.loop.call_soon(self._advance)
        if self.server_stopping is not None and self.server_stopping():
            self.loop.call_soon(self.shutdown)  # adopted as its server stops: told as the rest

    def data_received(self, data):
        if self.lingering:
            return self.transport.drop(data)  # we closed our side: nothing more is read
        if self._refused is not None:
            return  # the parser has failed: nothing after it is read
        if self.hand_over is None:
            super().data_received(data)
            self._watch()
            return
        self._held += data
        if self._passing is None:
            self._advance()

    def _advance(self):
        """Give the parser the held bytes, a request at a time; between requests, pass the
        connection on if the rule (or this server stopping) says so."""
        while self._held and self._passing is None and not self.transport.is_closing():
            if not self._in_request:
                if not self._answered_all():
                    self.flow.pause_reading()  # held until the answers before are written
                    return
                where = self._where()
                if where is MORE:
                    break
                if where is not None:
                    return self._pass_on(where)
            self._feed()
        if not self._held and self.client_done and self._passing is None \
                and not self.transport.is_closing() and not self._input_ended():
            self.transport.close()  # the client is done, and so are we
        self._watch()

    def _where(self):
        """Where the request at the head of ``_held`` goes: None (here), an address, or MORE."""
        if self._leaving:
            return self.hand_back
        if self._here_once:
            self._here_once = False
            return None
        where = self.hand_over(self._held)
        if where is MORE and (len(self._held) >= HEAD_LIMIT or self.client_done):
            return None  # no request line: the parser says what is wrong
        return where

    def _feed(self):
        """The parser gets the current request's bytes from ``_held``, and no more."""
        end = self._ends.end(self._held)
        if end is None:
            if self._ends.unsplittable:  # too long to split: what follows is answered here
                self.hand_over = None
            data, self._held = self._held, b""
        else:
            data, self._held = self._held[:end], self._held[end:]
        super().data_received(data)

    def _pass_on(self, where):
        """Start passing the connection to ``where``. Nothing more is read until that is
        decided: bytes read meanwhile would stay here, with a connection that lives on there."""
        self.transport.pause_reading()
        self._passing = self.loop.create_task(self._pass(where))

    async def _pass(self, where):
        """Hand the connection and its unread bytes to the server listening on ``where``; if
        that server does not take it, answer here (or close, with ``close_unpassed``)."""
        sock = self.transport.get_extra_info("socket")
        data = self._held
        taken = sock is not None and await send_connection(where, sock.fileno(), data)
        self._passing = None
        if self.transport.is_closing():
            return
        if taken or self.close_unpassed:  # ours is only a descriptor: the connection lives on
            self._unset_keepalive_if_required()  # over there (or the client reconnects)
            self.transport.close_now()
            return
        self._here_once = True
        self.transport.resume_reading()
        self._advance()

    def shutdown(self):
        """This server is stopping: an adopted connection goes back once its current request
        is answered (uvicorn's own would close, and lose the requests sent after it)."""
        if self.hand_back is None:
            return super().shutdown()
        self._leaving = True
        self._leave_if_idle()

    def _leave_if_idle(self):
        """Go back now, unless a request is being read or answered (then after its answer)."""
        if self._passing is None and self._answered_all() and not self._in_request \
                and not self.transport.is_closing():
            if self._held:  # (a request line still arriving goes with it)
                self._advance()
            else:
                self._pass_on(self.hand_back)

    def _answered_all(self) -> bool:
        return self._unanswered == 0

    def _watch(self):
        """(Re)start the stall timer while a request is incomplete."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._started() and not self.transport.is_closing():
            self._stall_timer = self.loop.call_later(self.read_timeout, self._stalled)

    def _started(self) -> bool:
        """Whether a request has begun (its first bytes may still be held)."""
        return self._in_request or (bool(self._held) and self._answered_all())

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
        """The 400 for a refused request, after the answers to the requests before it (the
        connection closes with it: nothing after a refused request can be framed)."""
        reason = getattr(self.parser, "reason", "")
        message = f"{msg} {reason}".strip()
        own = self._in_request and not self._in_headers  # its headers were read: it has a cycle
        if own and self.pipeline and self.pipeline[0][0] is self.cycle:
            self.pipeline.popleft()  # queued behind others: it will not run, this is its answer
            self._unanswered -= 1
            own = False
        if own and self.cycle.response_complete:
            self.transport.close()  # it was answered already (too large, say)
        elif self._unanswered - own <= 0:
            super().send_400_response(message)
        else:
            self._refused = message
            self.flow.pause_reading()

    def on_message_begin(self):
        super().on_message_begin()
        self._in_headers = self._in_request = True

    def on_headers_complete(self):
        self._in_headers = False
        self._unanswered += 1
        super().on_headers_complete()

    def eof_received(self):
        if self.lingering:
            return None  # the client is done too: close
        self.client_done = True
        if self._passing is not None:
            return True  # it goes with the connection
        if self._held:
            self._advance()  # decided now that nothing more comes; answered before closing
            return None if self.transport.is_closing() else True
        return self._input_ended()

    def _input_ended(self):
        """The client sent all it will: a request cut short gets its 400; answers still due
        are written before the connection closes (True: keep it open for them)."""
        cycle = self.cycle
        if self._refused is not None:
            pass  # its 400 follows the answers before it
        elif self._in_headers:
            self.send_400_response("The request ended inside its headers.")
        elif self._in_request and cycle is not None and cycle.more_body \
                and not cycle.response_complete:
            self.send_400_response("The request ended before its body did.")
        elif not self._answered_all():
            self._answer_then_close = True
        return True if self._answer_then_close or self._refused is not None else None

    def on_response_complete(self):
        self._unanswered -= 1
        super().on_response_complete()
        if self.transport.is_closing() or not self._answered_all():
            return
        if self._refused is not None:
            super().send_400_response(self._refused)
        elif self._answer_then_close:
            self.transport.close()
        elif self._held:
            self._advance()
        elif self._leaving:
            self._leave_if_idle()


class Server(uvicorn.Server):
    """uvicorn's server, which also adopts the connections passed to it on ``channels``
    (listening Unix sockets, each with the attributes its connections' protocols get, such as
    their ``hand_over`` rule and ``hand_back`` address) and calls ``on_ready`` once it serves.
    When it stops it takes no more, and its adopted connections go back."""

    def __init__(self, config, on_ready=None, channels=()):
        super().__init__(config)
        self.on_ready, self.channels = on_ready, list(channels)
        self._stopping = False

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        for channel, settings in self.channels:
            adopt(asyncio.get_running_loop(), channel,
                  functools.partial(self._adopted_protocol, settings))
        if self.on_ready is not None:
            self.on_ready()

    async def shutdown(self, sockets=None):
        self._stopping = True
        for channel, _ in self.channels:
            stop_adopting(asyncio.get_running_loop(), channel)
        await super().shutdown(sockets=sockets)

    def _adopted_protocol(self, settings):
        """A protocol for a passed connection. One whose passing ends after this server told
        its connections that it stops (it was on its way) is told so itself."""
        protocol = self.config.http_protocol_class(
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state)
        for name, value in settings.items():
            setattr(protocol, name, value)
        protocol.server_stopping = lambda: self._stopping
        return protocol


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
