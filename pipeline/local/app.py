"""The service as an ASGI application: a request is routed (``urls``), its body read under the
route's limit, and answered, in the shape of its API (S3's XML, else JSON) when it is refused."""
import asyncio
import functools
import hashlib
import io
import traceback
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from pipeline.local import framing
from pipeline.local.responses import FileBody, S3Protocol, error
from pipeline.local.shared import runtime_api
from pipeline.local.urls import API_LIMIT, COMPILED, S3_OBJECT_LIMIT, changes_state, s3

METHODS = {"GET", "HEAD", "PUT", "POST", "DELETE"}
EXECUTOR_THREADS = 64  # API calls, S3 and pages in flight at once (SQLite and disk are quick)


class ReadOnly(Exception):
    """The service cannot write its home (``LocalSageMaker.read_only``)."""


class Headers(dict):
    """A request's headers by lower-cased name (HTTP's names are case-insensitive)."""

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def get(self, name, default=None):
        return super().get(name.lower(), default)

    def __contains__(self, name):
        return super().__contains__(name.lower())


class Request:
    """What a route handler reads: ``command``, ``url_path``, ``query``, ``headers``, ``body``
    (an S3 object's: (file, MD5))."""

    def __init__(self, scope):
        # the path as sent (percent-encoded): handlers decode the parts they take
        self.command, self.url_path = scope["method"], scope["raw_path"].decode("latin-1")
        self.query = scope["query_string"].decode("latin-1")
        headers = Headers()
        for name, value in scope["headers"]:
            name, value = name.decode("latin-1"), value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers, self.body, self.is_s3 = headers, b"", False


class ServiceApp:
    """The service as an ASGI application, served by uvicorn (the HTTP protocol is the model
    server's too): route, read the body under the route's limit, answer."""

    def __init__(self, service):
        self.service = service
        self.workers = ThreadPoolExecutor(EXECUTOR_THREADS, thread_name_prefix="api")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        request = Request(scope)
        try:
            status, headers, body = await self._answer(request, receive)
        except framing.ClientGone:
            return
        headers = dict(headers)
        headers.setdefault("Content-Length", str(len(body)))
        headers["x-amzn-RequestId"] = runtime_api.request_id()
        await send({"type": "http.response.start", "status": status, "headers": [
            (k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]})
        if isinstance(body, FileBody):  # an S3 object: streamed, never whole in memory
            await self._stream(body, send)
            return
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, body, send):
        loop = asyncio.get_running_loop()
        try:
            while True:
                piece = await loop.run_in_executor(self.workers, body.read)
                await send({"type": "http.response.body", "body": piece,
                            "more_body": bool(piece) and len(body) > 0})
                if not piece or len(body) == 0:
                    return
        finally:
            body.close()

    async def _answer(self, request, receive):
        try:
            if not runtime_api.loopback(request.headers.get("Host", "")):
                return _closing(runtime_api.foreign_host())
            foreign = runtime_api.foreign_region(request.headers.get("Authorization", ""),
                                                 request.query, self.service.region)
            if foreign is not None:  # AWS's answer from a regional endpoint
                return runtime_api.wrong_region(foreign, self.service.region)
            if request.command not in METHODS:
                status, headers, body = error("MethodNotAllowed", f"{request.command} is not "
                                              "supported; use GET, HEAD, PUT, POST or DELETE", 405)
                return status, {**headers, "Allow": "GET, HEAD, PUT, POST, DELETE"}, body
            return await self._route(request, receive)
        except framing.BadRequest as err:
            return _closing(_refusal(request, "BadRequest", str(err), 400))
        except framing.TooLarge as err:  # what is left of the body is never read
            code = "ValidationError" if request.url_path.endswith("/invocations") else \
                "EntityTooLarge" if request.is_s3 else "RequestEntityTooLarge"
            return _closing(_refusal(request, code, str(err), 413))
        except framing.ClientGone:
            raise
        except ReadOnly as err:  # its body is never read
            return _closing(_refusal(request, "ServiceUnavailable", str(err), 503))
        except OSError as err:  # a full disk: nothing was stored; the client may try again
            return _closing(_refusal(request, "ServiceUnavailable", "the local service cannot "
                                     f"store this now: {err}", 503))
        except Exception as err:  # noqa: BLE001 - answer, log, keep serving
            traceback.print_exc()
            return error("InternalFailure", f"{type(err).__name__}: {err}", 500)

    async def _route(self, request, receive):
        svc = self.service
        for methods, pattern, when, handler, limit in COMPILED:
            match = pattern.fullmatch(request.url_path)
            if match and (methods is None or request.command in methods) and \
                    (when is None or when(request)):
                self._writable(handler, request)
                args = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                request.body = await self._body(request, receive, limit)
                if asyncio.iscoroutinefunction(handler):
                    return await handler(svc, request, **args)
                return await self._in_worker(handler, svc, request, **args)
        request.is_s3 = True
        self._writable(s3, request)
        object_put = request.command == "PUT" and "/" in request.url_path.strip("/")
        request.body = await self._body(request, receive,
                                        S3_OBJECT_LIMIT if object_put else API_LIMIT, object_put)
        return await self._in_worker(s3, svc, request)

    def _writable(self, handler, request):
        """A service that cannot write its home refuses what would change state."""
        if self.service.read_only and changes_state(handler, request):
            raise ReadOnly(f"the local service is serving read-only ("
                           f"{self.service.read_only}): start it again with room to write "
                           "in its home")

    async def _body(self, request, receive, limit, s3_object=False):
        """The body under the route's limit; an S3 object's is spooled (file, MD5)."""
        aws_chunked = "aws-chunked" in request.headers.get("Content-Encoding", "")
        if s3_object:
            body = await framing.spool_body(receive, request.headers, limit,
                                            self.service.home.root)
            if aws_chunked:
                data = await self._in_worker(framing.read_chunked, body[0], limit)
                body = (io.BytesIO(data), hashlib.md5(data).hexdigest())
            return body
        body = await framing.read_body(receive, request.headers, limit)
        if aws_chunked:
            body = framing.read_chunked(io.BytesIO(body), limit)
        return body

    async def _in_worker(self, function, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            self.workers, functools.partial(function, *args, **kwargs))


def _refusal(request, code, message, status):
    """An error in the shape of the API the request was for (S3's XML, else JSON)."""
    if request.is_s3:
        return S3Protocol.error(code, message, status)
    return error(code, message, status)


def _closing(response):
    """The response, and the connection closed after it (its request is not read further)."""
    status, headers, body = response
    return status, {**headers, "Connection": "close"}, body

