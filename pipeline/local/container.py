"""SageMaker's container contract, in one place: the per-job folder that stands in for
``/opt/ml``, what is placed in it before the job runs, the ``SM_*`` variables, and what is taken
out of it afterwards (outputs, ``model.tar.gz``, the failure file).

Every path is named once, from the job's root, as the SageMaker training toolkit's
``environment`` module names them inside the container.
"""
import json
import os
import re
import tarfile
from typing import Dict, List, Optional, Tuple

from pipeline.local.home import log_tail
from pipeline.local.s3 import LocalS3

OPT_ML = "/opt/ml"


def model_artifact_uri(request: dict, job_name: str) -> str:
    """Where a training job's ``model.tar.gz`` lands: ``<S3OutputPath>/<job>/output/``."""
    return f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job_name}/output/" \
           "model.tar.gz"


def decode_hyperparameter(value):
    """Hyperparameters arrive JSON-encoded (the SDK's convention); plain strings pass through."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class Container:
    """One job's stand-in for ``/opt/ml``."""

    failure_file = "failure"  # training: output/failure; processing: output/message

    def __init__(self, root: str, request: dict):
        self.root, self.request = root, request

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def output_dir(self) -> str:
        return self.path("output")

    def rewrite(self, value: str) -> str:
        """``/opt/ml/...`` inside the container -> the job's folder."""
        if value == OPT_ML or value.startswith(OPT_ML + "/"):
            return self.root + value[len(OPT_ML):]
        return value

    def variables(self) -> Dict[str, str]:
        """What every job of the contract sees: where to explain a failure, the user's
        environment of the request."""
        return {"SM_OUTPUT_DIR": self.output_dir, **self.request.get("Environment", {})}

    def failure_reason(self, code: int, log_path: str) -> str:
        """The job's own explanation (the failure file), else the log's last lines."""
        path = os.path.join(self.output_dir, self.failure_file)
        if os.path.isfile(path):
            with open(path, errors="replace") as handle:
                text = handle.read().strip()
            if text:
                return text[:1024]
        if code < 0:
            return f"stopped by signal {-code}"
        return f"AlgorithmError: exit code {code}: {log_tail(log_path)}"[:1024]


class ProcessingContainer(Container):
    failure_file = "message"

    def outputs(self) -> List[dict]:
        return self.request.get("ProcessingOutputConfig", {}).get("Outputs", [])

    def prepare(self, s3: LocalS3):
        """The job's config, its inputs downloaded, its output folders made."""
        os.makedirs(self.output_dir, exist_ok=True)
        os.makedirs(self.path("config"), exist_ok=True)
        with open(self.path("config", "processingjobconfig.json"), "w") as handle:
            json.dump(self.request, handle, indent=1)
        for item in self.request.get("ProcessingInputs", []):
            if item.get("S3Input"):
                s3.download(item["S3Input"]["S3Uri"], self.rewrite(item["S3Input"]["LocalPath"]))
        for item in self.outputs():
            os.makedirs(self.rewrite(item["S3Output"]["LocalPath"]), exist_ok=True)

    def argv(self) -> List[str]:
        app = self.request["AppSpecification"]
        return [self.rewrite(a) for a in app.get("ContainerEntrypoint", []) +
                app.get("ContainerArguments", [])]

    def collect(self, s3: LocalS3):
        for item in self.outputs():
            s3.upload_dir(self.rewrite(item["S3Output"]["LocalPath"]), item["S3Output"]["S3Uri"])


class TrainingContainer(Container):
    """Script mode: the code archive in ``code/``, channels in ``input/data/<channel>``,
    ``input/config/*.json``, the program run with the hyperparameters as flags."""

    def __init__(self, root: str, request: dict):
        super().__init__(root, request)
        count = int(request["ResourceConfig"].get("InstanceCount", 1))
        self.hosts = [f"algo-{i + 1}" for i in range(count)]
        self.raw_hyperparameters = request.get("HyperParameters", {})
        self.submit_dir = decode_hyperparameter(
            self.raw_hyperparameters.get("sagemaker_submit_directory", '""'))
        self.program = decode_hyperparameter(
            self.raw_hyperparameters.get("sagemaker_program", '""'))
        self.channels = [c["ChannelName"] for c in request.get("InputDataConfig", [])]

    code_dir = property(lambda self: self.path("code"))
    model_dir = property(lambda self: self.path("model"))
    config_dir = property(lambda self: self.path("input", "config"))

    def channel_dir(self, channel: str) -> str:
        return self.path("input", "data", channel)

    def check(self):
        if not self.submit_dir or not self.program:
            raise ValueError("sagemaker_submit_directory and sagemaker_program hyperparameters "
                             "are required (script mode)")

    def hyperparameters(self) -> Dict[str, object]:
        """The user's hyperparameters, decoded (the sagemaker_* ones are the toolkit's)."""
        return {k: decode_hyperparameter(v) for k, v in sorted(self.raw_hyperparameters.items())
                if not k.startswith("sagemaker_")}

    def user_args(self) -> List[str]:
        args = []
        for key, value in self.hyperparameters().items():
            args += [f"--{key}", str(value)]
        return args

    def prepare(self, s3: LocalS3):
        self.check()
        os.makedirs(self.code_dir, exist_ok=True)
        with tarfile.open(s3.path_of(self.submit_dir)) as tar:
            tar.extractall(self.code_dir, filter="data")
        for channel in self.request.get("InputDataConfig", []):
            s3.download(channel["DataSource"]["S3DataSource"]["S3Uri"],
                        self.channel_dir(channel["ChannelName"]))
        for folder in (self.model_dir, self.path("output", "data"), self.config_dir):
            os.makedirs(folder, exist_ok=True)
        for file_name, body in (
                ("hyperparameters.json", self.raw_hyperparameters),
                ("inputdataconfig.json", {c: {"TrainingInputMode": "File"}
                                          for c in self.channels}),
                ("resourceconfig.json", {"current_host": self.hosts[0], "hosts": self.hosts})):
            with open(os.path.join(self.config_dir, file_name), "w") as handle:
                json.dump(body, handle)

    def variables(self, host: Optional[str] = None) -> Dict[str, str]:
        """The ``SM_*`` variables of one host."""
        env = super().variables()
        env.update({
            "SM_MODEL_DIR": self.model_dir, "SM_INPUT_DIR": self.path("input"),
            "SM_INPUT_CONFIG_DIR": self.config_dir,
            "SM_OUTPUT_DATA_DIR": self.path("output", "data"),
            "SM_CHANNELS": json.dumps(sorted(self.channels)),
            "SM_HPS": json.dumps(self.hyperparameters()),
            "SM_HOSTS": json.dumps(self.hosts), "SM_CURRENT_HOST": host or self.hosts[0],
            "SM_NUM_CPUS": str(os.cpu_count() or 1), "SM_NUM_GPUS": "0",
            "SM_USER_ENTRY_POINT": self.program, "SM_MODULE_DIR": self.submit_dir,
            "SM_USER_ARGS": json.dumps(self.user_args())})
        for channel in self.channels:
            env[f"SM_CHANNEL_{channel.upper()}"] = self.channel_dir(channel)
        return env

    def argv(self, python: str) -> List[str]:
        return [python, os.path.join(self.code_dir, self.program)] + self.user_args()

    def metric_patterns(self) -> List[Tuple[str, "re.Pattern"]]:
        return [(m["Name"], re.compile(m["Regex"])) for m in
                self.request.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])]

    def pack_model(self, s3: LocalS3, job_name: str):
        """``model/`` as ``model.tar.gz`` at the job's output path."""
        target = s3.path_of(model_artifact_uri(self.request, job_name))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with tarfile.open(target, "w:gz") as tar:
            for entry in sorted(os.listdir(self.model_dir)):
                tar.add(os.path.join(self.model_dir, entry), arcname=entry)
