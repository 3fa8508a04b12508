"""HTTP/1.1 for the local servers (the model server, and the local service, which loads this
file from here): uvicorn's protocol on httptools' llhttp parser, with two answers it does not
give. Its 400 for a request llhttp refuses (folded headers, Content-Length with
Transfer-Encoding, bad chunk sizes: the ambiguities request smuggling feeds on) says why; and a
client that half-closes its side (sends, then shuts down writing) still gets its answer, or a
400 if the request was cut short, instead of a silently dropped connection.
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
    """uvicorn's httptools protocol with the two answers above."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parser = _ParserReason(self.parser)
        self._in_headers = self._answer_then_close = False

    def send_400_response(self, msg):
        reason = getattr(self.parser, "reason", "")
        super().send_400_response(f"{msg} {reason}".strip())

    def on_message_begin(self):
        super().on_message_begin()
        self._in_headers = True

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
