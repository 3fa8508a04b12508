"""Cleanup: delete what earlier deployments left behind, and the endpoint if asked to.

Models and endpoint configs that DeployModel tagged for this endpoint and that the endpoint no
longer uses are deleted. With --keep-endpoint false the endpoint goes too, with everything it used
(the lab's "delete the endpoint" step). boto3 only.
"""
import argparse
import json
import sys
import time

import boto3
from botocore.exceptions import ClientError

import deployment_log
from job_contract import PROCESSING_FAILURE_FILE, fail

TAG_KEY = "mnist-mxnet:endpoint"


def _tagged_for(sm, arn, endpoint_name):
    tags = sm.list_tags(ResourceArn=arn).get("Tags", [])
    return any(t["Key"] == TAG_KEY and t["Value"] == endpoint_name for t in tags)


def not_found(err):
    """SageMaker's answer for a missing endpoint, config or model (ValidationException "Could
    not find ..."); throttling, AccessDenied and the like are not it."""
    error = err.response["Error"]  # (some emulations answer another code, with these words)
    return error.get("Code") == "ResourceNotFound" or \
        "could not find" in error.get("Message", "").lower()


IN_FLIGHT = ("Creating", "Updating", "SystemUpdating", "RollingBack")
SETTLE_TIMEOUT = 1800.0  # seconds to wait for another run's deployment to finish


def in_use(sm, endpoint_name, timeout=SETTLE_TIMEOUT, first_poll=0.25, max_poll=15.0):
    """(endpoint config, model names) the endpoint serves now, or (None, set()) when there is
    no endpoint. While another run is deploying to it, it waits for the endpoint to settle: the
    config and model that deployment switches to are not in use yet, and deleting them would
    break it. Any other error stops Cleanup: deleting what a live endpoint uses because its
    description failed would take it down."""
    deadline, poll = time.time() + timeout, first_poll
    while True:
        try:
            desc = sm.describe_endpoint(EndpointName=endpoint_name)
        except ClientError as err:
            if not not_found(err):
                raise
            return None, set()
        if desc["EndpointStatus"] not in IN_FLIGHT:
            break
        if time.time() > deadline:
            raise RuntimeError(f"endpoint {endpoint_name} still {desc['EndpointStatus']} after "
                               f"{timeout:.0f} s: nothing deleted")
        print(f"endpoint {endpoint_name} is {desc['EndpointStatus']} (another deployment): "
              "waiting before cleaning up", flush=True)
        time.sleep(poll)
        poll = min(poll * 2, max_poll)
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    return desc["EndpointConfigName"], {v["ModelName"] for v in config["ProductionVariants"]}


def cleanup(sm, endpoint_name, keep_endpoint):
    deleted = {"endpoint": None, "endpoint_configs": [], "models": []}
    config_in_use, models_in_use = in_use(sm, endpoint_name)
    if not keep_endpoint and config_in_use is not None:
        sm.delete_endpoint(EndpointName=endpoint_name)
        deleted["endpoint"] = endpoint_name
        config_in_use, models_in_use = None, set()
        print(f"deleted endpoint {endpoint_name}", flush=True)
    configs = [{"Name": c["EndpointConfigName"], "Arn": c["EndpointConfigArn"]}
               for c in _paged(sm.list_endpoint_configs, "EndpointConfigs", endpoint_name)]
    for config in configs:
        if config["Name"] != config_in_use and _tagged_for(sm, config["Arn"], endpoint_name) \
                and _gone(sm.delete_endpoint_config, EndpointConfigName=config["Name"]):
            deleted["endpoint_configs"].append(config["Name"])
    for model in _paged(sm.list_models, "Models", endpoint_name):
        if model["ModelName"] not in models_in_use and _tagged_for(sm, model["ModelArn"],
                                                                    endpoint_name) \
                and _gone(sm.delete_model, ModelName=model["ModelName"]):
            deleted["models"].append(model["ModelName"])
    print(f"deleted {len(deleted['endpoint_configs'])} endpoint config(s) and "
          f"{len(deleted['models'])} model(s) no endpoint uses", flush=True)
    return deleted


def _gone(delete, **name) -> bool:
    """Delete one resource: True when this call deleted it, False when another run's Cleanup
    (two runs can end together: a pipeline run and the deploy run its package's event started)
    deleted it first. Any other error stops Cleanup."""
    try:
        delete(**name)
        return True
    except ClientError as err:
        if not_found(err):
            print(f"{next(iter(name.values()))}: already deleted (another run's Cleanup)",
                  flush=True)
            return False
        raise


def _paged(lister, key, name_contains):
    token = None
    while True:
        kwargs = {"NameContains": name_contains, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = lister(**kwargs)
        yield from page[key]
        token = page.get("NextToken")
        if not token:
            return


def parse_bool(text):
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--keep-endpoint", type=parse_bool, default=True)
    parser.add_argument("--execution-id", default="",
                        help="the pipeline execution (its ARN or id), for the logs")
    parser.add_argument("--deployment-log", default="",
                        help="s3:// URI of the deployment log: a deleted endpoint is recorded")
    parser.add_argument("--failure-file", default=PROCESSING_FAILURE_FILE)
    args = parser.parse_args(argv)
    try:
        result = cleanup(boto3.client("sagemaker"), args.endpoint_name, args.keep_endpoint)
        if result["endpoint"] and args.deployment_log:
            deployment_log.write(boto3.client("s3"), args.deployment_log, args.endpoint_name,
                                 deployment_log.DELETED, args.execution_id)
    except ClientError as err:
        return fail(f"Cleanup failed: {err}", args.failure_file)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
