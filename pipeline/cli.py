"""``run_pipeline.py``: build, upsert, start and review the MNIST pipeline on AWS or locally.

The parser and the entry point; the commands are ``pipeline.commands``'.
Exit codes: 0 success, 1 the execution (or the operation) failed, 2 usage or input error
(argparse's refusals and ``UsageError`` only: any other exception is not the user's).
"""
import argparse
import os
import sys

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from pipeline.commands import (EXIT_FAILED, EXIT_USAGE, cmd_compare, cmd_definition,
                               cmd_delete_endpoint, cmd_describe, cmd_draw, cmd_endpoints,
                               cmd_executions, cmd_iam_policy, cmd_local, cmd_logs,
                               cmd_packages, cmd_predict, cmd_report, cmd_retry, cmd_start,
                               cmd_stop, cmd_upsert, cmd_watch, set_approval)
from pipeline.config import (DEFAULT_MODEL_PACKAGE_GROUP, DEFAULT_PIPELINE_NAME, DEFAULT_PREFIX,
                             TUNING_MODEL_PACKAGE_GROUP, TUNING_PIPELINE_NAME)
from pipeline.errors import UsageError
from pipeline.local import launcher
from pipeline.target import target_for


def _global_options(parser, defaults):
    def d(value):
        return value if defaults else argparse.SUPPRESS

    add = parser.add_argument
    add("--profile", default=d(None), help="AWS profile (default: the standard AWS chain)")
    add("--region", default=d(None), help="AWS region (default: the profile's, else "
        "us-east-1; locally: the service's, fixed when its home is first used)")
    add("--role-arn", default=d(None), help="SageMaker execution role (or SAGEMAKER_ROLE_ARN)")
    add("--bucket", default=d(None),
        help="S3 bucket for code and data (default: sagemaker-REGION-ACCOUNT)")
    add("--prefix", default=d(DEFAULT_PREFIX), help="S3 key prefix")
    add("--pipeline-name", default=d(None), help=f"default: {DEFAULT_PIPELINE_NAME} "
        f"({TUNING_PIPELINE_NAME} with --tuning)")
    add("--tuning", action="store_true", default=d(False),
        help="the tuned variant: TuneModel (a hyperparameter tuning job) in TrainModel's place")
    add("--model-package-group", default=d(None),
        help=f"where RegisterModel registers and where `approve latest` looks (default: "
        f"{DEFAULT_MODEL_PACKAGE_GROUP}; {TUNING_MODEL_PACKAGE_GROUP} with --tuning, so that "
        "an approval starts one deploy pipeline, the variant's own)")
    add("--endpoint-url", default=d(None), help="SageMaker API endpoint URL (e.g. a local service)")
    add("--local", action="store_true", default=d(False),
        help="use the local SageMaker service (started in the background when none runs)")
    add("--local-home", default=d(launcher.default_home()),
        help="the local service's state folder (or MNIST_LOCAL_HOME)")


_PACKAGE_OPTIONS = [(("package",), {"help": "model package ARN, or 'latest' in the group"}),
                    (("--description",), {"help": "approval description"})]
# name -> (function, help, [(flags, keyword arguments of add_argument)])
COMMANDS = {
    "definition": (cmd_definition, "print (or write) the pipeline definition JSON",
                   [(("--output", "-o"), {"help": "write to this file instead of stdout"})]),
    "upsert": (cmd_upsert, "upload the code; create or update the pipeline, the approve -> "
               "deploy pipeline and its EventBridge rule", []),
    "start": (cmd_start, "upsert, then start an execution", [
        (("--param",), {"action": "append", "metavar": "Name=Value",
                        "help": "override a pipeline parameter (repeatable)"}),
        (("--wait",), {"action": "store_true", "help": "show live step status until it ends"}),
        (("--no-upsert",), {"action": "store_true", "help": "start the pipeline as it is"}),
        (("--display-name",), {"help": "execution display name"}),
        (("--poll-seconds",), {"type": float, "default": None,
                               "help": "status poll interval (default 1 locally, 10 on AWS)"})]),
    "executions": (cmd_executions, "list recent executions of both pipelines",
                   [(("--limit",), {"type": int, "default": 20})]),
    "describe": (cmd_describe, "status, parameters and steps of one execution",
                 [(("execution",), {"help": "execution ARN or id"})]),
    "watch": (cmd_watch, "follow an execution's steps and training until it ends",
              [(("execution",), {"help": "execution ARN or id"}),
               (("--poll-seconds",), {"type": float, "default": None,
                                      "help": "status poll interval (default 1 locally, 10 on "
                                              "AWS)"})]),
    "stop": (cmd_stop, "stop a running execution",
             [(("execution",), {"help": "execution ARN or id"})]),
    "retry": (cmd_retry, "run a failed or stopped execution's unfinished steps again",
              [(("execution",), {"help": "execution ARN or id"}),
               (("--wait",), {"action": "store_true", "help": "follow it until it ends"}),
               (("--poll-seconds",), {"type": float, "default": None,
                                      "help": "status poll interval"})]),
    "packages": (cmd_packages, "the model package group's versions: approval, accuracy, "
                 "source run, where live", []),
    "endpoints": (cmd_endpoints, "endpoints: what each serves since when, its deployments "
                  "(exit 1 when one serves a model that is not Approved)", []),
    "approve": (lambda t: set_approval(t, "Approved"), "mark a model package Approved",
                _PACKAGE_OPTIONS),
    "reject": (lambda t: set_approval(t, "Rejected"), "mark a model package Rejected",
               _PACKAGE_OPTIONS),
    "delete-endpoint": (cmd_delete_endpoint, "delete an endpoint with its config and model",
                        [(("endpoint",), {"help": "endpoint name"})]),
    "predict": (cmd_predict, "classify PNG, JPEG, NPY, JSON or CSV files with an endpoint", [
        (("--endpoint",), {"required": True, "help": "endpoint name"}),
        (("files",), {"nargs": "+", "metavar": "FILE"})]),
    "draw": (cmd_draw, "a page to draw digits for an endpoint", [
        (("--endpoint",), {"required": True, "help": "endpoint name"}),
        (("--port",), {"type": int, "default": 0,
                       "help": "loopback port (default: a free one)"}),
        (("--proxy",), {"action": "store_true",
                        "help": "with --local: serve through the proxy too (as for AWS)"})]),
    "logs": (cmd_logs, "print the job logs of an execution's steps", [
        (("execution",), {"help": "execution ARN or id"}),
        (("step",), {"nargs": "?", "help": "only this step (e.g. TrainModel)"})]),
    "compare": (cmd_compare, "executions side by side: steps, gate, packages, deployments, "
                "parameters, metrics", [(("executions",), {"nargs": "+", "metavar": "EXECUTION",
                                                           "help": "two or more ARNs or ids"})]),
    "report": (cmd_report, "write one execution as a self-contained HTML file", [
        (("execution",), {"help": "execution ARN or id"}),
        (("--output", "-o"), {"default": "run.html", "help": "file to write (run.html)"})]),
    "iam-policy": (cmd_iam_policy, "print the least-privilege IAM policies of the roles", [
        (("--endpoint-name",), {"help": "the endpoint the policy allows (default: the "
                                "pipeline's, mnist-mlp; mnist-mlp-tuned with --tuning)"}),
        (("--account",), {"default": "ACCOUNT", "help": "AWS account id to put in the ARNs"})]),
    "local": (cmd_local, "the local service: status|start|stop",
              [(("action",), {"choices": ["status", "start", "stop"]})]),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="run_pipeline.py", description="Run and review the MNIST SageMaker pipeline.")
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)  # the same options also after the command
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (func, help_text, options) in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_text)
        for flags, kwargs in options:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=func)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)  # argparse exits with 2 on bad usage
    try:
        return _run(args)
    except BrokenPipeError:  # `describe | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return EXIT_FAILED


def _run(args):
    if not args.pipeline_name:
        args.pipeline_name = TUNING_PIPELINE_NAME if args.tuning else DEFAULT_PIPELINE_NAME
    if not args.model_package_group:
        args.model_package_group = TUNING_MODEL_PACKAGE_GROUP if args.tuning else \
            DEFAULT_MODEL_PACKAGE_GROUP
    try:
        return args.func(target_for(args))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except NoCredentialsError:
        print("error: no AWS credentials found (configure a profile or use --local)",
              file=sys.stderr)
        return EXIT_USAGE
    except ClientError as err:
        code = err.response["Error"]["Code"]
        print(f"error: {code}: {err.response['Error'].get('Message', '')}", file=sys.stderr)
        return EXIT_USAGE if code in ("ValidationException", "ResourceNotFound") else EXIT_FAILED
    except (BotoCoreError, RuntimeError) as err:  # RuntimeError: the local service won't start
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
