"""The wire of sagemaker-runtime: InvokeEndpoint (``POST /endpoints/{name}/invocations``) and
InvokeEndpointAsync (``.../async-invocations``: checked against botocore's model, kept in the
store from its 202 until it is answered, so that a restart finishes it)."""
import asyncio
import json
import os
import re
import sqlite3
import uuid

import botocore.session

from pipeline.local import constraints
from pipeline.local.endpoints import (INVOCATION_LIMIT, HostingError, InvocationTimeout,
                                      log_group_arn)
from pipeline.local.errors import ServiceError
from pipeline.local.resources import ACCOUNT
from pipeline.local.responses import Response, error
from pipeline.local.s3 import UnsupportedName
from pipeline.local.shared import runtime_api

ASYNC_SHAPE = botocore.session.get_session().get_service_model(
    "sagemaker-runtime").operation_model("InvokeEndpointAsync").input_shape
ASYNC_TIMEOUT = 900  # InvokeEndpointAsync's default InvocationTimeoutSeconds (15 minutes)
PENDING_ASYNC = "async-invocation"  # the store's kind for accepted, unanswered invocations
RESUME_WAIT = 120.0  # seconds a resumed invocation waits for its endpoint to be InService


class RuntimeProtocol:
    """sagemaker-runtime: InvokeEndpoint (``POST /endpoints/{name}/invocations``) and
    InvokeEndpointAsync (``.../async-invocations``)."""

    def __init__(self, backend, hosting, s3, store):
        """``store``: where accepted asynchronous invocations are kept until answered, so that
        a service killed in between finishes them when it starts again (``resume``)."""
        self.backend, self.hosting, self.s3, self.store = backend, hosting, s3, store
        self._background = set()  # async invocations in progress (a reference keeps each)

    async def invoke(self, endpoint, body, content_type, accept) -> Response:
        """On the service's event loop: only the model server is waited for. (Once a client's
        connection has been passed to the endpoint's model server, its next invocations are
        answered there, in the same words: ``runtime_api``.)"""
        if len(body) > INVOCATION_LIMIT:
            return runtime_api.too_large(len(body))
        if self.hosting.port_of(endpoint) is None:  # the backend is asked only to explain why
            try:
                status = self.backend.describe_endpoint(endpoint)["EndpointStatus"]
            except ServiceError:
                return error("ValidationError",
                             f"Endpoint {endpoint} of account {ACCOUNT} not found.")
            return error("ValidationError", f"Endpoint {endpoint} is {status}; "
                         "it can be invoked only when InService.")
        log_group = log_group_arn(self.backend.region, endpoint)
        try:
            status, out_type, out = await self.hosting.invoke(endpoint, body, content_type,
                                                              accept)
        except InvocationTimeout:
            return runtime_api.timed_out(log_group)
        except (HostingError, OSError) as err:
            return error("ServiceUnavailable", str(err), 503)
        return runtime_api.answer(status, out_type, out, log_group)

    async def invoke_async(self, endpoint, headers) -> Response:
        """202 at once with where the answer will be, as SageMaker does: the input is read from
        S3 and the model invoked in the background; the answer goes to the endpoint config's
        S3OutputPath as ``<InferenceId>.out``, a failure to S3FailurePath as
        ``<InferenceId>-error.out`` (to the output path when the config has none)."""
        try:
            given = async_members(headers)  # the request's shape first, as AWS checks it
        except ServiceError as err:
            return error(err.code, err.message)
        try:
            described = self.backend.describe_endpoint(endpoint)
            status = described["EndpointStatus"]
            config = self.backend.describe_endpoint_config(described["EndpointConfigName"])
        except ServiceError:
            return error("ValidationError", f"Endpoint {endpoint} of account {ACCOUNT} not found.")
        if status != "InService":
            return error("ValidationError", f"Endpoint {endpoint} is {status}; it can be invoked "
                         "only when InService.")
        output = config.get("AsyncInferenceConfig", {}).get("OutputConfig")
        if not output:
            return error("ValidationError", f"Endpoint {endpoint} is not configured for "
                         "asynchronous inference: its endpoint config has no "
                         "AsyncInferenceConfig.")
        try:
            source = given.get("InputLocation", "")
            if not source.startswith("s3://"):
                raise ServiceError("ValidationError", "InputLocation must be the s3:// URI of "
                                   "the input (the local service reads no https input)")
            inference_id = given.get("InferenceId") or str(uuid.uuid4())
            answer_uri = "/".join(filter(None, [output["S3OutputPath"].rstrip("/"),
                                                given.get("S3OutputPathExtension", "").strip("/"),
                                                f"{inference_id}.out"]))
            failure_uri = (f"{output['S3FailurePath'].rstrip('/')}/{inference_id}-error.out"
                           if output.get("S3FailurePath") else answer_uri)
            for uri in {source, answer_uri, failure_uri}:  # refused now, not lost later
                self.s3.path(*self.s3.split(uri))
        except ServiceError as err:
            return error(err.code, err.message)
        except (UnsupportedName, ValueError) as err:
            return error("ValidationError", f"the local store cannot hold this request's "
                                            f"input or answer: {err}")
        accepted = {"Endpoint": endpoint, "Source": source, "Answer": answer_uri,
                    "Failure": failure_uri,
                    "Timeout": float(given.get("InvocationTimeoutSeconds", ASYNC_TIMEOUT)),
                    "ContentType": given.get("ContentType", "application/json"),
                    "Accept": given.get("Accept", "application/json")}
        key = uuid.uuid4().hex
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, self.store.put, PENDING_ASYNC, key, {**accepted, "Key": key})
        except (sqlite3.OperationalError, OSError) as err:  # not kept: not accepted
            return error("ServiceUnavailable", f"the local service cannot keep this request "
                         f"now: {err}", 503)
        self._later(key, accepted)
        located = {"X-Amzn-SageMaker-OutputLocation": answer_uri}
        if output.get("S3FailurePath"):
            located["X-Amzn-SageMaker-FailureLocation"] = failure_uri
        return 202, {"Content-Type": "application/json", **located}, json.dumps(
            {"InferenceId": inference_id}).encode()

    def _later(self, key, accepted):
        task = asyncio.get_running_loop().create_task(self._answer_later(key, accepted))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def resume(self, wait=RESUME_WAIT):
        """After a restart: finish every accepted invocation the last run did not, once its
        endpoint is InService again (a failure is written if it does not come back)."""
        loop = asyncio.get_running_loop()
        for accepted in await loop.run_in_executor(None, self.store.list, PENDING_ASYNC):
            key = accepted.pop("Key")
            deadline = loop.time() + wait
            while loop.time() < deadline and not self._in_service(accepted["Endpoint"]):
                await asyncio.sleep(0.5)
            self._later(key, accepted)

    def _in_service(self, endpoint) -> bool:
        try:
            return self.backend.describe_endpoint(endpoint)["EndpointStatus"] == "InService"
        except ServiceError:
            return False

    async def _answer_later(self, key, accepted):
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(None, self._read, accepted["Source"])
            status, _, out = await self.hosting.invoke(
                accepted["Endpoint"], body, accepted["ContentType"], accepted["Accept"],
                accepted["Timeout"])
            target = accepted["Answer"] if status < 400 else accepted["Failure"]
        except (HostingError, OSError, ValueError) as err:
            target, out = accepted["Failure"], f"{type(err).__name__}: {err}".encode()
        await loop.run_in_executor(None, self._write, target, out)
        await loop.run_in_executor(None, self.store.delete, PENDING_ASYNC, key)

    def _read(self, uri) -> bytes:
        path = self.s3.path_of(uri)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the input {uri} does not exist")
        size = os.path.getsize(path)
        if size > INVOCATION_LIMIT:  # the model server takes no more: not read into memory
            raise ValueError(f"the input {uri} is {size} bytes; the local model server takes "
                             f"at most {INVOCATION_LIMIT} bytes per invocation")
        data = self.s3.get(*self.s3.split(uri))
        if data is None:
            raise FileNotFoundError(f"the input {uri} does not exist")
        return data

    def _write(self, uri, data):
        bucket, key = self.s3.split(uri)
        if not self.s3.bucket_exists(bucket):
            self.s3.create_bucket(bucket)
        self.s3.put(bucket, key, data)

def async_members(headers) -> dict:
    """InvokeEndpointAsync's header members, typed and checked against botocore's model
    (lengths, patterns, ranges), as SageMaker's runtime checks them; ServiceError if not."""
    given = {}
    for name, member in ASYNC_SHAPE.members.items():
        raw = headers.get(member.serialization.get("name", name)) \
            if member.serialization.get("location") == "header" else None
        if raw is None:
            continue
        if member.type_name == "integer":
            if not re.fullmatch(r"[+-]?[0-9]{1,10}", raw.strip()):
                raise ServiceError("ValidationError", f"{name} must be an integer, got {raw!r}")
            raw = int(raw)
        given[name] = raw
    constraints.check(given, ASYNC_SHAPE)
    return given
