"""The SageMaker pipeline: parameters, steps and the definition JSON, built with no network calls.

The same JSON is what AWS receives and what the local service runs. Everything that could vary
between machines (code upload, bucket discovery, timestamps) is kept out: code URIs come from
``packaging`` (content hashes), the bucket and role are inputs.
"""
import contextlib
import hashlib
import json
import logging
import os
import warnings
from typing import Dict, Optional

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # we pin SDK 2.x on purpose: MXNet
# The SDK narrates every default it fills in (some of it on stdout); keep only real problems.
for _name in ("sagemaker", "sagemaker.config"):
    logging.getLogger(_name).setLevel(logging.ERROR)

import boto3  # noqa: E402
from sagemaker import image_uris
from sagemaker.model import Model
from sagemaker.model_metrics import MetricsSource, ModelMetrics
from sagemaker.mxnet import MXNet
from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor
from sagemaker.workflow.condition_step import ConditionStep
from sagemaker.workflow.conditions import ConditionEquals, ConditionGreaterThanOrEqualTo
from sagemaker.workflow.execution_variables import ExecutionVariables
from sagemaker.workflow.fail_step import FailStep
from sagemaker.workflow.functions import Join, JsonGet
from sagemaker.workflow.parameters import (
    ParameterBoolean,
    ParameterFloat,
    ParameterInteger,
    ParameterString,
)
from sagemaker.workflow.pipeline import Pipeline
from sagemaker.workflow.pipeline_context import PipelineSession
from sagemaker.workflow.properties import PropertyFile
from sagemaker.workflow.model_step import ModelStep
from sagemaker.workflow.steps import CacheConfig, ProcessingStep, TrainingStep, TuningStep
from sagemaker.tuner import (CategoricalParameter, ContinuousParameter, HyperparameterTuner,
                             IntegerParameter)
from sagemaker.inputs import TrainingInput

import sagemaker.utils as sagemaker_utils  # noqa: E402

from pipeline.config import (DATA_REPORT, EVALUATION, PARAMETERS, STEPS,  # noqa
                             TUNING_OBJECTIVE, TUNING_RANGES, PipelineConfig, deploy_parameters,
                             pipeline_parameters)
from pipeline.packaging import Artifact, build_artifacts, step_folder_uri

_sdk_validate_config = sagemaker_utils.validate_sagemaker_config

# Preparing the same data and training the same model with the same code and hyperparameters
# again gives nothing new: a re-run within 30 days reuses the earlier run (any change reruns).
CACHE = CacheConfig(enable_caching=True, expire_after="P30D")
FRAMEWORK_VERSION = "1.9.0"
PY_VERSION = "py38"
PROCESSING = "/opt/ml/processing"
CODE_DIR = f"{PROCESSING}/input/code"  # where ScriptProcessor, and so we, put a job's code
# Explicit SDK defaults: no telemetry calls, and no machine-local config files that would make the
# definition depend on the machine it was built on.
SDK_CONFIG = {"SchemaVersion": "1.0",
              "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}

_PARAMETER_CLASS = {str: ParameterString, int: ParameterInteger, float: ParameterFloat,
                    bool: ParameterBoolean}

METRIC_DEFINITIONS = [
    {"Name": name, "Regex": f"{name}=([0-9.]+(?:e[-+]?[0-9]+)?)"}
    for name in ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy")
]


def _parameters(overrides, declared=PARAMETERS):
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
    return {
        name: _PARAMETER_CLASS[kind](name=name, default_value=overrides.get(name, default))
        for name, (kind, default, _) in declared.items()
    }


def _session(config):
    """A PipelineSession that only records requests; it never calls AWS here."""
    boto_session = boto3.Session(region_name=config.region, aws_access_key_id="unused",
                                 aws_secret_access_key="unused")
    return PipelineSession(boto_session=boto_session, default_bucket=config.bucket,
                           sagemaker_config=SDK_CONFIG)


def _property_file(spec):
    return PropertyFile(name=spec.property_file, output_name=spec.output_name,
                        path=spec.file_name)


def deployment_log_uri(config) -> str:
    """Where DeployModel and Cleanup record what each endpoint served (steps/deployment_log.py)."""
    return f"s3://{config.bucket}/{config.prefix}/deployments"


def _s3(config, *parts):
    return Join(on="/", values=[f"s3://{config.bucket}/{config.prefix}", *parts])


_validated_configs: set = set()


def _validate_config_once(config):
    """The SDK re-validates its defaults config (a ~0.3 s JSON-schema check) on each of ~90
    lookups per build; the config does not change, so validate each distinct one once."""
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _validated_configs:
        _sdk_validate_config(config)
        _validated_configs.add(key)


@contextlib.contextmanager
def _offline():
    """Build conditions: no instance-metadata credential probes (the SDK makes sessions it never
    uses, e.g. sagemaker.jumpstart's default session, which probe 169.254.169.254 when the
    machine has no credentials), and config validation once instead of per lookup."""
    previous = os.environ.get("AWS_EC2_METADATA_DISABLED")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    sagemaker_utils.validate_sagemaker_config = _validate_config_once
    try:
        yield
    finally:
        sagemaker_utils.validate_sagemaker_config = _sdk_validate_config
        if previous is None:
            os.environ.pop("AWS_EC2_METADATA_DISABLED", None)
        else:
            os.environ["AWS_EC2_METADATA_DISABLED"] = previous


def build_pipeline(config: PipelineConfig,
                   artifacts: Optional[Dict[str, Artifact]] = None) -> Pipeline:
    """The MNIST pipeline as a SageMaker SDK ``Pipeline`` object."""
    with _offline(), warnings.catch_warnings():
        # "Running within a PipelineSession, there will be No Wait...": that is the point.
        warnings.filterwarnings("ignore", message="Running within a PipelineSession")
        return _build_pipeline(config, artifacts)


def _build_pipeline(config, artifacts):
    steps = _Steps(config, artifacts or build_artifacts(config.prefix),
                   pipeline_parameters(config.tuning))
    prepare = steps.prepare()
    outputs = prepare.properties.ProcessingOutputConfig.Outputs
    if config.tuning:
        train = steps.tune(outputs)
        model_data = train.get_top_model_s3_uri(top_k=0, s3_bucket=config.bucket,
                                                prefix=f"{config.prefix}/models")
    else:
        train = steps.train(outputs)
        model_data = train.properties.ModelArtifacts.S3ModelArtifacts
    evaluate, evaluation_file = steps.evaluate(model_data, outputs)
    accuracy = JsonGet(step_name=evaluate.name, property_file=evaluation_file,
                       json_path=EVALUATION.accuracy_path)
    register = steps.register(model_data, evaluate, train, prepare)
    deploy, cleanup = steps.deploy_and_cleanup(
        ["--model-package-arn", register.steps[-1].properties.ModelPackageArn],
        outputs["test"].S3Output.S3Uri, depends_on=[register.steps[-1]])
    p = steps.p
    approval = ConditionStep(
        name=STEPS.approval,
        description="Deploy now only when the package was registered Approved; otherwise it "
                    "waits for a reviewer, and approving it starts the deploy pipeline.",
        conditions=[ConditionEquals(left=p["ModelApprovalStatus"], right="Approved")],
        if_steps=[deploy, cleanup],
        else_steps=[],
    )
    fail = FailStep(
        name=STEPS.fail,
        description="The gate refused the model: nothing is registered or deployed.",
        error_message=Join(on="", values=[
            "Test accuracy ", accuracy, " is below AccuracyThreshold ",
            p["AccuracyThreshold"], ": the model was not registered or deployed."]),
    )
    check = ConditionStep(
        name=STEPS.check,
        description="The gate: test accuracy from evaluation.json >= AccuracyThreshold.",
        conditions=[ConditionGreaterThanOrEqualTo(left=accuracy, right=p["AccuracyThreshold"])],
        if_steps=[register, approval],
        else_steps=[fail],
    )
    return Pipeline(
        name=config.pipeline_name,
        parameters=list(p.values()),
        steps=[prepare, train, evaluate, check],
        sagemaker_session=steps.session,
    )


def build_deploy_pipeline(config: PipelineConfig,
                          artifacts: Optional[Dict[str, Artifact]] = None) -> Pipeline:
    """The approve -> deploy pipeline: DeployModel (the group's most recently approved package)
    and Cleanup. The EventBridge rule ``upsert`` creates starts it when a package of the group
    is approved or rejected."""
    with _offline(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Running within a PipelineSession")
        steps = _Steps(config, artifacts or build_artifacts(config.prefix),
                       deploy_parameters(config.tuning))
        deploy, cleanup = steps.deploy_and_cleanup(
            ["--model-package-group", config.model_package_group, "--approval-event",
             Join(on="", values=[steps.p["ApprovalEvent"]])], "package")
        return Pipeline(name=config.deploy_pipeline_name, parameters=list(steps.p.values()),
                        steps=[deploy, cleanup], sagemaker_session=steps.session)


class _Steps:
    """The pipeline's steps, built from one config, one set of code artifacts and parameters."""

    def __init__(self, config, artifacts, declared=PARAMETERS):
        self.config = config
        self.training_source = artifacts["sourcedir.tar.gz"].uri(config.bucket)
        self.steps_uri = step_folder_uri(artifacts, config.bucket)
        # one digest of all the job code (each artifact's key holds its content hash)
        self.code_sha256 = hashlib.sha256("\n".join(
            sorted(a.key for a in artifacts.values())).encode()).hexdigest()
        self.p = _parameters(config.parameter_defaults, declared)
        self.session = _session(config)
        self.execution = ExecutionVariables.PIPELINE_EXECUTION_ID
        self.image, self.inference_image = (
            image_uris.retrieve("mxnet", config.region, version=FRAMEWORK_VERSION,
                                py_version=PY_VERSION, instance_type="ml.m5.large",
                                image_scope=scope) for scope in ("training", "inference"))

    def run_script(self, base_name, script, arguments, inputs=(), outputs=()):
        """A processing job running ``script`` of the steps' folder, which its "code" input
        puts where ScriptProcessor puts code (so each script imports its helper)."""
        processor = Processor(
            image_uri=self.image, entrypoint=["python3", f"{CODE_DIR}/{script}"],
            role=self.config.role_arn, instance_count=1,
            instance_type=self.p["ProcessingInstanceType"], base_job_name=base_name,
            sagemaker_session=self.session)
        code = ProcessingInput(source=self.steps_uri, destination=CODE_DIR, input_name="code")
        return processor.run(inputs=[*inputs, code], outputs=list(outputs),
                             arguments=arguments)

    def prepare(self):
        return ProcessingStep(
            name=STEPS.prepare,
            cache_config=CACHE,
            description="Fetch MNIST, verify each file's SHA-256, split off a stratified "
                        "validation set, write train / validation / test.",
            property_files=[_property_file(DATA_REPORT)],
            step_args=self.run_script(
                "mnist-prepare", "preprocess.py",
                arguments=["--source", self.p["MnistSourceUri"], "--output-dir", PROCESSING],
                outputs=[
                    ProcessingOutput(output_name=split, source=f"{PROCESSING}/{split}",
                                     destination=_s3(self.config, self.execution, "data", split))
                    for split in ("train", "validation", "test", "report")
                ],
            ),
        )

    def estimator(self, hyperparameters):
        config, p = self.config, self.p
        return MXNet(
            entry_point="train.py", source_dir=self.training_source,
            framework_version=FRAMEWORK_VERSION, py_version=PY_VERSION, role=config.role_arn,
            instance_count=p["TrainingInstanceCount"], instance_type=p["TrainingInstanceType"],
            hyperparameters=hyperparameters, metric_definitions=METRIC_DEFINITIONS,
            distribution={"parameter_server": {"enabled": True}},
            output_path=f"s3://{config.bucket}/{config.prefix}/models",
            code_location=f"s3://{config.bucket}/{config.prefix}/models",
            base_job_name="mnist-train", disable_profiler=True, debugger_hook_config=False,
            sagemaker_session=self.session)

    @staticmethod
    def channels(outputs):
        return {"train": TrainingInput(outputs["train"].S3Output.S3Uri),
                "validation": TrainingInput(outputs["validation"].S3Output.S3Uri)}

    def train(self, outputs):
        p = self.p
        estimator = self.estimator({"epochs": p["Epochs"], "learning-rate": p["LearningRate"],
                                    "batch-size": p["BatchSize"]})
        return TrainingStep(
            name=STEPS.train,
            cache_config=CACHE,
            description="Train the Gluon MLP (MXNet 1.9 script mode); dist_sync on several "
                        "instances.",
            step_args=estimator.fit(self.channels(outputs)),
        )

    def tune(self, outputs):
        """A tuning job over the same estimator: TUNING_RANGES searched by TuningStrategy,
        TuningMaxJobs trials, TuningMaxParallelJobs at once, for the best validation
        accuracy (a metric of the estimator's definitions)."""
        p = self.p
        kinds = {"Continuous": ContinuousParameter, "Integer": IntegerParameter}
        ranges = {name: CategoricalParameter(spec[1]) if spec[0] == "Categorical"
                  else kinds[spec[0]](spec[1], spec[2], spec[3])
                  for name, spec in TUNING_RANGES.items()}
        tuner = HyperparameterTuner(
            self.estimator({}), objective_metric_name=TUNING_OBJECTIVE,
            hyperparameter_ranges=ranges, metric_definitions=METRIC_DEFINITIONS,
            strategy=p["TuningStrategy"], max_jobs=p["TuningMaxJobs"],
            max_parallel_jobs=p["TuningMaxParallelJobs"])
        return TuningStep(
            name=STEPS.tune,
            description="Tune the Gluon MLP: learning rate, weight decay, epochs and batch "
                        "size, for the best validation accuracy.",
            # a fixed name: the SDK would stamp the time into a static hyperparameter
            step_args=tuner.fit(self.channels(outputs), job_name="mnist-tune"),
        )

    def evaluate(self, model_data, outputs):
        evaluation_file = _property_file(EVALUATION)
        step = ProcessingStep(
            name=STEPS.evaluate,
            description="Accuracy, weighted precision / recall / F1 and the confusion matrix on "
                        "the test set, as SageMaker model-quality statistics.",
            step_args=self.run_script(
                "mnist-evaluate", "evaluate.py",
                arguments=["--model", f"{PROCESSING}/model", "--test", f"{PROCESSING}/test",
                           "--output-dir", f"{PROCESSING}/evaluation"],
                inputs=[ProcessingInput(source=model_data, destination=f"{PROCESSING}/model"),
                        ProcessingInput(source=outputs["test"].S3Output.S3Uri,
                                        destination=f"{PROCESSING}/test")],
                outputs=[ProcessingOutput(output_name=EVALUATION.output_name,
                                          source=f"{PROCESSING}/evaluation",
                                          destination=_s3(self.config, self.execution,
                                                          "evaluation"))],
            ),
            property_files=[evaluation_file],
        )
        return step, evaluation_file

    def register(self, model_data, evaluate, train, prepare):
        model = Model(
            image_uri=self.inference_image, model_data=model_data, role=self.config.role_arn,
            env={"SAGEMAKER_PROGRAM": "inference.py",
                 "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
            sagemaker_session=self.session)
        metrics_uri = Join(on="/", values=[
            evaluate.properties.ProcessingOutputConfig.Outputs[EVALUATION.output_name]
            .S3Output.S3Uri, EVALUATION.file_name])
        return ModelStep(
            name=STEPS.register,
            description="Register the model with its evaluation and lineage in the group.",
            step_args=model.register(
                content_types=["application/json", "application/x-npy"],
                response_types=["application/json"],
                inference_instances=["ml.m5.large", "ml.m5.xlarge", "ml.c5.large"],
                transform_instances=["ml.m5.large"],
                model_package_group_name=self.config.model_package_group,
                approval_status=self.p["ModelApprovalStatus"],
                description=Join(on="", values=[
                    "MNIST MLP trained by ", ExecutionVariables.PIPELINE_EXECUTION_ARN]),
                customer_metadata_properties=self.lineage(train, prepare),
                model_metrics=ModelMetrics(model_statistics=MetricsSource(
                    content_type="application/json", s3_uri=metrics_uri)),
            ),
        )

    def lineage(self, train, prepare):
        """What a reviewer needs to trace a package: run, job, data, code, final metrics."""
        report = prepare.property_files[0]
        digests = {f"DataSha256.{split}-{kind}": JsonGet(
            step_name=prepare.name, property_file=report,
            json_path=f"sha256['{prefix}-{kind}-idx{1 if kind == 'labels' else 3}-ubyte']")
            for split, prefix in (("train", "train"), ("test", "t10k"))
            for kind in ("images", "labels")}
        test_uri = prepare.properties.ProcessingOutputConfig.Outputs["test"].S3Output.S3Uri
        common = {
            "PipelineExecutionArn": ExecutionVariables.PIPELINE_EXECUTION_ARN,
            "TestData": test_uri,
            "CodeSha256": self.code_sha256,
            "CodeCommit": self.p["CodeCommit"],
            "RegisteredApproval": self.p["ModelApprovalStatus"],
            **digests,
        }
        if isinstance(train, TuningStep):  # the tuning job, and its best trial
            best = train.properties.BestTrainingJob
            return {**common, "TuningJobName": train.properties.HyperParameterTuningJobName,
                    "TrainingJobName": best.TrainingJobName,
                    "FinalValidationAccuracy": Join(on="", values=[
                        best.FinalHyperParameterTuningJobObjectiveMetric.Value])}
        metrics = train.properties.FinalMetricDataList
        return {**common, "TrainingJobName": train.properties.TrainingJobName,
                "FinalValidationAccuracy": Join(on="", values=[
                    metrics["validation_accuracy"].Value]),
                "FinalValidationLoss": Join(on="", values=[metrics["validation_loss"].Value])}

    def deploy_and_cleanup(self, package, test_data, depends_on=None):
        """DeployModel (``package``: which package, as deploy.py's arguments) and Cleanup."""
        p, deployment_log = self.p, deployment_log_uri(self.config)
        test = (["--test", f"{PROCESSING}/test"], [ProcessingInput(
            source=test_data, destination=f"{PROCESSING}/test")]) if test_data != "package" \
            else (["--test", "package"], [])
        deploy = ProcessingStep(
            name=STEPS.deploy,
            description="Create or update the endpoint, smoke-test it on real test digits, "
                        "roll back on any failure.",
            step_args=self.run_script(
                "mnist-deploy", "deploy.py",
                arguments=[*package,
                           "--endpoint-name", p["EndpointName"],
                           "--instance-type", p["EndpointInstanceType"],
                           "--execution-id", ExecutionVariables.PIPELINE_EXECUTION_ARN,
                           "--deployment-log", deployment_log,
                           "--role-arn", self.config.role_arn, *test[0]],
                inputs=test[1],
            ),
            depends_on=depends_on,
        )
        cleanup = ProcessingStep(
            name=STEPS.cleanup,
            description="Delete earlier models and endpoint configs no endpoint uses; the "
                        "endpoint too when KeepEndpoint is false.",
            step_args=self.run_script(
                "mnist-cleanup", "cleanup.py",
                arguments=["--endpoint-name", p["EndpointName"],
                           "--keep-endpoint", Join(on="", values=[p["KeepEndpoint"]]),
                           "--execution-id", ExecutionVariables.PIPELINE_EXECUTION_ARN,
                           "--deployment-log", deployment_log],
            ),
            depends_on=[deploy],
        )
        return deploy, cleanup


def _canonical(pipeline) -> str:
    with _offline():  # the SDK compiles the steps here, with the same lookups
        definition = json.loads(pipeline.definition())
    return json.dumps(definition, indent=2, sort_keys=True) + "\n"


def definition_json(config: PipelineConfig, artifacts: Optional[Dict[str, Artifact]] = None) -> str:
    """The definition as canonical JSON text (sorted keys), what ``upsert`` sends."""
    return _canonical(build_pipeline(config, artifacts))


def deploy_definition_json(config: PipelineConfig,
                           artifacts: Optional[Dict[str, Artifact]] = None) -> str:
    """The approve -> deploy pipeline's definition, canonical as ``definition_json``."""
    return _canonical(build_deploy_pipeline(config, artifacts))
