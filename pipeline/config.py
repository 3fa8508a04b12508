"""What the pipeline definition depends on besides the code: its parameters, names and inputs.

Kept apart from ``definition`` (which imports the SageMaker SDK, seconds of start-up) so that
commands that only read or check parameters stay quick.
"""
from dataclasses import dataclass, field
from typing import Dict

DEFAULT_PIPELINE_NAME = "mnist-mxnet"
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
    "Epochs": (int, 20, "training epochs"),
    "LearningRate": (float, 0.003, "Adam learning rate (cosine-decayed)"),
    "BatchSize": (int, 256, "training mini-batch size"),
    "AccuracyThreshold": (float, 0.97, "test accuracy needed to register and deploy"),
    "ModelApprovalStatus": (str, "Approved",
                            "status of the new model package; only Approved is deployed"),
    "MnistSourceUri": (str, AWS_MNIST_URI, "where PrepareData fetches MNIST (https, s3, folder)"),
    "EndpointName": (str, "mnist-mlp", "endpoint DeployModel creates or updates"),
    "EndpointInstanceType": (str, "ml.m5.large", "instance type of the endpoint"),
    "KeepEndpoint": (bool, True, "false deletes the endpoint in Cleanup (the lab's last step)"),
}


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
