"""The local run browser (the local Studio) and the drawing pad, for browsers.

Pages come from ``pipeline.review``, read through the backend's own API operations (called as
boto3 calls them, so the review code is the one that reads AWS), S3 and the job logs. Every
state-changing button leads to a confirmation page whose form posts back here: approve / reject
a model package (``UpdateModelPackage``, which fires the approve -> deploy rule), stop or retry
an execution, delete an endpoint. Each form carries a token only this service can make (an HMAC
of the action and its subject under a secret born with the service), so a page elsewhere cannot
post one; a POST from another origin is refused as well.
"""
import hashlib
import hmac
import os
import time
import urllib.parse

from botocore.exceptions import ClientError

from pipeline import drawpad
from pipeline.local.errors import ServiceError
from pipeline.local.backend.common import as_kwargs
from pipeline.local.resources import ACCOUNT
from pipeline.review import pages, registry_pages
from pipeline.review.runs import find_execution
from pipeline.review.sources import Sources, all_items
from steps import approvals

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


# action -> (question, the form's path, its button, whether it takes a comment)
CONFIRMATIONS = {
    "approve": ("Approve {}? The approve -> deploy pipeline then puts this version behind the "
                "endpoint (the most recently approved version is the one served).",
                "/packages/approval", "Approve", True),
    "reject": ("Reject {}? If an endpoint serves it, the approve -> deploy pipeline rolls it "
               "back to the most recently approved version that remains.",
               "/packages/approval", "Reject", True),
    "stop": ("Stop execution {}? Running jobs are stopped; finished steps stay as they are.",
             "/executions/stop", "Stop", False),
    "retry": ("Retry execution {}? Its failed steps run again; succeeded ones are kept.",
              "/executions/retry", "Retry", False),
    "delete-endpoint": ("Delete endpoint {}? It stops serving at once; its configs and models "
                        "are kept until Cleanup.", "/endpoints/delete", "Delete", False),
}
REVIEWER = "the local run browser"  # who approves from these pages (no sign-in here)


class RunBrowser:
    def __init__(self, backend, s3, home, url):
        self.backend, self.url = backend, url
        self._secret = os.urandom(32)
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
            return pages.executions_page(s, self._pipelines(), _one(query, "pipeline"),
                                         _one(query, "status"))
        if parts[0] == "executions" and len(parts) == 3:
            return pages.execution_page(s, self._execution_arn(parts[2]))
        if parts[0] == "jobs" and len(parts) == 2:
            return pages.job_page(s, parts[1])
        if parts == ["packages"]:
            return registry_pages.packages_page(s)
        if parts[0] == "packages" and len(parts) in (2, 3):  # /packages/GROUP/VERSION or NAME
            arn = self._package_arn(*parts[1:])
            return registry_pages.package_page(s, arn, query.get("message", [""])[0])
        if parts == ["compare-packages"]:
            return registry_pages.package_compare_page(s, _one(query, "a"), _one(query, "b"))
        if parts == ["endpoints"]:
            return registry_pages.endpoints_page(s)
        if parts == ["compare"]:  # ?a=ID&b=ID, more with &e=ID
            refs = [ref.strip() for key in ("a", "b", "e") for ref in query.get(key, [])]
            if len([ref for ref in refs if ref]) < 2:
                raise ServiceError("NotFound", "compare needs two or more executions", 404)
            return pages.compare_page(s, [self._execution_arn(ref) for ref in refs if ref])
        if parts == ["confirm"]:
            return self._confirm(_one(query, "action"), _one(query, "subject"))
        raise ServiceError("NotFound", f"no page at /{'/'.join(parts)}", 404)

    def token(self, action: str, subject: str) -> str:
        """The form token of one action on one subject (see the module's docstring)."""
        return hmac.new(self._secret, f"{action}\0{subject}".encode(), hashlib.sha256).hexdigest()

    def _confirm(self, action, subject):
        if action not in CONFIRMATIONS or not subject:
            raise ServiceError("NotFound", "nothing to confirm: unknown action or no subject", 404)
        question, path, button, comment = CONFIRMATIONS[action]
        fields = {"subject": subject, "action": action, "token": self.token(action, subject)}
        return registry_pages.confirm_page(f"{button}?", question.format(subject), path, fields,
                                           button, comment)

    def post(self, path, headers, body) -> tuple:
        origin = headers.get("Origin")
        if origin and origin != self.url:
            return 403, HTML, pages.message_page("Refused", "cross-origin form post refused")
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        action, subject = form.get("action", ""), form.get("subject", "")
        if action not in CONFIRMATIONS or CONFIRMATIONS[action][1] != path or not subject:
            return 400, HTML, pages.message_page("Bad request", "unknown form")
        if not hmac.compare_digest(form.get("token", ""), self.token(action, subject)):
            return 403, HTML, pages.message_page(
                "Refused", "this form was not made by this service (or the service restarted "
                           "since): open the page again and confirm there")
        try:
            return self._act(action, subject, form.get("comment", "").strip())
        except (ServiceError, ClientError) as err:
            return 400, HTML, pages.message_page("Refused", str(err))

    def _act(self, action, subject, comment):
        sm = self.sources.sagemaker
        if action in ("approve", "reject"):
            status = "Approved" if action == "approve" else "Rejected"
            package = sm.describe_model_package(ModelPackageName=subject)
            sm.update_model_package(**approvals.approval_update(
                subject, status, REVIEWER, comment, package, time.time()))
            message = urllib.parse.quote(
                f"{status}: the approve -> deploy pipeline now serves the most recently "
                "approved version (see Executions and Endpoints)")
            return _redirect(f"/packages/{urllib.parse.quote(subject.split('/', 1)[1])}"
                             f"?message={message}")
        if action == "delete-endpoint":
            sm.delete_endpoint(EndpointName=subject)
            return _redirect("/endpoints")
        if action == "stop":
            sm.stop_pipeline_execution(PipelineExecutionArn=subject)
        else:
            sm.retry_pipeline_execution(PipelineExecutionArn=subject)
        pipeline, run_id = subject.split("/")[1], subject.split("/")[-1]
        return _redirect(f"/executions/{urllib.parse.quote(pipeline)}/{urllib.parse.quote(run_id)}")


def _one(query, name) -> str:
    return query.get(name, [""])[0]


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
