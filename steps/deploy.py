"""DeployModel: put the registered model package behind an endpoint, safely.

Creates a model and an endpoint config named after the pipeline execution, then creates the
endpoint or updates it in place; waits for InService; smoke-tests it on real test digits; and on
any failure puts the previous endpoint config back (or deletes a new endpoint), so a bad model
never stays deployed. Which package: the one given (the run that registered it), or the
group's most recently approved one (the approve -> deploy pipeline; the rule is approvals.py's).
Each deployment is recorded in the deployment log (deployment_log.py). boto3 only: runs against
AWS or the local service alike.
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

import approvals
import deployment_log
from job_contract import PROCESSING_FAILURE_FILE, fail

TAG_KEY = "mnist-mxnet:endpoint"  # marks models and endpoint configs that belong to an endpoint
PACKAGE_TAG = deployment_log.PACKAGE_TAG
TEST_DATA_KEY = "TestData"  # the package's CustomerMetadataProperties: its test split's S3 URI


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
    """Poll until the endpoint settles; return its final description. The wait grows by half
    each time (doubling overshot a 2 s local start by 1.6 s; on AWS it still reaches one call
    per ``max_poll`` within a minute)."""
    deadline, poll = time.time() + timeout, first_poll
    while True:
        desc = sm.describe_endpoint(EndpointName=name)
        status = desc["EndpointStatus"]
        if status not in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
            return desc
        if time.time() > deadline:
            raise DeployError(f"endpoint {name} still {status} after {timeout:.0f} s")
        time.sleep(poll)
        poll = min(poll * 1.5, max_poll)


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


def serving_package(sm, desc):
    """The package an endpoint's model was made from (by its tag), or None."""
    try:
        config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
        model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        tags = sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]
    except ClientError:
        return None
    return next((t["Value"] for t in tags if t["Key"] == PACKAGE_TAG), None)


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


def test_folder(sm, args, package_arn, scratch):
    """Where the smoke test's digits are, downloading them when they are in S3."""
    uri = args.test
    if uri == "package":
        package = sm.describe_model_package(ModelPackageName=package_arn)
        uri = package.get("CustomerMetadataProperties", {}).get(TEST_DATA_KEY)
        if not uri:
            raise DeployError(f"model package {package_arn} records no {TEST_DATA_KEY} for the "
                              "smoke test")
    if uri.startswith("s3://"):
        return fetch_test_data(boto3.client("s3"), uri, scratch)
    return uri


def package_status(sm, package_arn):
    try:
        return sm.describe_model_package(ModelPackageName=package_arn).get("ModelApprovalStatus")
    except ClientError:
        return None


def choose(sm, args, existing):
    """The package to deploy, or (None, what happened) when there is nothing to do: the rule in
    approvals.py decides in group mode (the approve -> deploy pipeline)."""
    if args.model_package_arn:
        return args.model_package_arn, None
    group = args.model_package_group
    package = approvals.to_serve(sm, group)
    serving = serving_package(sm, existing) if existing else None
    if package is None:
        if existing is None and args.approval_event != "true":
            raise DeployError(f"no Approved model package in group {group}")
        status = package_status(sm, serving) if serving else None
        if serving and status != "Approved":
            print(f"WARNING: endpoint {args.endpoint_name} serves {serving}, which is {status}, "
                  f"and no Approved version of {group} remains: approve a version to deploy "
                  f"it, or delete the endpoint", flush=True)
            return None, {"deployed": False, "serving_not_approved": serving, "status": status}
        print(f"no Approved model package in group {group}: nothing to do", flush=True)
        return None, {"deployed": False, "nothing_approved": group}
    arn = package["ModelPackageArn"]
    if args.approval_event == "true" and approvals.registering_run_active(sm, package):
        print(f"model package {arn} was registered Approved and the pipeline run that "
              "registered it is still running: it deploys it; nothing to do", flush=True)
        return None, {"deployed": False, "left_to_its_run": arn}
    print(f"the most recently approved version of {group} is {arn} (approved "
          f"{approvals.iso(approvals.approval_time(package))})", flush=True)
    return arn, None


def deploy(sm, runtime, args, scratch):
    existing = settled(sm, args.endpoint_name, args.timeout)
    package_arn, nothing = choose(sm, args, existing)
    if nothing:
        return nothing
    status, container = container_from_package(sm, package_arn)
    if status != "Approved":
        print(f"model package {package_arn} is {status}: not deployed. Approve it "
              f"(run_pipeline.py approve) and the approve -> deploy pipeline deploys it.",
              flush=True)
        return {"deployed": False, "approval_status": status}
    if existing and existing["EndpointStatus"] == "InService" and \
            serving_package(sm, existing) == package_arn:
        print(f"endpoint {args.endpoint_name} already serves {package_arn}: nothing to do",
              flush=True)
        return {"deployed": False, "already_serving": package_arn}
    test_dir = test_folder(sm, args, package_arn, scratch)
    print(f"deploying model package {package_arn}", flush=True)
    name = resource_name(args.endpoint_name, args.execution_id)
    result = switch(sm, runtime, args, package_arn, container, existing, name, test_dir)
    if args.deployment_log:
        deployment_log.write(boto3.client("s3"), args.deployment_log, args.endpoint_name,
                             deployment_log.DEPLOYED, args.execution_id,
                             endpoint_config=name, model_package_arn=package_arn,
                             previous_config=result["previous_config"])
        endpoint_arn = sm.describe_endpoint(EndpointName=args.endpoint_name)["EndpointArn"]
        sm.add_tags(ResourceArn=endpoint_arn, Tags=[
            {"Key": deployment_log.LOG_TAG, "Value": args.deployment_log}])
    return result


def switch(sm, runtime, args, package_arn, container, existing, name, test_dir):
    """Create the model and config ``name``, put the endpoint on it, smoke-test; roll back on
    any failure."""
    previous_config = existing["EndpointConfigName"] if existing else None
    tags = [{"Key": TAG_KEY, "Value": args.endpoint_name}]
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
        accuracy = smoke_test(runtime, args.endpoint_name, test_dir, args.smoke_images,
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
                       help="deploy the group's most recently approved package (approve -> "
                            "deploy; see approvals.py)")
    parser.add_argument("--approval-event", type=str.lower, choices=["true", "false"],
                        default="false",
                        help="true when a package state change started this: nothing to serve "
                             "is not a failure, and a package registered Approved is left to "
                             "the run that registered it while that run is running")
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--instance-type", default="ml.m5.large")
    parser.add_argument("--execution-id", required=True,
                        help="the deploying pipeline execution (its ARN, or its id)")
    parser.add_argument("--role-arn", required=True)
    parser.add_argument("--test", default="/opt/ml/processing/test",
                        help="test digits for the smoke test: a folder, an s3:// URI, or "
                             "'package' for the URI the model package records")
    parser.add_argument("--deployment-log", default="",
                        help="s3:// URI of the deployment log (deployment_log.py) to record to")
    parser.add_argument("--smoke-images", type=int, default=50)
    parser.add_argument("--min-smoke-accuracy", type=float, default=0.8)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--failure-file", default=PROCESSING_FAILURE_FILE)
    args = parser.parse_args(argv)
    sm, runtime = boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            result = deploy(sm, runtime, args, scratch)
    except (DeployError, ClientError) as err:
        return fail(f"DeployModel failed: {err}", args.failure_file)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
