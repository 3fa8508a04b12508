"""HTTP/1.1 for the local servers (the model server, and the local service, which loads this
file from here): uvicorn's protocol on httptools' llhttp parser, with three answers it does not
give. Its 400 for a request llhttp refuses (folded headers, Content-Length with
Transfer-Encoding, bad chunk sizes: the ambiguities request smuggling feeds on) says why; a
client that half-closes its side (sends, then shuts down writing) still gets its answer, or a
400 if the request was cut short, instead of a silently dropped connection; and a request that
stops arriving half-way (headers or body) gets a 408 after ``read_timeout`` seconds without a
byte (uvicorn times out only idle keep-alive connections).
"""
import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parser = _ParserReason(self.parser)
        self._in_headers = self._answer_then_close = self._in_request = False
        self._stall_timer = None

    def data_received(self, data):
        super().data_received(data)
        self._watch()

    def _watch(self):
        """(Re)start the stall timer while a request is incomplete."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._in_request and not self.transport.is_closing():
            self._stall_timer = self.loop.call_later(self.read_timeout, self._stalled)

    def _stalled(self):
        self._stall_timer = None
        if self._in_request and not self.transport.is_closing():
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
