"""DeployModel: put the registered model package behind an endpoint, safely.

Creates a model and an endpoint config named after the pipeline execution, then creates the
endpoint or updates it in place; waits for InService; smoke-tests it on real test digits; and on
any failure puts the previous endpoint config back (or deletes a new endpoint), so a bad model
never stays deployed. boto3 only: runs against AWS or the local service alike.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import boto3
import numpy as np
from botocore.exceptions import ClientError

from job_contract import PROCESSING_FAILURE_FILE, fail

TAG_KEY = "mnist-mxnet:endpoint"  # marks models and endpoint configs that belong to an endpoint
PACKAGE_TAG = "mnist-mxnet:model-package"  # the package a model was made from
TEST_DATA_KEY = "TestData"  # the package's CustomerMetadataProperties: its test split's S3 URI
REGISTERED_KEY = "RegisteredApproval"  # ... and the approval status it was registered with


class DeployError(Exception):
    """Deployment failed; the endpoint was left as it was before."""


def resource_name(endpoint_name, execution_id):
    """Model and endpoint-config name for one execution (SageMaker allows 63 characters)."""
    suffix = execution_id.split("/")[-1][-20:]
    return f"{endpoint_name[:63 - len(suffix) - 1]}-{suffix}"


def describe_endpoint(sm, name):
    """The endpoint's description, or None when it does not exist (SageMaker answers a
    ValidationException "Could not find endpoint ..."); any other error is raised."""
    try:
        return sm.describe_endpoint(EndpointName=name)
    except ClientError as err:
        error = err.response["Error"]
        if error.get("Code") == "ResourceNotFound" or (
                error.get("Code") == "ValidationException"
                and "could not find" in error.get("Message", "").lower()):
            return None
        raise


BUSY_RETRIES = 5  # another deployment's update in flight: wait for it, then try again


def busy(err):
    """SageMaker's refusal while another update or creation of the endpoint is in flight."""
    message = err.response["Error"].get("Message", "")
    return "in-progress endpoint" in message or "already existing endpoint" in message


def settled(sm, name, timeout):
    """The endpoint once no update or creation is in flight (None when there is none)."""
    desc = describe_endpoint(sm, name)
    if desc and desc["EndpointStatus"] in ("Creating", "Updating", "SystemUpdating",
                                           "RollingBack"):
        print(f"endpoint {name} is {desc['EndpointStatus']} (another deployment): waiting",
              flush=True)
        desc = wait_for_endpoint(sm, name, timeout)
    return desc


def wait_for_endpoint(sm, name, timeout, first_poll=0.25, max_poll=15.0):
    """Poll until the endpoint settles; return its final description."""
    deadline, poll = time.time() + timeout, first_poll
    while True:
        desc = sm.describe_endpoint(EndpointName=name)
        status = desc["EndpointStatus"]
        if status not in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
            return desc
        if time.time() > deadline:
            raise DeployError(f"endpoint {name} still {status} after {timeout:.0f} s")
        time.sleep(poll)
        poll = min(poll * 2, max_poll)


def smoke_test(runtime, endpoint_name, test_dir, count, min_accuracy):
    """Send real test digits; return the accuracy, raise DeployError below min_accuracy."""
    files = sorted(f for f in os.listdir(test_dir) if f.endswith(".npz"))
    if not files:
        raise DeployError(f"no test data (.npz) in {test_dir} for the smoke test")
    with np.load(os.path.join(test_dir, files[0])) as data:
        images, labels = data["images"][:count], data["labels"][:count]
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint_name, ContentType="application/json", Accept="application/json",
            Body=json.dumps({"instances": images.tolist()}))
        body = json.loads(response["Body"].read())
        digits = np.array([p["digit"] for p in body["predictions"]])
    except (ClientError, ValueError, KeyError, TypeError) as err:
        raise DeployError(f"smoke test: the endpoint did not answer with predictions: {err}")
    if digits.shape != labels.shape:
        raise DeployError(f"smoke test: {len(digits)} predictions for {len(labels)} images")
    accuracy = float((digits == labels).mean())
    print(f"smoke test: {accuracy:.3f} accuracy on {len(labels)} test digits", flush=True)
    if accuracy < min_accuracy:
        raise DeployError(f"smoke test: accuracy {accuracy:.3f} on {len(labels)} test digits is "
                          f"below {min_accuracy}")
    return accuracy


def latest_approved(sm, group):
    """The newest Approved package of a group: what the approve -> deploy pipeline ships."""
    page = sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus="Approved",
                                  SortBy="CreationTime", SortOrder="Descending", MaxResults=1)
    if not page["ModelPackageSummaryList"]:
        raise DeployError(f"no Approved model package in group {group}")
    return page["ModelPackageSummaryList"][0]["ModelPackageArn"]


def serving_package(sm, desc):
    """The package an endpoint's model was made from (by its tag), or None."""
    try:
        config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
        model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        tags = sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]
    except ClientError:
        return None
    return next((t["Value"] for t in tags if t["Key"] == PACKAGE_TAG), None)


def registered_approved(sm, package_arn):
    """Whether a package was Approved when registered (its own run deploys it). SageMaker emits
    state-change events on creation too, so the approval rule also fires for such packages."""
    package = sm.describe_model_package(ModelPackageName=package_arn)
    return package.get("CustomerMetadataProperties", {}).get(REGISTERED_KEY) == "Approved"


def fetch_test_data(s3, uri, into):
    """Download the .npz files under an s3:// URI (the smoke test's digits)."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])
            if o["Key"].endswith(".npz")]
    if not keys:
        raise DeployError(f"no test data (.npz) under {uri} for the smoke test")
    for key in keys:
        s3.download_file(bucket, key, os.path.join(into, os.path.basename(key)))
    return into


def container_from_package(sm, package_arn):
    package = sm.describe_model_package(ModelPackageName=package_arn)
    status = package.get("ModelApprovalStatus")
    container = package["InferenceSpecification"]["Containers"][0]
    spec = {"Image": container["Image"], "ModelDataUrl": container["ModelDataUrl"]}
    if container.get("Environment"):
        spec["Environment"] = container["Environment"]
    return status, spec


def rollback(sm, endpoint_name, previous_config, new_name, timeout):
    """Return the endpoint to its previous config (or remove it if it is new). Returns what
    happened, in words, for the failure message: only what is true."""
    try:
        if previous_config:
            print(f"rolling back {endpoint_name} to endpoint config {previous_config}", flush=True)
            desc = wait_for_endpoint(sm, endpoint_name, timeout)  # an update in flight ends
            if desc.get("EndpointConfigName") != previous_config:
                sm.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=previous_config)
                desc = wait_for_endpoint(sm, endpoint_name, timeout)
            if desc["EndpointStatus"] != "InService" or \
                    desc.get("EndpointConfigName") != previous_config:
                raise DeployError(f"endpoint is {desc['EndpointStatus']} on "
                                  f"{desc.get('EndpointConfigName')}")
            outcome = f"rolled back: endpoint kept on {previous_config}"
        else:
            if describe_endpoint(sm, endpoint_name) is not None:
                print(f"deleting the new endpoint {endpoint_name}", flush=True)
                sm.delete_endpoint(EndpointName=endpoint_name)
            outcome = "rolled back: the new endpoint was removed"
    except (ClientError, DeployError) as err:
        print(f"rollback failed: {err}", file=sys.stderr, flush=True)
        return f"ROLLBACK FAILED ({err}); check endpoint {endpoint_name}"
    for delete, key in ((sm.delete_endpoint_config, "EndpointConfigName"),
                        (sm.delete_model, "ModelName")):
        try:
            delete(**{key: new_name})
        except ClientError:
            pass
    return outcome


def test_folder(sm, args, scratch):
    """Where the smoke test's digits are, downloading them when they are in S3."""
    uri = args.test
    if uri == "package":
        arn = args.model_package_arn or latest_approved(sm, args.model_package_group)
        package = sm.describe_model_package(ModelPackageName=arn)
        uri = package.get("CustomerMetadataProperties", {}).get(TEST_DATA_KEY)
        if not uri:
            raise DeployError(f"model package {arn} records no {TEST_DATA_KEY} for the smoke test")
    if uri.startswith("s3://"):
        return fetch_test_data(boto3.client("s3"), uri, scratch)
    return uri


def deploy(sm, runtime, args):
    package_arn = args.model_package_arn or latest_approved(sm, args.model_package_group)
    status, container = container_from_package(sm, package_arn)
    if status != "Approved":
        print(f"model package {package_arn} is {status}: not deployed. Approve it "
              f"(run_pipeline.py approve) and the approve -> deploy pipeline deploys it.",
              flush=True)
        return {"deployed": False, "approval_status": status}
    name = resource_name(args.endpoint_name, args.execution_id)
    tags = [{"Key": TAG_KEY, "Value": args.endpoint_name}]
    if args.approval_event == "true" and registered_approved(sm, package_arn):
        print(f"model package {package_arn} was registered Approved: the pipeline run that "
              "registered it deploys it; nothing to do", flush=True)
        return {"deployed": False, "left_to_its_run": package_arn}
    existing = settled(sm, args.endpoint_name, args.timeout)
    previous_config = existing["EndpointConfigName"] if existing else None
    if existing and existing["EndpointStatus"] == "InService" and \
            serving_package(sm, existing) == package_arn:
        print(f"endpoint {args.endpoint_name} already serves {package_arn}: nothing to do",
              flush=True)
        return {"deployed": False, "already_serving": package_arn}
    print(f"deploying model package {package_arn}", flush=True)
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=args.role_arn,
                    Tags=tags + [{"Key": PACKAGE_TAG, "Value": package_arn}])
    sm.create_endpoint_config(EndpointConfigName=name, Tags=tags, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": args.instance_type}])
    try:
        for attempt in range(BUSY_RETRIES + 1):
            try:
                if existing:
                    print(f"updating endpoint {args.endpoint_name}: {previous_config} -> "
                          f"{name}", flush=True)
                    sm.update_endpoint(EndpointName=args.endpoint_name, EndpointConfigName=name)
                else:
                    print(f"creating endpoint {args.endpoint_name} with config {name}",
                          flush=True)
                    sm.create_endpoint(EndpointName=args.endpoint_name, EndpointConfigName=name,
                                       Tags=tags)
                break
            except ClientError as err:
                if not busy(err) or attempt == BUSY_RETRIES:
                    raise
                # another deployment got there first: let it finish, then update from the
                # config it left (the one to roll back to)
                existing = settled(sm, args.endpoint_name, args.timeout)
                previous_config = existing["EndpointConfigName"] if existing else None
        desc = wait_for_endpoint(sm, args.endpoint_name, args.timeout)
        if desc["EndpointStatus"] != "InService" or desc.get("EndpointConfigName") != name:
            raise DeployError(f"endpoint {args.endpoint_name} is {desc['EndpointStatus']}: "
                              f"{desc.get('FailureReason', 'no reason given')}")
        accuracy = smoke_test(runtime, args.endpoint_name, args.test_dir, args.smoke_images,
                              args.min_smoke_accuracy)
    except (DeployError, ClientError) as err:
        outcome = rollback(sm, args.endpoint_name, previous_config, name, args.timeout)
        raise DeployError(f"{err} ({outcome})")
    print(f"endpoint {args.endpoint_name} is InService with {name}", flush=True)
    return {"deployed": True, "model_package_arn": package_arn,
            "endpoint_name": args.endpoint_name, "endpoint_config": name,
            "previous_config": previous_config, "smoke_accuracy": accuracy}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-package-arn", help="the package to deploy")
    which.add_argument("--model-package-group",
                       help="deploy the group's newest Approved package (approve -> deploy)")
    parser.add_argument("--approval-event", type=str.lower, choices=["true", "false"],
                        default="false",
                        help="true when an approval event started this: leave a package that "
                             "was registered Approved to the run that registered it")
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--instance-type", default="ml.m5.large")
    parser.add_argument("--execution-id", required=True)
    parser.add_argument("--role-arn", required=True)
    parser.add_argument("--test", default="/opt/ml/processing/test",
                        help="test digits for the smoke test: a folder, an s3:// URI, or "
                             "'package' for the URI the model package records")
    parser.add_argument("--smoke-images", type=int, default=50)
    parser.add_argument("--min-smoke-accuracy", type=float, default=0.8)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--failure-file", default=PROCESSING_FAILURE_FILE)
    args = parser.parse_args(argv)
    sm, runtime = boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            args.test_dir = test_folder(sm, args, scratch)
            result = deploy(sm, runtime, args)
    except (DeployError, ClientError) as err:
        return fail(f"DeployModel failed: {err}", args.failure_file)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
