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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 6 * 1024 * 1024  # SageMaker's real-time payload limit


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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service = None  # set by serve()

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # one line per error only; requests are too many
        pass

    def _send(self, status, content_type, body):
        head = (f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
        self.wfile.write(head.encode("latin-1") + body)  # one write: no Nagle stall

    def do_GET(self):
        if self.path == "/ping":
            self._send(200, "text/plain", b"")
        else:
            self._send(404, "application/json", b'{"error": "not found"}')

    def do_POST(self):
        if self.path.split("?")[0] != "/invocations":
            self._send(404, "application/json", b'{"error": "not found"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.rfile.read(length)
            self._send(413, "application/json", json.dumps(
                {"error": f"request body of {length} bytes is over the 6 MB limit"}).encode())
            return
        body = self.rfile.read(length)
        self._send(*self.service.invoke(body, self.headers.get("Content-Type", "application/json"),
                                        self.headers.get("Accept") or "application/json"))


def serve(model_dir, port, host="127.0.0.1", ready_file=None):
    Handler.service = ModelService(model_dir)
    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
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
