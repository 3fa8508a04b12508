"""The deployment log: what each endpoint served, from when, by which run.

One small JSON object per change of an endpoint, under ``<log>/<endpoint>/``, written by
DeployModel after the endpoint is InService on the new package and by Cleanup when it deletes the
endpoint. An endpoint's description says only what it serves now; the log is how every page can
say what a run deployed and whether it is still live. Keys sort by time. S3 only: AWS or the
local service alike.
"""
import json
import time

DEPLOYED, DELETED = "deployed", "deleted"
PACKAGE_TAG = "mnist-mxnet:model-package"  # a model's tag: the package it was made from
LOG_TAG = "mnist-mxnet:deployment-log"  # an endpoint's tag: the log its deployments are in


def split_uri(uri: str):
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def entry_key(log_uri: str, endpoint: str, when: float, execution: str) -> str:
    _, prefix = split_uri(log_uri)
    run_id = execution.split("/")[-1]
    return f"{prefix}/{endpoint}/{int(when * 1000):015d}-{run_id}.json"


def write(s3, log_uri: str, endpoint: str, action: str, execution: str, **facts) -> dict:
    """Record one change of ``endpoint`` (``facts``: config, package); returns the entry."""
    when = time.time()
    entry = {"endpoint": endpoint, "action": action, "time": when, "execution": execution,
             **facts}
    bucket, _ = split_uri(log_uri)
    s3.put_object(Bucket=bucket, Key=entry_key(log_uri, endpoint, when, execution),
                  Body=json.dumps(entry).encode("utf-8"), ContentType="application/json")
    return entry


def endpoint_prefix(log_uri: str, endpoint: str) -> str:
    """The S3 URI under which one endpoint's entries are."""
    bucket, prefix = split_uri(log_uri)
    return f"s3://{bucket}/{prefix}/{endpoint}/"
