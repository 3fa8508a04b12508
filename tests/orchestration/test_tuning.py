"""Hyperparameter tuning in the local service: the strategies' proposals, the tuning API as
botocore describes it, the SageMaker SDK's own HyperparameterTuner (fit, describe, analytics,
best training job) and a stop that stops the trials."""
import math
import time

import pytest
from botocore.exceptions import ClientError

from pipeline.definition import SDK_CONFIG
from pipelinehelpers import BUCKET
from servicehelpers import _until

pytestmark = pytest.mark.slow

RANGES = {
    "ContinuousParameterRanges": [{"Name": "learning-rate", "MinValue": "0.0005",
                                   "MaxValue": "0.05", "ScalingType": "Logarithmic"}],
    "IntegerParameterRanges": [{"Name": "epochs", "MinValue": "2", "MaxValue": "12"}],
    "CategoricalParameterRanges": [{"Name": "batch-size", "Values": ["64", "128", "256"]}],
}

# A trial that reports an objective computed from its hyperparameters (best near learning rate
# 0.005, 9 epochs, batch 128) without training anything: the tuning machinery is under test.
OBJECTIVE = '''
import argparse, math, time
parser = argparse.ArgumentParser()
parser.add_argument("--learning-rate", type=float, default=0.01)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--sleep", type=float, default=0)
args = parser.parse_args()
time.sleep(args.sleep)
score = 0.99 - abs(math.log10(args.learning_rate / 0.005)) * 0.05 - abs(args.epochs - 9) * 0.005 \\
    - (0.01 if args.batch_size != 128 else 0)
print(f"epoch={args.epochs} validation_loss={1 - score:.4f} validation_accuracy={score:.4f}")
'''
METRICS = [{"Name": "validation_accuracy", "Regex": "validation_accuracy=([0-9\\\\.]+)"}]


def test_each_strategy_proposes_valid_distinct_configurations():
    from pipeline.local.tuning.strategies import strategy

    for name in ("Random", "Bayesian"):
        proposer = strategy(name, RANGES, maximize=True, seed=3)
        seen = []
        for _ in range(8):
            proposed = proposer.propose()
            assert 0.0005 <= float(proposed["learning-rate"]) <= 0.05, (name, proposed)
            assert 2 <= int(proposed["epochs"]) <= 12 and proposed["batch-size"] in (
                "64", "128", "256")
            proposer.tell(proposed, -abs(math.log10(float(proposed["learning-rate"]) / 0.005)))
            seen.append(tuple(sorted(proposed.items())))
        assert len(set(seen)) == 8, (name, seen)
    grid = strategy("Grid", {"CategoricalParameterRanges": [
        {"Name": "a", "Values": ["1", "2"]}, {"Name": "b", "Values": ["x", "y", "z"]}]}, True)
    combinations = [grid.propose() for _ in range(grid.size())]
    assert len({tuple(c.items()) for c in combinations}) == 6 and grid.propose() is None
    assert combinations[0] == {"a": "1", "b": "x"} and combinations[-1] == {"a": "2", "b": "z"}


def test_a_logarithmic_range_is_sampled_on_its_scale():
    """Half the draws of a 1e-4..1 logarithmic range fall under 1e-2 (uniformly: 1%)."""
    from pipeline.local.tuning.strategies import strategy

    proposer = strategy("Random", {"ContinuousParameterRanges": [
        {"Name": "x", "MinValue": "0.0001", "MaxValue": "1", "ScalingType": "Logarithmic"}]},
        True, seed=1)
    draws = [float(proposer.propose()["x"]) for _ in range(400)]
    assert 0.4 < sum(d < 0.01 for d in draws) / 400 < 0.6


@pytest.mark.parametrize("change, message", [
    ({"Strategy": "Hyperband"}, "The Hyperband strategy is not run by the local service"),
    ({"Strategy": "Grid"}, "The Grid strategy tunes categorical ranges only"),
    ({"TrainingJobEarlyStoppingType": "Auto"}, "TrainingJobEarlyStoppingType Auto is not "
                                               "applied"),
    ({"ParameterRanges": {"ContinuousParameterRanges": [
        {"Name": "x", "MinValue": "0", "MaxValue": "1", "ScalingType": "Logarithmic"}]}},
     "its MinValue must be greater than 0"),
    ({"HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "f1"}},
     "The objective metric f1 is not among"),
])
def test_what_the_local_service_would_not_apply_is_refused(service, change, message):
    sm = service.client("sagemaker")
    with pytest.raises(ClientError) as err:
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="refused", HyperParameterTuningJobConfig={
                "Strategy": "Random", "ResourceLimits": {"MaxNumberOfTrainingJobs": 2,
                                                         "MaxParallelTrainingJobs": 1},
                "HyperParameterTuningJobObjective": {"Type": "Maximize",
                                                     "MetricName": "validation_accuracy"},
                "ParameterRanges": RANGES, **change},
            TrainingJobDefinition=_definition())
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert message in err.value.response["Error"]["Message"]
    assert sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"] == []


def _definition(static=None):
    return {"AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File",
                                       "MetricDefinitions": METRICS},
            "RoleArn": "arn:aws:iam::000000000000:role/r",
            "StaticHyperParameters": static or {},
            "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/tuning"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                               "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600}}


@pytest.fixture(scope="module")
def sdk(service, tmp_path_factory):
    """A SageMaker SDK session on the local service, and the trial script's folder."""
    import boto3
    import sagemaker

    patch = pytest.MonkeyPatch()
    for variable in ("S3", "CLOUDWATCH_LOGS", "SAGEMAKER", "SAGEMAKER_RUNTIME"):
        patch.setenv(f"AWS_ENDPOINT_URL_{variable}", service.url)
    service.client("s3").create_bucket(Bucket=BUCKET)
    folder = tmp_path_factory.mktemp("objective")
    (folder / "objective.py").write_text(OBJECTIVE)
    session = sagemaker.Session(
        boto_session=boto3.Session(region_name="us-east-1", aws_access_key_id="local",
                                   aws_secret_access_key="local"),
        sagemaker_client=service.client("sagemaker"), default_bucket=BUCKET,
        sagemaker_config=SDK_CONFIG)
    yield session, folder
    patch.undo()


def _tuner(session, folder, base, strategy, max_jobs, parallel, static=None):
    from sagemaker.mxnet import MXNet
    from sagemaker.tuner import (CategoricalParameter, ContinuousParameter,
                                 HyperparameterTuner, IntegerParameter)

    estimator = MXNet(entry_point="objective.py", source_dir=str(folder),
                      role="arn:aws:iam::000000000000:role/r", framework_version="1.9.0",
                      py_version="py38", instance_count=1, instance_type="ml.m5.large",
                      hyperparameters=static or {}, sagemaker_session=session,
                      output_path=f"s3://{BUCKET}/tuning", disable_profiler=True)
    return HyperparameterTuner(
        estimator, objective_metric_name="validation_accuracy", metric_definitions=METRICS,
        hyperparameter_ranges={
            "learning-rate": ContinuousParameter(0.0005, 0.05, "Logarithmic"),
            "epochs": IntegerParameter(2, 12), "batch-size": CategoricalParameter([64, 128])},
        strategy=strategy, max_jobs=max_jobs, max_parallel_jobs=parallel,
        base_tuning_job_name=base)


def test_the_sdks_tuner_runs_its_trials_and_finds_the_best(service, sdk):
    """HyperparameterTuner.fit() / describe() / analytics() / best_training_job() as on AWS:
    4 trials, 2 at a time, each an ordinary training job that names its tuning job."""
    session, folder = sdk
    sm = service.client("sagemaker")
    tuner = _tuner(session, folder, "mnist-tune", "Bayesian", 4, 2)
    tuner.fit(wait=True)
    described = tuner.describe()
    assert described["HyperParameterTuningJobStatus"] == "Completed"
    assert described["TrainingJobStatusCounters"]["Completed"] == 4
    assert described["ObjectiveStatusCounters"] == {"Succeeded": 4, "Pending": 0, "Failed": 0}
    frame = tuner.analytics().dataframe()
    assert len(frame) == 4 and set(frame["TrainingJobStatus"]) == {"Completed"}
    best = described["BestTrainingJob"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == pytest.approx(
        frame["FinalObjectiveValue"].max())
    assert tuner.best_training_job() == best["TrainingJobName"]
    job = sm.describe_training_job(TrainingJobName=best["TrainingJobName"])
    assert job["TuningJobArn"] == described["HyperParameterTuningJobArn"]
    assert job["HyperParameters"]["learning-rate"] == best["TunedHyperParameters"][
        "learning-rate"]
    starts = sorted((t["TrainingStartTime"], t["TrainingEndTime"]) for t in sm.
                    list_training_jobs_for_hyper_parameter_tuning_job(
                        HyperParameterTuningJobName=described["HyperParameterTuningJobName"],
                        MaxResults=10)["TrainingJobSummaries"])
    assert starts[1][0] < starts[0][1]  # two ran at once
    logs = service.client("logs").describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamNamePrefix=best["TrainingJobName"])["logStreams"]
    assert logs, "the trial's log is in the CloudWatch Logs subset"
    listed = sm.list_hyper_parameter_tuning_jobs(NameContains="mnist-tune")[
        "HyperParameterTuningJobSummaries"]
    assert [j["HyperParameterTuningJobStatus"] for j in listed] == ["Completed"]
    assert listed[0]["Strategy"] == "Bayesian"


def test_stopping_a_tuning_job_stops_its_trials(service, sdk):
    session, folder = sdk
    sm = service.client("sagemaker")
    tuner = _tuner(session, folder, "mnist-stop", "Random", 6, 2, static={"sleep": 60})
    tuner.fit(wait=False)
    name = tuner.latest_tuning_job.name

    def running():
        return sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
            "TrainingJobStatusCounters"].get("InProgress", 0) == 2

    assert _until(running, 60)
    started = time.time()
    tuner.stop_tuning_job()
    assert _until(lambda: sm.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name)["HyperParameterTuningJobStatus"] == "Stopped", 30)
    assert time.time() - started < 30  # the 60 s trials did not run out
    trials = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name)["TrainingJobSummaries"]
    assert len(trials) == 2 and {t["TrainingJobStatus"] for t in trials} == {"Stopped"}
    with pytest.raises(ClientError) as err:
        sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert "only an InProgress job can be stopped" in err.value.response["Error"]["Message"]


@pytest.fixture(scope="module")
def tuned_run(service):
    """``--tuning``'s definition installed on the local service and run once (Random)."""
    from localservice import wait_for
    from pipeline.aws import Clients, install_pipeline
    from pipeline.config import PipelineConfig
    from pipelinehelpers import MNIST

    config = PipelineConfig(bucket=BUCKET, tuning=True, pipeline_name="mnist-mxnet-tuning",
                            model_package_group="mnist-mxnet-tuning-models")
    install_pipeline(Clients.create(endpoint_url=service.url, local=True), config, local=True)
    sm = service.client("sagemaker")
    arn = sm.start_pipeline_execution(PipelineName="mnist-mxnet-tuning", PipelineParameters=[
        {"Name": "MnistSourceUri", "Value": MNIST}, {"Name": "TuningStrategy",
                                                     "Value": "Random"}])["PipelineExecutionArn"]
    return sm, arn, wait_for(sm, arn, timeout=300)


def test_the_tuned_pipeline_registers_and_deploys_its_best_trial(tuned_run):
    """End to end: TuneModel runs 4 real MNIST trials, 2 at a time, to Completed; the best
    trial's model is evaluated, registered (its lineage naming the tuning job and the trial)
    and deployed."""
    from localservice import steps_of
    from pipelinehelpers import _package_of

    sm, arn, status = tuned_run
    assert status == "Succeeded"
    tuning_name = steps_of(sm, arn)["TuneModel"]["Metadata"]["TuningJob"]["Arn"].split("/")[-1]
    tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_name)
    assert tuning["HyperParameterTuningJobStatus"] == "Completed"
    assert tuning["TrainingJobStatusCounters"]["Completed"] == 4
    assert tuning["HyperParameterTuningJobConfig"]["Strategy"] == "Random"
    trials = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuning_name, SortBy="FinalObjectiveMetricValue")[
        "TrainingJobSummaries"]
    assert len({tuple(sorted(t["TunedHyperParameters"].items())) for t in trials}) == 4
    spans = sorted((t["TrainingStartTime"], t["TrainingEndTime"]) for t in trials)
    assert spans[1][0] < spans[0][1]  # two at once
    best = tuning["BestTrainingJob"]
    assert trials[0]["TrainingJobName"] == best["TrainingJobName"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] >= 0.95
    package = sm.describe_model_package(ModelPackageName=_package_of(sm, arn))
    lineage = package["CustomerMetadataProperties"]
    assert lineage["TuningJobName"] == tuning_name
    assert lineage["TrainingJobName"] == best["TrainingJobName"]
    model = sm.describe_training_job(TrainingJobName=best["TrainingJobName"])
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == \
        model["ModelArtifacts"]["S3ModelArtifacts"]
    endpoint = sm.describe_endpoint(EndpointName="mnist-mlp-tuned")  # its own endpoint
    assert endpoint["EndpointStatus"] == "InService"
    served = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model_name = served["ProductionVariants"][0]["ModelName"]
    assert sm.describe_model(ModelName=model_name)["PrimaryContainer"]["ModelDataUrl"] == \
        model["ModelArtifacts"]["S3ModelArtifacts"]


def test_the_trials_are_reviewed_in_describe_report_and_pages(service, tuned_run, tmp_path,
                                                              capsys):
    """``describe``, ``report``, the execution page and the tuning job's page list the trials
    (values, objective, status, duration), mark the best, and chart the objective against each
    tuned hyperparameter."""
    import urllib.request

    from pipeline import cli

    sm, arn, _ = tuned_run
    tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=sm.
                                                    list_hyper_parameter_tuning_jobs(
                                                        NameContains="tunemodel")[
        "HyperParameterTuningJobSummaries"][0]["HyperParameterTuningJobName"])
    name, best = tuning["HyperParameterTuningJobName"], tuning["BestTrainingJob"]
    options = ["--local", "--local-home", str(service.home), "--endpoint-url", service.url,
               "--tuning"]
    assert cli.main([*options, "describe", arn.split("/")[-1]]) == 0
    out = capsys.readouterr().out
    assert f"tuning job {name}: Completed, Random, 4 trials for the best validation_accuracy" \
        in out
    starred = [line for line in out.splitlines() if line.strip().startswith("* ")]
    assert len(starred) == 1 and best["TrainingJobName"] in starred[0]
    assert "%.4f" % best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] in starred[0]
    pages = [urllib.request.urlopen(f"{service.url}/executions/mnist-mxnet-tuning/"
                                    f"{arn.split('/')[-1]}").read().decode(),
             urllib.request.urlopen(f"{service.url}/jobs/{name}").read().decode()]
    assert cli.main([*options, "report", arn.split("/")[-1], "-o", str(tmp_path / "r.html")]) == 0
    pages.append((tmp_path / "r.html").read_text())
    for page in pages:
        assert page.count('class="best"') == 1 and "★" in page
        assert page.count("tunemodel-00") >= 4 and "<svg" in page
        for hyperparameter in ("learning-rate", "weight-decay", "epochs", "batch-size"):
            assert f"<th>{hyperparameter}</th>" in page and hyperparameter in page[
                page.index("<svg"):]
