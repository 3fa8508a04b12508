"""What the pipeline definition depends on besides the code: its parameters, names and inputs.

Kept apart from ``definition`` (which imports the SageMaker SDK, seconds of start-up) so that
commands that only read or check parameters stay quick. The step, output and property-file names
live here too: the definition is built from them and the CLI's reports read runs by them.
"""
import os
from dataclasses import dataclass, field
from typing import Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
LOCAL_MNIST = os.path.join(ROOT, "data", "mnist")  # the shipped copy, for offline runs

DEFAULT_PIPELINE_NAME = "mnist-mxnet"
TUNING_PIPELINE_NAME = "mnist-mxnet-tuning"  # the tuned variant's (``--tuning``)
TUNING_MODEL_PACKAGE_GROUP = "mnist-mxnet-tuning-models"
# The tuned variant's endpoint: its own, so that each registry's approvals decide what one
# endpoint serves (sharing one, approving in either group replaced the other's model)
TUNING_ENDPOINT_NAME = "mnist-mlp-tuned"
DEFAULT_REGION = "us-east-1"
DEFAULT_PREFIX = "mnist-mxnet"
DEFAULT_MODEL_PACKAGE_GROUP = "mnist-mxnet-models"
# Used only when no role is given: fine for `definition` and the local service, rejected by AWS.
PLACEHOLDER_ROLE = "arn:aws:iam::000000000000:role/SageMakerExecutionRole"
AWS_MNIST_URI = "s3://sagemaker-sample-files/datasets/image/MNIST/"

# Parameters as users see them in Studio: name -> (kind, default, what it does).
PARAMETERS = {
    "ProcessingInstanceType": (str, "ml.m5.large", "instance type of the processing steps"),
    "TrainingInstanceType": (str, "ml.m5.xlarge", "instance type of TrainModel"),
    "TrainingInstanceCount": (int, 1, "hosts for TrainModel; more than 1 trains with dist_sync"),
    "Epochs": (int, 7, "training epochs"),
    "LearningRate": (float, 0.007, "Adam learning rate (cosine-decayed)"),
    "BatchSize": (int, 256, "training mini-batch size"),
    "AccuracyThreshold": (float, 0.97, "test accuracy needed to register and deploy"),
    "ModelApprovalStatus": (str, "Approved",
                            "status of the new model package; only Approved is deployed"),
    "MnistSourceUri": (str, AWS_MNIST_URI, "where PrepareData fetches MNIST (https, s3, folder)"),
    "EndpointName": (str, "mnist-mlp", "endpoint DeployModel creates or updates"),
    "EndpointInstanceType": (str, "ml.m5.large", "instance type of the endpoint"),
    "KeepEndpoint": (bool, True, "false deletes the endpoint in Cleanup (the lab's last step)"),
    "CodeCommit": (str, "unknown", "git commit of the code, recorded in the model package; "
                                   "`start` sets it from the checkout"),
}

# Values a parameter can take and still run: name -> (lowest, highest, whether lowest is allowed).
PARAMETER_LIMITS = {
    "TrainingInstanceCount": (1, None, True),
    "Epochs": (1, None, True),
    "LearningRate": (0.0, None, False),
    "BatchSize": (1, None, True),
    "AccuracyThreshold": (0.0, 1.0, True),
    "TuningMaxJobs": (1, None, True),
    "TuningMaxParallelJobs": (1, None, True),
}


def _approval_statuses():
    """SageMaker's, from botocore's model (loaded only when one is checked: 0.1 s)."""
    import botocore.session
    model = botocore.session.get_session().get_service_model("sagemaker")
    return sorted(model.shape_for("ModelApprovalStatus").enum)


# Values a string parameter may take: name -> (the values, why no other runs).
PARAMETER_CHOICES = {
    "ModelApprovalStatus": (_approval_statuses, "the statuses a model package is registered "
                                                "with"),
    "TuningStrategy": (lambda: ["Bayesian", "Random"], "Grid takes categorical ranges only, "
                                                       "and TuneModel's are not all categorical"),
}


def check_limits(name, value) -> None:
    """ValueError, with the reason, when ``value`` is outside the parameter's limits."""
    if name in PARAMETER_CHOICES:
        listed, why = PARAMETER_CHOICES[name]
        choices = listed()
        if value not in choices:
            raise ValueError(f"parameter {name} must be one of {', '.join(choices)} ({why}), "
                             f"got {value!r}")
    if name not in PARAMETER_LIMITS:
        return
    low, high, low_allowed = PARAMETER_LIMITS[name]
    if value < low or (value == low and not low_allowed) or (high is not None and value > high):
        span = f"{'>=' if low_allowed else '>'} {low}" + (f" and <= {high}" if high else "")
        raise ValueError(f"parameter {name} must be {span}, got {value}")


@dataclass(frozen=True)
class StepNames:
    """The steps of the DAG, by the names the definition gives them."""

    prepare: str = "PrepareData"
    train: str = "TrainModel"
    tune: str = "TuneModel"  # in the tuned variant, in TrainModel's place
    evaluate: str = "EvaluateModel"
    check: str = "CheckAccuracy"
    register: str = "Register"  # a ModelStep: the SDK names the step "Register-RegisterModel"
    approval: str = "CheckApproval"
    deploy: str = "DeployModel"
    cleanup: str = "Cleanup"
    fail: str = "AccuracyTooLow"


@dataclass(frozen=True)
class PropertyFileSpec:
    """A JSON file a step writes into one of its outputs, read by later steps with JsonGet."""

    property_file: str
    output_name: str
    file_name: str


@dataclass(frozen=True)
class EvaluationReport(PropertyFileSpec):
    """EvaluateModel's property file: the gate reads it, the registry keeps it as ModelMetrics."""

    property_file: str = "Evaluation"
    output_name: str = "evaluation"
    file_name: str = "evaluation.json"
    accuracy_path: str = "multiclass_classification_metrics.accuracy.value"
    metrics_key: str = "multiclass_classification_metrics"


STEPS = StepNames()
EVALUATION = EvaluationReport()
# PrepareData's property file: counts and the verified SHA-256 of each MNIST file
DATA_REPORT = PropertyFileSpec("DataReport", "report", "report.json")
# CustomerMetadataProperties keys of a registered package (its lineage, for reviewers)
LINEAGE_KEYS = ("PipelineExecutionArn", "TrainingJobName", "TestData", "CodeSha256", "CodeCommit",
                "RegisteredApproval",
                "DataSha256.train-images", "DataSha256.train-labels", "DataSha256.test-images",
                "DataSha256.test-labels", "FinalValidationAccuracy", "FinalValidationLoss")
# the tuned variant's: the tuning job, its best trial (TrainingJobName) and the trial's
# objective (FinalValidationAccuracy); a tuning job reports no validation loss
TUNED_LINEAGE_KEYS = tuple(k for k in LINEAGE_KEYS if k != "FinalValidationLoss") + (
    "TuningJobName",)

# The tuned variant's own parameters (``--tuning``), besides PARAMETERS but TUNED.
TUNING_PARAMETERS = {
    "TuningStrategy": (str, "Bayesian", "how trials are chosen: Bayesian or Random (Grid "
                                        "takes categorical ranges only)"),
    "TuningMaxJobs": (int, 4, "training jobs the tuning job runs in all"),
    "TuningMaxParallelJobs": (int, 2, "training jobs it runs at once"),
}
# The ranges TuneModel searches (SDK HyperparameterTuner terms): kind, bounds, scale.
TUNING_RANGES = {
    "learning-rate": ("Continuous", 0.002, 0.02, "Logarithmic"),
    "weight-decay": ("Continuous", 0.00001, 0.001, "Logarithmic"),
    "epochs": ("Integer", 5, 12, "Linear"),
    "batch-size": ("Categorical", [128, 256]),
}
TUNING_OBJECTIVE = "validation_accuracy"
TUNED = ("Epochs", "LearningRate", "BatchSize")  # searched by the tuning job, not parameters


def pipeline_parameters(tuning=False) -> dict:
    """The main pipeline's parameters; the tuned variant's (``--tuning``) has the tuning job's
    instead of the hyperparameters it searches, and its own endpoint."""
    if not tuning:
        return PARAMETERS
    return _own_endpoint({**{k: v for k, v in PARAMETERS.items() if k not in TUNED},
                          **TUNING_PARAMETERS})


def _own_endpoint(parameters) -> dict:
    kind, _, what = parameters["EndpointName"]
    return {**parameters, "EndpointName": (kind, TUNING_ENDPOINT_NAME, what)}


# The approve -> deploy pipeline: its parameters (as PARAMETERS) and its name's suffix.
DEPLOY_PIPELINE_SUFFIX = "-deploy"
DEPLOY_PARAMETERS = {
    "ProcessingInstanceType": PARAMETERS["ProcessingInstanceType"],
    "EndpointName": PARAMETERS["EndpointName"],
    "EndpointInstanceType": PARAMETERS["EndpointInstanceType"],
    "KeepEndpoint": PARAMETERS["KeepEndpoint"],
    "ApprovalEvent": (bool, False, "true when the approval rule started the run: nothing to "
                                   "serve is no failure, and a package registered Approved is "
                                   "left to its own run while that runs"),
}


def deploy_parameters(tuning=False) -> dict:
    """The deploy pipeline's parameters: the tuned variant's deploys to its own endpoint."""
    return _own_endpoint(DEPLOY_PARAMETERS) if tuning else DEPLOY_PARAMETERS


def render_value(value) -> str:
    """A parameter value as SageMaker writes it in strings (booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_bool(text) -> bool:
    """SageMaker's Boolean parameter values: true or false, in any case; nothing else."""
    if isinstance(text, bool):
        return text
    if str(text).lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return str(text).lower() == "true"


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the definition depends on besides the code itself."""

    bucket: str
    role_arn: str = PLACEHOLDER_ROLE
    region: str = DEFAULT_REGION
    pipeline_name: str = DEFAULT_PIPELINE_NAME
    prefix: str = DEFAULT_PREFIX
    model_package_group: str = DEFAULT_MODEL_PACKAGE_GROUP
    parameter_defaults: Dict[str, object] = field(default_factory=dict)
    tuning: bool = False  # TuneModel (a tuning job) in TrainModel's place

    @property
    def deploy_pipeline_name(self) -> str:
        return f"{self.pipeline_name}{DEPLOY_PIPELINE_SUFFIX}"

    @property
    def approval_rule_name(self) -> str:
        """The EventBridge rule: an Approved package of the group starts the deploy pipeline."""
        return f"{self.pipeline_name}-approved"
