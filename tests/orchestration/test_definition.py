"""The definition: built offline, deterministic, schema-valid, and shaped as designed."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import io

import pytest

from conftest import ROOT
from pipeline import packaging, schema
from pipeline.config import LINEAGE_KEYS
from pipeline.definition import (PARAMETERS, PipelineConfig, build_pipeline, definition_json,
                                 deploy_definition_json)

CONFIG = PipelineConfig(bucket="example-bucket")


@pytest.fixture(scope="module")
def definition():
    return json.loads(definition_json(CONFIG))


def all_steps(definition, steps=None):
    for step in definition["Steps"] if steps is None else steps:
        yield step
        for branch in ("IfSteps", "ElseSteps"):
            yield from all_steps(None, step.get("Arguments", {}).get(branch, []))


def test_building_makes_no_network_calls(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access during definition build")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    text = definition_json(CONFIG)
    deploy_text = deploy_definition_json(CONFIG)
    assert attempts == []  # nothing even tried (the SDK swallows some failures, e.g. telemetry)
    assert json.loads(text)["Version"] == json.loads(deploy_text)["Version"] == "2020-12-01"


def test_two_builds_are_byte_identical():
    assert definition_json(CONFIG) == definition_json(CONFIG)


def test_identical_across_checkout_paths(tmp_path):
    outputs = []
    for name in ("first-checkout", "another/place"):
        copy = tmp_path / name
        for part in ("pipeline", "steps", "src", "run_pipeline.py"):
            src = os.path.join(ROOT, part)
            if os.path.isdir(src):
                shutil.copytree(src, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, copy / part)
        proc = subprocess.run([sys.executable, "run_pipeline.py", "definition", "--bucket",
                               "example-bucket"], cwd=copy, capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode()
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1] == definition_json(CONFIG).encode()


def test_valid_against_the_published_schema_with_the_listed_extensions(definition):
    assert schema.validate(definition) == []
    assert schema.validate(json.loads(deploy_definition_json(CONFIG))) == []
    broken = json.loads(json.dumps(definition))
    broken["PipelineExperimentConfig"]["Extra"] = 1  # the extension is exact, not a free pass
    assert schema.validate(broken) == [
        "$.PipelineExperimentConfig: Additional properties are not allowed ('Extra' was "
        "unexpected)"]


def test_experiments_are_on_as_sagemaker_defaults_them(definition):
    assert definition["PipelineExperimentConfig"] == {
        "ExperimentName": {"Get": "Execution.PipelineName"},
        "TrialName": {"Get": "Execution.PipelineExecutionId"}}


def test_the_approve_then_deploy_pipeline_is_offline_deterministic_and_small():
    first = deploy_definition_json(CONFIG)
    assert first == deploy_definition_json(CONFIG)
    deploy = json.loads(first)
    assert [p["Name"] for p in deploy["Parameters"]] == [
        "ProcessingInstanceType", "EndpointName", "EndpointInstanceType", "KeepEndpoint",
        "ApprovalEvent"]
    steps = {s["Name"]: s for s in all_steps(deploy)}
    assert list(steps) == ["DeployModel", "Cleanup"]
    arguments = steps["DeployModel"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert arguments[:3] == ["--model-package-group", CONFIG.model_package_group,
                             "--approval-event"]
    assert "Parameters.ApprovalEvent" in json.dumps(arguments[3])
    assert arguments[-2:] == ["--test", "package"]  # digits from the package's lineage


def test_the_package_carries_its_lineage_and_description(definition):
    steps = {s["Name"]: s for s in all_steps(definition)}
    register = steps["Register-RegisterModel"]["Arguments"]
    lineage = register["CustomerMetadataProperties"]
    assert set(lineage) == set(LINEAGE_KEYS)
    assert lineage["PipelineExecutionArn"] == {"Get": "Execution.PipelineExecutionArn"}
    assert lineage["TrainingJobName"] == {"Get": "Steps.TrainModel.TrainingJobName"}
    assert lineage["RegisteredApproval"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert lineage["DataSha256.test-labels"]["Std:JsonGet"]["Path"] == \
        "sha256['t10k-labels-idx1-ubyte']"
    assert len(lineage["CodeSha256"]) == 64
    assert "Execution.PipelineExecutionArn" in json.dumps(register["ModelPackageDescription"])
    assert all(step.get("Description") for step in steps.values())


@pytest.mark.parametrize("breakage,expected", [
    (lambda d: d["Steps"][0].pop("Arguments"), "'Arguments' is a required property"),
    (lambda d: d.update(Version="2021-01-01"), "'2021-01-01' is not one of"),
    (lambda d: d["Steps"][1]["Arguments"]["ResourceConfig"].update(InstanceCount="two"),
     "InstanceCount"),
    (lambda d: d["Steps"][0].update(Bogus=1), "'Bogus' was unexpected"),
])
def test_schema_check_catches_broken_definitions(definition, breakage, expected):
    broken = json.loads(json.dumps(definition))
    breakage(broken)
    problems = schema.validate(broken)
    assert problems and any(expected in p for p in problems), problems


def test_parameters_are_the_designed_ones_with_working_defaults(definition):
    params = {p["Name"]: p for p in definition["Parameters"]}
    assert list(params) == list(PARAMETERS)
    assert params["Epochs"]["DefaultValue"] == 7 and params["Epochs"]["Type"] == "Integer"
    assert params["KeepEndpoint"]["Type"] == "Boolean"
    assert params["MnistSourceUri"]["DefaultValue"] == \
        "s3://sagemaker-sample-files/datasets/image/MNIST/"


def test_steps_dag_and_gate(definition):
    steps = {s["Name"]: s for s in all_steps(definition)}
    assert list(steps) == ["PrepareData", "TrainModel", "EvaluateModel", "CheckAccuracy",
                           "Register-RegisterModel", "CheckApproval", "DeployModel", "Cleanup",
                           "AccuracyTooLow"]
    assert [s["Type"] for s in steps.values()] == [
        "Processing", "Training", "Processing", "Condition", "RegisterModel", "Condition",
        "Processing", "Processing", "Fail"]
    condition = steps["CheckAccuracy"]["Arguments"]["Conditions"][0]
    assert condition["Type"] == "GreaterThanOrEqualTo"
    assert condition["LeftValue"]["Std:JsonGet"]["Path"] == \
        "multiclass_classification_metrics.accuracy.value"
    approval = steps["CheckApproval"]["Arguments"]
    assert approval["Conditions"] == [{"Type": "Equals", "LeftValue": {
        "Get": "Parameters.ModelApprovalStatus"}, "RightValue": "Approved"}]
    assert [s["Name"] for s in approval["IfSteps"]] == ["DeployModel", "Cleanup"]
    assert approval["ElseSteps"] == []  # pending approval: registered, waiting for a reviewer
    assert condition["RightValue"] == {"Get": "Parameters.AccuracyThreshold"}
    message = json.dumps(steps["AccuracyTooLow"]["Arguments"]["ErrorMessage"])
    assert "Std:JsonGet" in message and "Parameters.AccuracyThreshold" in message
    assert steps["EvaluateModel"]["PropertyFiles"][0]["FilePath"] == "evaluation.json"
    assert steps["Cleanup"]["DependsOn"] == ["DeployModel"]
    register = steps["Register-RegisterModel"]["Arguments"]
    assert "mxnet-inference:1.9.0-cpu-py38" in register["InferenceSpecification"]["Containers"][0][
        "Image"]
    assert register["InferenceSpecification"]["SupportedContentTypes"] == [
        "application/json", "application/x-npy"]
    assert "evaluation.json" in json.dumps(register["ModelMetrics"]["ModelQuality"])
    assert not any("Repack" in name for name in steps)


def test_training_step_uses_mxnet_script_mode_and_metrics(definition):
    train = next(s for s in definition["Steps"] if s["Name"] == "TrainModel")["Arguments"]
    assert "mxnet-training:1.9.0-cpu-py38" in train["AlgorithmSpecification"]["TrainingImage"]
    metrics = {m["Name"] for m in train["AlgorithmSpecification"]["MetricDefinitions"]}
    assert metrics == {"train_loss", "train_accuracy", "validation_loss", "validation_accuracy"}
    hp = train["HyperParameters"]
    assert hp["sagemaker_program"] == '"train.py"'
    assert hp["sagemaker_parameter_server_enabled"] == "true"
    assert train["ResourceConfig"]["InstanceCount"] == {"Get": "Parameters.TrainingInstanceCount"}


def test_code_uris_are_content_hashed_uploads(definition, tmp_path, monkeypatch):
    artifacts = packaging.build_artifacts("mnist-mxnet")
    text = json.dumps(definition)
    folder = packaging.step_folder_uri(artifacts, "example-bucket")
    assert artifacts["sourcedir.tar.gz"].uri("example-bucket") in text
    codes = {s["Name"]: i["S3Input"] for s in all_steps(definition)
             if s["Type"] == "Processing" for i in s["Arguments"]["ProcessingInputs"]
             if i["InputName"] == "code"}
    assert sorted(codes) == ["Cleanup", "DeployModel", "EvaluateModel", "PrepareData"]
    assert {c["S3Uri"] for c in codes.values()} == {folder}
    assert {c["S3DataType"] for c in codes.values()} == {"S3Prefix"}
    steps = sorted(f for f in os.listdir(os.path.join(ROOT, "steps")) if f.endswith(".py"))
    assert sorted(k for k in artifacts if k.startswith("steps/")) == [f"steps/{f}"
                                                                       for f in steps]
    assert all(artifacts[f"steps/{f}"].uri("example-bucket") == folder + f for f in steps)
    # the folder's key changes with any file's content, and only then
    for folder in ("steps", "src"):
        shutil.copytree(os.path.join(ROOT, folder), tmp_path / folder)
    (tmp_path / "steps" / "job_contract.py").write_text("# changed\n")
    monkeypatch.setattr(packaging, "ROOT", str(tmp_path))
    changed = packaging.build_artifacts("mnist-mxnet")
    assert packaging.step_folder_uri(changed, "b") != packaging.step_folder_uri(artifacts, "b")
    assert packaging.build_artifacts("mnist-mxnet")["steps/deploy.py"].key == \
        changed["steps/deploy.py"].key


def test_training_source_archive_is_reproducible_and_complete():
    first = packaging.build_artifacts("p")["sourcedir.tar.gz"]
    second = packaging.build_artifacts("p")["sourcedir.tar.gz"]
    assert first.data == second.data and first.key == second.key
    with tarfile.open(fileobj=io.BytesIO(first.data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["inference.py", "job_contract.py", "train.py"]
    assert {m.mtime for m in members} == {0}


def test_parameter_default_overrides_and_unknown_names():
    custom = json.loads(definition_json(PipelineConfig(
        bucket="b", parameter_defaults={"Epochs": 3})))
    assert next(p for p in custom["Parameters"] if p["Name"] == "Epochs")["DefaultValue"] == 3
    with pytest.raises(ValueError, match="unknown parameter"):
        build_pipeline(PipelineConfig(bucket="b", parameter_defaults={"Epoch": 3}))


def test_the_tuned_variant_tunes_in_trainings_place():
    """``--tuning``: TuneModel (the SDK's TuningStep over the same estimator) where TrainModel
    was; its ranges, objective, strategy and limits as designed (the last three pipeline
    parameters); EvaluateModel reads the best trial's model; the package names the tuning job
    and the trial; offline, deterministic and schema-valid like the main definition."""
    from pipeline.config import TUNED_LINEAGE_KEYS, TUNING_PARAMETERS

    config = PipelineConfig(bucket="b", tuning=True, pipeline_name="mnist-mxnet-tuning")
    text = definition_json(config)
    assert text == definition_json(config)
    tuned = json.loads(text)
    assert schema.validate(tuned) == []
    steps = {s["Name"]: s for s in all_steps(tuned)}
    assert "TrainModel" not in steps and steps["TuneModel"]["Type"] == "Tuning"
    params = {p["Name"]: p for p in tuned["Parameters"]}
    assert set(TUNING_PARAMETERS) <= set(params)
    assert not {"Epochs", "LearningRate", "BatchSize"} & set(params)  # searched instead
    config_ = steps["TuneModel"]["Arguments"]["HyperParameterTuningJobConfig"]
    assert config_["Strategy"] == {"Get": "Parameters.TuningStrategy"}
    assert config_["ResourceLimits"] == {
        "MaxNumberOfTrainingJobs": {"Get": "Parameters.TuningMaxJobs"},
        "MaxParallelTrainingJobs": {"Get": "Parameters.TuningMaxParallelJobs"}}
    assert config_["HyperParameterTuningJobObjective"] == {
        "MetricName": "validation_accuracy", "Type": "Maximize"}
    assert config_["TrainingJobEarlyStoppingType"] == "Off"
    ranges = config_["ParameterRanges"]
    assert {r["Name"]: (r["MinValue"], r["MaxValue"], r["ScalingType"])
            for r in ranges["ContinuousParameterRanges"]} == {
        "learning-rate": ("0.002", "0.02", "Logarithmic"),
        "weight-decay": ("1e-05", "0.001", "Logarithmic")}
    assert ranges["IntegerParameterRanges"] == [
        {"Name": "epochs", "MinValue": "5", "MaxValue": "12", "ScalingType": "Linear"}]
    assert ranges["CategoricalParameterRanges"] == [
        {"Name": "batch-size", "Values": ['"128"', '"256"']}]  # JSON, as framework jobs read
    definition = steps["TuneModel"]["Arguments"]["TrainingJobDefinition"]
    assert "validation_accuracy" in {m["Name"] for m in definition["AlgorithmSpecification"][
        "MetricDefinitions"]}
    model = json.dumps(steps["EvaluateModel"]["Arguments"]["ProcessingInputs"][0])
    assert "Steps.TuneModel.TrainingJobSummaries[0].TrainingJobName" in model
    lineage = steps["Register-RegisterModel"]["Arguments"]["CustomerMetadataProperties"]
    assert set(lineage) == set(TUNED_LINEAGE_KEYS)
    assert lineage["TuningJobName"] == {"Get": "Steps.TuneModel.HyperParameterTuningJobName"}
    assert lineage["TrainingJobName"] == {
        "Get": "Steps.TuneModel.BestTrainingJob.TrainingJobName"}
