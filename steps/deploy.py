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
import time

import boto3
import numpy as np
from botocore.exceptions import ClientError

# The container contract: a processing job explains its failure in /opt/ml/output/message.
FAILURE_FILE = os.path.join(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"), "message")
TAG_KEY = "mnist-mxnet:endpoint"  # marks models and endpoint configs that belong to an endpoint


class DeployError(Exception):
    """Deployment failed; the endpoint was left as it was before."""


def resource_name(endpoint_name, execution_id):
    """Model and endpoint-config name for one execution (SageMaker allows 63 characters)."""
    suffix = execution_id.split("/")[-1][-20:]
    return f"{endpoint_name[:63 - len(suffix) - 1]}-{suffix}"


def describe_endpoint(sm, name):
    try:
        return sm.describe_endpoint(EndpointName=name)
    except ClientError as err:
        if err.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
            return None
        raise


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


def container_from_package(sm, package_arn):
    package = sm.describe_model_package(ModelPackageName=package_arn)
    status = package.get("ModelApprovalStatus")
    container = package["InferenceSpecification"]["Containers"][0]
    spec = {"Image": container["Image"], "ModelDataUrl": container["ModelDataUrl"]}
    if container.get("Environment"):
        spec["Environment"] = container["Environment"]
    return status, spec


def rollback(sm, endpoint_name, previous_config, new_name, timeout):
    """Return the endpoint to its previous config (or remove it if it is new)."""
    try:
        if previous_config:
            print(f"rolling back {endpoint_name} to endpoint config {previous_config}", flush=True)
            sm.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=previous_config)
            wait_for_endpoint(sm, endpoint_name, timeout)
        elif describe_endpoint(sm, endpoint_name) is not None:
            print(f"deleting the new endpoint {endpoint_name}", flush=True)
            sm.delete_endpoint(EndpointName=endpoint_name)
        for delete, key in ((sm.delete_endpoint_config, "EndpointConfigName"),
                            (sm.delete_model, "ModelName")):
            try:
                delete(**{key: new_name})
            except ClientError:
                pass
    except (ClientError, DeployError) as err:
        print(f"rollback incomplete: {err}", file=sys.stderr, flush=True)


def deploy(sm, runtime, args):
    status, container = container_from_package(sm, args.model_package_arn)
    if status != "Approved":
        print(f"model package {args.model_package_arn} is {status}: not deployed. Approve it "
              f"(run_pipeline.py approve) and run the pipeline again to deploy.", flush=True)
        return {"deployed": False, "approval_status": status}
    name = resource_name(args.endpoint_name, args.execution_id)
    tags = [{"Key": TAG_KEY, "Value": args.endpoint_name}]
    existing = describe_endpoint(sm, args.endpoint_name)
    previous_config = existing["EndpointConfigName"] if existing else None
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=args.role_arn,
                    Tags=tags + [{"Key": "mnist-mxnet:model-package", "Value": args.model_package_arn}])
    sm.create_endpoint_config(EndpointConfigName=name, Tags=tags, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": args.instance_type}])
    try:
        if existing:
            print(f"updating endpoint {args.endpoint_name}: {previous_config} -> {name}", flush=True)
            sm.update_endpoint(EndpointName=args.endpoint_name, EndpointConfigName=name)
        else:
            print(f"creating endpoint {args.endpoint_name} with config {name}", flush=True)
            sm.create_endpoint(EndpointName=args.endpoint_name, EndpointConfigName=name, Tags=tags)
        desc = wait_for_endpoint(sm, args.endpoint_name, args.timeout)
        if desc["EndpointStatus"] != "InService" or desc.get("EndpointConfigName") != name:
            raise DeployError(f"endpoint {args.endpoint_name} is {desc['EndpointStatus']}: "
                              f"{desc.get('FailureReason', 'no reason given')}")
        accuracy = smoke_test(runtime, args.endpoint_name, args.test, args.smoke_images,
                              args.min_smoke_accuracy)
    except (DeployError, ClientError) as err:
        rollback(sm, args.endpoint_name, previous_config, name, args.timeout)
        raise DeployError(f"{err} (rolled back: endpoint "
                          f"{'kept on ' + previous_config if previous_config else 'removed'})")
    print(f"endpoint {args.endpoint_name} is InService with {name}", flush=True)
    return {"deployed": True, "endpoint_name": args.endpoint_name, "endpoint_config": name,
            "previous_config": previous_config, "smoke_accuracy": accuracy}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-package-arn", required=True)
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--instance-type", default="ml.m5.large")
    parser.add_argument("--execution-id", required=True)
    parser.add_argument("--role-arn", required=True)
    parser.add_argument("--test", default="/opt/ml/processing/test")
    parser.add_argument("--smoke-images", type=int, default=50)
    parser.add_argument("--min-smoke-accuracy", type=float, default=0.8)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--failure-file", default=FAILURE_FILE)
    args = parser.parse_args(argv)
    sm, runtime = boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    try:
        result = deploy(sm, runtime, args)
    except (DeployError, ClientError) as err:
        message = f"DeployModel failed: {err}"
        print(message, file=sys.stderr, flush=True)
        try:
            os.makedirs(os.path.dirname(args.failure_file), exist_ok=True)
            with open(args.failure_file, "w") as handle:
                handle.write(message)
        except OSError:
            pass
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
