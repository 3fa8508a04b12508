"""The IAM policies this project needs on AWS, least privilege, from one source.

- The execution role (the pipelines' role, passed on to every job): what SageMaker Pipelines
  does for each step type of our definitions, what the step scripts call with boto3
  (``STEP_SCRIPT_CALLS``, checked against the scripts by a test that reads them), and what
  every SageMaker job needs (CloudWatch Logs and metrics, pulling AWS's MXNet images, passing
  the role on).
- The EventBridge role: start the approve -> deploy pipeline, nothing else.

Resources are scoped to the bucket and prefix, the two pipelines, the package group and the
endpoint's name; no action is a wildcard. ``run_pipeline.py iam-policy`` prints them; the README's
IAM section is this module's output.
"""
import json
from typing import Dict, List

from pipeline.config import PipelineConfig, pipeline_parameters

# The AWS account of SageMaker's prebuilt framework images (the MXNet 1.9 containers) in most
# regions, and the public copy of MNIST PrepareData reads by default.
DLC_ACCOUNT = "763104351884"
SAMPLE_DATA = ("sagemaker-sample-files", "datasets/image/MNIST")

# What the step scripts call, per script (as IAM actions). A test parses the scripts and checks
# that every boto3 call they make is here, and nothing else.
STEP_SCRIPT_CALLS = {
    "preprocess.py": ["s3:GetObject"],
    "deploy.py": ["sagemaker:CreateEndpoint", "sagemaker:CreateEndpointConfig",
                  "sagemaker:CreateModel", "sagemaker:DeleteEndpoint",
                  "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel",
                  "sagemaker:DescribeEndpoint", "sagemaker:DescribeEndpointConfig",
                  "sagemaker:DescribeModel", "sagemaker:DescribeModelPackage",
                  "sagemaker:InvokeEndpoint", "sagemaker:AddTags",
                  "sagemaker:ListTags", "sagemaker:UpdateEndpoint", "s3:GetObject",
                  "s3:ListBucket"],
    "approvals.py": ["sagemaker:ListModelPackages", "sagemaker:DescribeModelPackage",
                     "sagemaker:DescribePipelineExecution"],
    "deployment_log.py": ["s3:PutObject"],
    "cleanup.py": ["sagemaker:DeleteEndpoint", "sagemaker:DeleteEndpointConfig",
                   "sagemaker:DeleteModel", "sagemaker:DescribeEndpoint",
                   "sagemaker:DescribeEndpointConfig", "sagemaker:ListEndpointConfigs",
                   "sagemaker:ListModels", "sagemaker:ListTags"],
}
# What SageMaker Pipelines calls with the pipeline's role to run each step type.
STEP_TYPE_CALLS = {
    "Processing": ["sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob",
                   "sagemaker:StopProcessingJob", "sagemaker:AddTags"],
    "Training": ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
                 "sagemaker:StopTrainingJob", "sagemaker:AddTags"],
    "RegisterModel": ["sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage",
                      "sagemaker:AddTags"],
    "Condition": [], "Fail": [],
    # the tuned variant's TuneModel (``--tuning``) only
    "Tuning": ["sagemaker:CreateHyperParameterTuningJob",
               "sagemaker:DescribeHyperParameterTuningJob",
               "sagemaker:StopHyperParameterTuningJob",
               "sagemaker:ListTrainingJobsForHyperParameterTuningJob", "sagemaker:AddTags"],
}
# What every job needs: its logs, its metrics, its image, and the role passed to it.
JOB_CALLS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
             "logs:DescribeLogStreams", "cloudwatch:PutMetricData", "ecr:GetAuthorizationToken",
             "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
             "ecr:BatchGetImage", "iam:PassRole", "s3:GetObject", "s3:PutObject",
             "s3:ListBucket"]
# Actions that support no resource-level scoping (IAM's service authorization reference).
UNSCOPED = {"sagemaker:ListModelPackages", "sagemaker:ListEndpointConfigs",
            "sagemaker:ListModels", "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}


def _statement(sid, actions, resources, condition=None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)),
                 "Resource": resources if len(resources) > 1 else resources[0]}
    if condition:
        statement["Condition"] = condition
    return statement


def execution_role_policy(config: PipelineConfig, endpoint_name=None,
                          account="ACCOUNT") -> dict:
    """The pipelines' (and their jobs') role, for these names (the endpoint: the variant's
    EndpointName default unless given)."""
    arn = f"arn:aws:sagemaker:{config.region}:{account}"
    endpoint_name = endpoint_name or pipeline_parameters(config.tuning)["EndpointName"][1]
    group, bucket, prefix = config.model_package_group, config.bucket, config.prefix
    # the tuned variant has TuneModel where the main one has TrainModel
    absent = "Training" if config.tuning else "Tuning"
    step_calls = [calls for kind, calls in STEP_TYPE_CALLS.items() if kind != absent]
    sagemaker = sorted({a for calls in (*STEP_SCRIPT_CALLS.values(), *step_calls)
                        for a in calls if a.startswith("sagemaker:")} - UNSCOPED)
    tagging = [a for a in sagemaker if a == "sagemaker:AddTags"]
    scoped = [a for a in sagemaker if a != "sagemaker:AddTags"]
    resources = [f"{arn}:processing-job/pipelines-*",
                 f"{arn}:hyper-parameter-tuning-job/*" if config.tuning  # Pipelines names it
                 else f"{arn}:training-job/pipelines-*", f"{arn}:model-package-group/{group}",
                 f"{arn}:model-package/{group}/*",
                 f"{arn}:model/{endpoint_name}-*", f"{arn}:endpoint-config/{endpoint_name}-*",
                 f"{arn}:endpoint/{endpoint_name}"]
    role_name = config.role_arn.split("/")[-1]
    return {"Version": "2012-10-17", "Statement": [
        _statement("JobsRegistryAndHosting", scoped, resources),
        _statement("TagOnlyWhatItCreates", tagging, resources,
                   {"StringLike": {"sagemaker:TaggingAction": "Create*"}}),
        _statement("ListsWithoutResourceScope", [a for a in UNSCOPED
                                                 if a.startswith("sagemaker:")], ["*"]),
        _statement("PassThisRoleToJobs", ["iam:PassRole"],
                   [f"arn:aws:iam::{account}:role/{role_name}"],
                   {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
        _statement("CodeDataAndModels", ["s3:GetObject", "s3:PutObject"],
                   [f"arn:aws:s3:::{bucket}/{prefix}/*"]),
        _statement("ListOwnPrefix", ["s3:ListBucket"], [f"arn:aws:s3:::{bucket}"],
                   {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}),
        _statement("ReadPublicMnist", ["s3:GetObject"],
                   [f"arn:aws:s3:::{SAMPLE_DATA[0]}/{SAMPLE_DATA[1]}/*"]),
        _statement("JobLogs", ["logs:CreateLogGroup", "logs:CreateLogStream",
                               "logs:PutLogEvents", "logs:DescribeLogStreams"],
                   [f"arn:aws:logs:{config.region}:{account}:log-group:/aws/sagemaker/*"]),
        _statement("JobMetrics", ["cloudwatch:PutMetricData"], ["*"],
                   {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}),
        _statement("PullMxnetImages", ["ecr:BatchCheckLayerAvailability",
                                       "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
                   [f"arn:aws:ecr:{config.region}:{DLC_ACCOUNT}:repository/mxnet-*"]),
        _statement("EcrLogin", ["ecr:GetAuthorizationToken"], ["*"]),
    ]}


def execution_role_trust() -> dict:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}


def events_role_policy(config: PipelineConfig, account="ACCOUNT") -> dict:
    """EventBridge's role: start the deploy pipeline, nothing else."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sagemaker:StartPipelineExecution",
        "Resource": f"arn:aws:sagemaker:{config.region}:{account}:pipeline/"
                    f"{config.deploy_pipeline_name}"}]}


def actions_of(policy: dict) -> List[str]:
    found = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        found |= {actions} if isinstance(actions, str) else set(actions)
    return sorted(found)


def policies(config: PipelineConfig, endpoint_name=None, account="ACCOUNT") -> Dict:
    return {"execution role (trust)": execution_role_trust(),
            "execution role (policy)": execution_role_policy(config, endpoint_name, account),
            "EventBridge role (policy)": events_role_policy(config, account)}


def render(config: PipelineConfig, endpoint_name=None, account="ACCOUNT") -> str:
    return "\n".join(f"# {title}\n{json.dumps(doc, indent=2)}" for title, doc in
                     policies(config, endpoint_name, account).items()) + "\n"
