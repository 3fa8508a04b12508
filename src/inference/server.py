"""A model server under SageMaker's hosting contract: ``GET /ping``, ``POST /invocations``.

Serves a model directory (model.tar.gz extracted) with the handlers it carries in
``code/inference.py`` (or ``$SAGEMAKER_PROGRAM``): model_fn once, then input_fn, predict_fn and
output_fn per request. Bad input gets the handler's 4xx status and message as JSON; the server
keeps serving. Runs in the job environment (MXNet), one process per endpoint.
"""
import argparse
import importlib.util
import json
import os
import socket
import sys
import threading
import socketserver
from http import HTTPStatus

MAX_BODY = 6 * 1024 * 1024  # SageMaker's real-time payload limit
MAX_HEADERS = 100
DRAIN_LIMIT = 16 * 1024 * 1024  # an oversized body up to this is read and dropped after the 413
IDLE_SECONDS = 60  # a connection that sends nothing for this long is closed
REASONS = {s.value: s.phrase for s in HTTPStatus}


class BadRequest(Exception):
    """The request cannot be read safely: answer 400 and close the connection."""


def load_handlers(model_dir):
    program = os.environ.get("SAGEMAKER_PROGRAM", "inference.py")
    path = os.path.join(model_dir, "code", program)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no handler module {path}")
    spec = importlib.util.spec_from_file_location("user_inference", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))
    spec.loader.exec_module(module)
    return module


class ModelService:
    """The model and its handlers; one prediction at a time (MXNet's engine is shared)."""

    def __init__(self, model_dir):
        self.handlers = load_handlers(model_dir)
        self.model = self.handlers.model_fn(model_dir)
        self.lock = threading.Lock()

    def invoke(self, body, content_type, accept):
        """(status, content type, body bytes)"""
        h = self.handlers
        try:
            data = h.input_fn(body, content_type)
            with self.lock:
                prediction = h.predict_fn(data, self.model)
            result = h.output_fn(prediction, accept)
        except Exception as err:  # noqa: BLE001 - every failure becomes an HTTP answer
            status = getattr(err, "status_code", None)
            if not isinstance(status, int) or not 400 <= status < 600:
                status = 500
            message = getattr(err, "message", None) or str(err) or type(err).__name__
            return status, "application/json", json.dumps({"error": message}).encode()
        out_type = accept
        if isinstance(result, tuple):
            result, out_type = result
        if isinstance(result, str):
            result = result.encode("utf-8")
        return 200, out_type or "application/json", result


class Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 with keep-alive, parsed by hand: http.server's e-mail header parser costs more
    than a prediction. Only what the hosting contract needs: GET /ping, POST /invocations."""

    service = None  # set by serve()
    MAX_LINE = 65536
    timeout = IDLE_SECONDS  # per-connection read timeout: idle or stalled clients are dropped

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, status, content_type, body, close=False):
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                + ("Connection: close\r\n" if close else "") + "\r\n")
        self.wfile.write(head.encode("latin-1") + body)  # one write: no Nagle stall

    def _error(self, status, message, close=False):
        self._send(status, "application/json", json.dumps({"error": message}).encode(), close)

    def _read_headers(self):
        """Header name -> value. Refused: folded lines (obs-fold), lines without a colon,
        too many headers, a name given twice with different values."""
        headers = {}
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(self.MAX_LINE)
            if line in (b"\r\n", b"\n", b""):
                return headers
            if line[:1] in (b" ", b"\t"):
                raise BadRequest("folded header lines (obs-fold) are not accepted")
            if not line.endswith(b"\n"):
                raise BadRequest("header line too long")
            name, colon, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if not colon or not name or name != name.split()[0]:
                raise BadRequest("malformed header line")
            if name in headers and headers[name] != value:
                raise BadRequest(f"conflicting {name} headers")
            headers[name] = value
        raise BadRequest(f"more than {MAX_HEADERS} headers")

    @staticmethod
    def _framing(headers):
        """('chunked', None) or ('length', n), refusing ambiguous framing (smuggling)."""
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            if "content-length" in headers:
                raise BadRequest("both Content-Length and Transfer-Encoding")
            if encoding.lower() != "chunked":
                raise BadRequest(f"unsupported Transfer-Encoding {encoding!r}")
            return "chunked", None
        text = headers.get("content-length", "0")
        if not text.isdigit() or len(text) > 18:
            raise BadRequest(f"bad Content-Length {text[:40]!r}")
        return "length", int(text)

    def _read_chunked(self):
        data = bytearray()
        while True:
            line = self.rfile.readline(self.MAX_LINE).split(b";")[0].strip()
            if not line or len(line) > 16 or not all(c in b"0123456789abcdefABCDEF"
                                                      for c in line):
                raise BadRequest("bad chunk size")
            size = int(line, 16)
            if size == 0:
                while self.rfile.readline(self.MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(data)
            if len(data) + size > MAX_BODY:
                raise OverflowError(len(data) + size, 0)  # mid-body: nothing to resume
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(self.MAX_LINE) not in (b"\r\n", b"\n"):
                raise BadRequest("truncated chunk")
            data += chunk

    def _drain(self, count):
        """Read and drop ``count`` bytes in small pieces; False if the client went away."""
        while count > 0:
            piece = self.rfile.read(min(count, 65536))
            if not piece:
                return False
            count -= len(piece)
        return True

    def _read_body(self, headers):
        kind, length = self._framing(headers)
        if kind == "chunked":
            return self._read_chunked()
        if length > MAX_BODY:
            raise OverflowError(length, length)  # not buffered: drained or closed after 413
        body = self.rfile.read(length)
        if len(body) != length:
            raise BadRequest("body shorter than its Content-Length")
        return body

    def handle(self):
        try:
            self._serve_connection()
        except (socket.timeout, ConnectionError):
            pass  # an idle client, or one that went away

    def _serve_connection(self):
        while True:
            line = self.rfile.readline(self.MAX_LINE)
            if not line:
                return
            if line in (b"\r\n", b"\n"):
                continue
            if not line.endswith(b"\n"):
                self._error(414, "request line too long", close=True)
                return
            parts = line.decode("latin-1").split()
            if len(parts) != 3:
                self._error(400, "malformed request line", close=True)
                return
            method, path, version = parts
            try:
                headers = self._read_headers()
                if headers.get("expect", "").lower() == "100-continue":
                    _, length = self._framing(headers)  # refuse before inviting the body
                    if length is not None and length > MAX_BODY:
                        raise OverflowError(length, 0)  # the client waits: nothing to drain
                    self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = self._read_body(headers)
            except OverflowError as err:
                size, unread = err.args
                keep = 0 < unread <= DRAIN_LIMIT
                self._error(413, f"request body of {size} bytes is over the 6 MB limit",
                            close=not keep)
                if not keep or not self._drain(unread):
                    return
                continue
            except BadRequest as err:
                self._error(400, str(err), close=True)
                return
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            route = path.split("?", 1)[0]
            if method == "GET" and route == "/ping":
                self._send(200, "text/plain", b"", close)
            elif method == "POST" and route == "/invocations":
                self._send(*self.service.invoke(
                    body, headers.get("content-type", "application/json"),
                    headers.get("accept") or "application/json"), close=close)
            elif route in ("/ping", "/invocations"):
                self._error(405, f"{method} is not allowed on {route}", close)
            else:
                self._error(404, f"no route {route}; use GET /ping or POST /invocations", close)
            if close:
                return


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the listen backlog: bursts of clients wait in the kernel


def serve(model_dir, port, host="127.0.0.1", ready_file=None):
    Handler.service = ModelService(model_dir)
    httpd = Server((host, port), Handler)
    print(f"serving {model_dir} on http://{host}:{httpd.server_address[1]}", flush=True)
    if ready_file:
        with open(ready_file, "w") as handle:
            handle.write(str(httpd.server_address[1]))
    httpd.serve_forever()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="/opt/ml/model")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ready-file", help="write the bound port here once serving")
    args = parser.parse_args(argv)
    serve(args.model_dir, args.port, args.host, args.ready_file)


if __name__ == "__main__":
    main()
