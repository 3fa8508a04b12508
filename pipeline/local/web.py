"""The local run browser (the local Studio) and the drawing pad, for browsers.

Pages come from ``pipeline.review``, read through the backend's own API operations (called as
boto3 calls them, so the review code is the one that reads AWS), S3 and the job logs. Forms post
back here: approve / reject a model package (``UpdateModelPackage``, which fires the approve ->
deploy rule) and delete an endpoint. A POST from another origin is refused.
"""
import urllib.parse

from botocore.exceptions import ClientError

from pipeline import drawpad
from pipeline.local.errors import ServiceError
from pipeline.local.backend.common import as_kwargs
from pipeline.local.resources import ACCOUNT
from pipeline.review import pages
from pipeline.review.runs import Sources, all_items, find_execution

HTML = {"Content-Type": "text/html; charset=utf-8"}


class BackendClient:
    """The backend with boto3's call shape and errors: ``describe_endpoint(EndpointName=...)``,
    refusals raised as botocore's ClientError."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, operation):
        method = getattr(self._backend, operation)

        def call(**request):
            try:
                return method(**as_kwargs(request))
            except ServiceError as err:
                raise ClientError({"Error": {"Code": err.code, "Message": err.message}},
                                  operation) from err
        return call


class RunBrowser:
    def __init__(self, backend, s3, home, url):
        self.backend, self.url = backend, url
        self.sources = Sources(BackendClient(backend), lambda uri: _read_object(s3, uri),
                               lambda job: _read_log(home.job_log(job)),
                               lambda uri: _list_objects(s3, uri))

    def _pipelines(self):
        return [p["PipelineName"] for p in all_items(self.sources.sagemaker.list_pipelines,
                                                       "PipelineSummaries")]

    def _execution_arn(self, ref):
        arn = find_execution(self.sources.sagemaker, self._pipelines(), ref)
        if arn is None:
            raise ServiceError("ValidationException", f"no execution {ref}", 404)
        return arn

    def _package_arn(self, group_or_name, version=None):
        return (f"arn:aws:sagemaker:{self.backend.region}:{ACCOUNT}:model-package/"
                + (f"{group_or_name}/{version}" if version else group_or_name))

    def get(self, path, query) -> tuple:
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]
        try:
            return 200, HTML, self._get(parts, query)
        except ServiceError as err:
            return err.status if err.status != 400 else 404, HTML, _not_found(err.message)
        except ClientError as err:  # what the review read through the backend does not exist
            return 404, HTML, _not_found(err.response["Error"]["Message"])

    def _get(self, parts, query):
        s = self.sources
        if not parts:
            return pages.executions_page(s, self._pipelines())
        if parts[0] == "executions" and len(parts) == 3:
            return pages.execution_page(s, self._execution_arn(parts[2]))
        if parts[0] == "jobs" and len(parts) == 2:
            return pages.job_page(s, parts[1])
        if parts == ["packages"]:
            return pages.packages_page(s)
        if parts[0] == "packages" and len(parts) in (2, 3):  # /packages/GROUP/VERSION or NAME
            arn = self._package_arn(*parts[1:])
            return pages.package_page(s, arn, query.get("message", [""])[0])
        if parts == ["endpoints"]:
            return pages.endpoints_page(s, self._pipelines())
        if parts == ["compare"]:
            a, b = (self._execution_arn(query.get(k, [""])[0].strip()) for k in ("a", "b"))
            return pages.compare_page(s, a, b)
        raise ServiceError("NotFound", f"no page at /{'/'.join(parts)}", 404)

    def post(self, path, headers, body) -> tuple:
        origin = headers.get("Origin")
        if origin and origin not in (self.url, "null"):
            return 403, HTML, pages.message_page("Refused", "cross-origin form post refused")
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        try:
            if path == "/packages/approval" and form.get("status") in ("Approved", "Rejected"):
                arn = form.get("arn", "")
                self.backend.update_model_package(arn, model_approval_status=form["status"])
                message = urllib.parse.quote(f"{form['status']}")
                return _redirect(f"/packages/{urllib.parse.quote(arn.split('/', 1)[1])}"
                                 f"?message={message}")
            if path == "/endpoints/delete" and form.get("name"):
                self.backend.delete_endpoint(form["name"])
                return _redirect("/endpoints")
        except (ServiceError, ClientError) as err:
            return 400, HTML, pages.message_page("Refused", str(err))
        return 400, HTML, pages.message_page("Bad request", "unknown form")


def _not_found(message):
    return pages.message_page("Not found", message)


def _redirect(location):
    return 303, {"Location": location, "Content-Type": "text/plain"}, b""


def _read_object(s3, uri) -> bytes:
    data = s3.get(*s3.split(uri))
    if data is None:
        raise FileNotFoundError(f"no object {uri}")
    return data


def _list_objects(s3, uri) -> list:
    bucket, prefix = s3.split(uri)
    if not s3.bucket_exists(bucket):
        return []
    return [f"s3://{bucket}/{key}" for key, _, _ in s3.list(bucket, prefix)]


def _read_log(path) -> str:
    with open(path, errors="replace") as handle:
        return handle.read()


def draw(endpoint) -> bytes:
    return drawpad.page(endpoint)
