"""The roles' policies allow exactly what the code calls: the step scripts' boto3 calls (read from
the scripts themselves), what each step type of both definitions needs, and what every job needs;
scoped to our names; printed by `iam-policy` and shown in the README as printed."""
import ast
import dataclasses
import fnmatch
import json
import os
import re

import botocore
import botocore.session
import pytest

from conftest import ROOT
from pipeline import cli, iam
from pipeline.config import PipelineConfig
from pipeline.definition import definition_json, deploy_definition_json

CONFIG = PipelineConfig(bucket="BUCKET", role_arn="arn:aws:iam::ACCOUNT:role/ROLE")
CLIENTS = {"sm": "sagemaker", "runtime": "sagemaker-runtime", "s3": "s3"}
# boto3 calls that are not one operation: what they call in IAM's terms
TRANSFERS = {("s3", "download_file"): ["s3:GetObject"],
             ("s3", "get_paginator"): ["s3:ListBucket"]}  # list_objects_v2 pages
S3_ACTIONS = {"GetObject": "s3:GetObject", "ListObjectsV2": "s3:ListBucket",
              "PutObject": "s3:PutObject", "HeadObject": "s3:GetObject"}


def _operations(service):
    model = botocore.session.get_session().get_service_model(service)
    return {botocore.xform_name(name): name for name in model.operation_names}


def _action(service, operation):
    if service == "s3":
        return S3_ACTIONS[operation]
    return f"sagemaker:{operation}"  # sagemaker-runtime's actions are sagemaker:*


def calls_in(path):
    """IAM actions of every boto3 client method a script names (called or passed on)."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in CLIENTS:
            service = CLIENTS[owner.id]
        elif isinstance(owner, ast.Call) and getattr(owner.func, "attr", "") == "client" and \
                owner.args and isinstance(owner.args[0], ast.Constant):
            service = owner.args[0].value  # boto3.client("s3").get_object
        else:
            continue
        if (owner.id if isinstance(owner, ast.Name) else service, node.attr) in TRANSFERS:
            found |= set(TRANSFERS[(owner.id if isinstance(owner, ast.Name) else service,
                                    node.attr)])
        elif node.attr in _operations(service):
            found.add(_action(service, _operations(service)[node.attr]))
    return found


def step_types(config=CONFIG):
    types = set()

    def walk(steps):
        for step in steps:
            types.add(step["Type"])
            for branch in ("IfSteps", "ElseSteps"):
                walk(step.get("Arguments", {}).get(branch, []))

    for text in (definition_json(config), deploy_definition_json(config)):
        walk(json.loads(text)["Steps"])
    return types


def test_the_step_scripts_calls_are_exactly_the_listed_ones():
    for script, listed in iam.STEP_SCRIPT_CALLS.items():
        assert calls_in(os.path.join(ROOT, "steps", script)) == set(listed), script
    scripts = {f for f in os.listdir(os.path.join(ROOT, "steps")) if f.endswith(".py")}
    assert {s for s in scripts if calls_in(os.path.join(ROOT, "steps", s))} <= set(
        iam.STEP_SCRIPT_CALLS)


@pytest.mark.parametrize("config", [CONFIG, dataclasses.replace(CONFIG, tuning=True)],
                         ids=["main", "tuned"])
def test_the_execution_role_allows_exactly_what_is_called(config):
    """Per variant: the tuned one's TuneModel needs the tuning actions, the main one not."""
    policy = iam.execution_role_policy(config)
    needed = {a for calls in iam.STEP_SCRIPT_CALLS.values() for a in calls}
    needed |= {a for kind in step_types(config) for a in iam.STEP_TYPE_CALLS[kind]}
    needed |= set(iam.JOB_CALLS)
    assert set(iam.actions_of(policy)) == needed
    assert ("sagemaker:CreateHyperParameterTuningJob" in needed) == config.tuning
    for statement in policy["Statement"]:
        actions = statement["Action"]
        assert all("*" not in a for a in ([actions] if isinstance(actions, str) else actions))
        if statement["Resource"] == "*":  # only where IAM offers no resource scope
            assert set(actions) <= iam.UNSCOPED, statement["Sid"]


def _allowed(policy, action, resource):
    for statement in policy["Statement"]:
        actions = statement["Action"]
        resources = statement["Resource"]
        if action in ([actions] if isinstance(actions, str) else actions) and any(
                fnmatch.fnmatchcase(resource, pattern) for pattern in
                ([resources] if isinstance(resources, str) else resources)):
            return True
    return False


def test_the_resources_our_names_produce_are_allowed_and_others_are_not():
    policy = iam.execution_role_policy(CONFIG, account="123456789012")
    arn = "arn:aws:sagemaker:us-east-1:123456789012"
    for action, resource in [
            ("sagemaker:CreateModel", f"{arn}:model/mnist-mlp-abc123def456"),
            ("sagemaker:UpdateEndpoint", f"{arn}:endpoint/mnist-mlp"),
            ("sagemaker:CreateModelPackage", f"{arn}:model-package-group/mnist-mxnet-models"),
            ("sagemaker:DescribeModelPackage", f"{arn}:model-package/mnist-mxnet-models/3"),
            ("sagemaker:CreateTrainingJob", f"{arn}:training-job/pipelines-abc-trainmodel"),
            ("s3:PutObject", "arn:aws:s3:::BUCKET/mnist-mxnet/code/x/evaluate.py"),
            ("s3:GetObject", "arn:aws:s3:::sagemaker-sample-files/datasets/image/MNIST/"
                             "train/train-images-idx3-ubyte.gz"),
            ("iam:PassRole", "arn:aws:iam::123456789012:role/ROLE")]:
        assert _allowed(policy, action, resource), (action, resource)
    for action, resource in [
            ("sagemaker:DeleteEndpoint", f"{arn}:endpoint/someone-elses"),
            ("sagemaker:CreateModelPackage", f"{arn}:model-package-group/other-group"),
            ("s3:GetObject", "arn:aws:s3:::BUCKET/other-prefix/secret"),
            ("iam:PassRole", "arn:aws:iam::123456789012:role/Admin")]:
        assert not _allowed(policy, action, resource), (action, resource)


def test_the_tuned_variants_policy_is_for_its_own_endpoint():
    """The tuned variant deploys to mnist-mlp-tuned: its role may change that endpoint, not the
    main pipeline's (unless an endpoint is named)."""
    tuned = dataclasses.replace(CONFIG, tuning=True)
    arn = "arn:aws:sagemaker:us-east-1:123456789012"
    policy = iam.execution_role_policy(tuned, account="123456789012")
    assert _allowed(policy, "sagemaker:UpdateEndpoint", f"{arn}:endpoint/mnist-mlp-tuned")
    assert _allowed(policy, "sagemaker:CreateModel", f"{arn}:model/mnist-mlp-tuned-abc123")
    assert not _allowed(policy, "sagemaker:UpdateEndpoint", f"{arn}:endpoint/mnist-mlp")
    named = iam.execution_role_policy(tuned, "other", account="123456789012")
    assert _allowed(named, "sagemaker:UpdateEndpoint", f"{arn}:endpoint/other")


def test_the_events_role_may_only_start_the_deploy_pipeline():
    policy = iam.events_role_policy(CONFIG, account="123456789012")
    assert policy["Statement"] == [{
        "Effect": "Allow", "Action": "sagemaker:StartPipelineExecution",
        "Resource": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/mnist-mxnet-deploy"}]


def test_iam_policy_prints_them_and_the_readme_shows_that_output(capsys):
    assert cli.main(["--bucket", "BUCKET", "--role-arn", "arn:aws:iam::ACCOUNT:role/ROLE",
                     "iam-policy"]) == 0
    printed = capsys.readouterr().out
    assert printed == iam.render(CONFIG)
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    block = re.search(r"<!-- iam-policy -->\n```\n(.*?)```\n<!-- /iam-policy -->", readme,
                      re.S)
    assert block and block.group(1) == printed
