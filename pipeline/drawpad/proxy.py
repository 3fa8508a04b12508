"""A loopback server for the drawing pad of a SageMaker endpoint.

The browser cannot sign AWS requests, so this serves the page and forwards its
``POST /endpoints/<name>/invocations`` to sagemaker-runtime with the user's credentials.
Only the one endpoint named on the command line is reachable through it.
"""
import json
import socket
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.exceptions import ClientError

from pipeline import drawpad


def make_server(runtime, endpoint, port=0):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, fmt, *args):
            pass

        def _send(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path in ("/", f"/draw/{endpoint}"):
                self._send(200, "text/html; charset=utf-8", drawpad.page(endpoint))
            else:
                self._send(404, "application/json", b'{"message": "not found"}')

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            if path != f"/endpoints/{endpoint}/invocations":
                self._send(404, "application/json", json.dumps(
                    {"message": f"this pad only reaches endpoint {endpoint}"}).encode())
                return
            try:
                answer = runtime.invoke_endpoint(
                    EndpointName=endpoint, Body=body,
                    ContentType=self.headers.get("Content-Type", "application/json"),
                    Accept=self.headers.get("Accept", "application/json"))
                self._send(200, answer.get("ContentType", "application/json"),
                           answer["Body"].read())
            except ClientError as err:
                status = err.response["ResponseMetadata"].get("HTTPStatusCode", 502)
                self._send(status if 400 <= status < 600 else 502, "application/json",
                           json.dumps({"message": err.response["Error"].get("Message", str(err))})
                           .encode())

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server
