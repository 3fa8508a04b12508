"""sagemaker-runtime's InvokeEndpoint answers, as SageMaker gives them, and the checks the
local service makes of every request (loopback Host, the signature's region).

Shared by the local service and by a model server answering the runtime route itself on a
connection the service passed to it (see ``protocol``), so that a client cannot tell which of
the two answered. Runs in both environments: no imports beyond the standard library.
"""
import json
import re
import urllib.parse
import uuid

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
VARIANT = "AllTraffic"  # the one production variant a local endpoint has
TIMED_OUT = ("Your invocation timed out while waiting for a response from container primary. "
             "Review the latency metrics for each container in Amazon CloudWatch, resolve the "
             "issue, and try again.")
_CREDENTIAL = re.compile(r"Credential=[^/,]*/\d{8}/([^/,]+)/([^/,]+)/aws4_request")
_JSON = "application/x-amz-json-1.1"


def loopback(host: str) -> bool:
    """Only loopback names: a page on another site that rebinds its DNS name to 127.0.0.1
    sends its own name as Host."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in LOOPBACK_HOSTS


def foreign_region(authorization: str, query: str, region: str):
    """The region a request was signed for when it is not ``region`` (a regional endpoint
    answers its own only); S3, whose buckets are not kept per region here, takes any."""
    credential = authorization or urllib.parse.unquote(
        urllib.parse.parse_qs(query).get("X-Amz-Credential", [""])[0])
    match = _CREDENTIAL.search(credential if "Credential=" in credential
                               else f"Credential={credential}")
    if match and match.group(2) != "s3" and match.group(1) != region:
        return match.group(1)
    return None


def error(code, message, status=400):
    """(status, headers, body): AWS's JSON 1.1 error."""
    return status, {"Content-Type": _JSON, "x-amzn-ErrorType": code}, json.dumps(
        {"__type": code, "message": message}).encode()


def wrong_region(foreign, region):
    return error("InvalidSignatureException", "Credential should be scoped to a valid region, "
                 f"not '{foreign}'. This local service serves {region}.", 403)


def foreign_host():
    return error("AccessDenied", "the local service answers only requests addressed to a "
                 "loopback host name", 403)


def too_large(size):
    return error("ValidationError", f"Request body is over the 6 MB limit ({size} bytes).", 413)


def model_error(status, original, log_group_arn):
    """SageMaker's ModelError (HTTP 424): what the model's container answered."""
    kind = "client" if 400 <= status < 500 else "server"
    return 424, {"Content-Type": _JSON, "x-amzn-ErrorType": "ModelError"}, json.dumps({
        "__type": "ModelError", "OriginalStatusCode": status, "OriginalMessage": original,
        "message": f"Received {kind} error ({status}) from primary with message "
                   f"\"{original}\".",
        "LogStreamArn": log_group_arn}).encode()


def timed_out(log_group_arn):
    return model_error(0, TIMED_OUT, log_group_arn)


def answer(status, content_type, body, log_group_arn):
    """The runtime's answer for what the model server's handlers gave."""
    if status >= 400:
        try:
            original = json.loads(body).get("error", body.decode(errors="replace"))
        except (ValueError, AttributeError):
            original = body.decode(errors="replace")
        return model_error(status, original, log_group_arn)
    return status, {"Content-Type": content_type,
                    "x-Amzn-Invoked-Production-Variant": VARIANT}, body


def request_id():
    """One per response, as AWS's."""
    return str(uuid.uuid4())
