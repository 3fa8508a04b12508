"""Wall time of a local pipeline execution with default parameters, and where it goes.

Starts a fresh local service (its own temporary home), uploads the code, creates the pipeline,
starts an execution with the default parameters on the full shipped MNIST and measures from the
StartPipelineExecution call to the moment the execution reads Succeeded. The service's overhead is
that wall time minus the run time of the job processes themselves (ProcessingStart/EndTime,
TrainingStart/EndTime), compared with the sum of those. Then the same execution again: with
PrepareData and TrainModel cached, how much of the first run's wall time it takes. Run:
`make bench-pipeline`.
"""
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]


from common import machine  # noqa: E402
from pipeline.config import (EVALUATION, TUNING_MODEL_PACKAGE_GROUP,  # noqa: E402
                             TUNING_PIPELINE_NAME)
from pipeline.aws import Clients, install_pipeline  # noqa: E402
from pipeline.definition import PipelineConfig  # noqa: E402
from pipeline.local.server import LocalSageMaker  # noqa: E402

BUCKET = "sagemaker-local"


def epoch(value):
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def run_once(sm, pipeline="mnist-mxnet"):
    """Start an execution with the default parameters and wait: (status, wall seconds, rows,
    the sum of the job processes' own run times, its ARN). Rows: (step, status, seconds, job
    seconds or None, whether the step reused an earlier run); a tuning step's job seconds are
    its tuning job's, first trial's start to last trial's end."""
    start = time.time()
    arn = sm.start_pipeline_execution(PipelineName=pipeline, PipelineParameters=[
        {"Name": "MnistSourceUri", "Value": os.path.join(ROOT, "data", "mnist")}],
    )["PipelineExecutionArn"]
    while True:
        status = sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
            "PipelineExecutionStatus"]
        if status in ("Succeeded", "Failed", "Stopped"):
            break
        time.sleep(0.05)
    wall = time.time() - start
    steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn, SortOrder="Ascending")[
        "PipelineExecutionSteps"]
    rows, job_total = [], 0.0
    for step in steps:
        seconds = epoch(step["EndTime"]) - epoch(step["StartTime"])
        job_seconds, cached = None, "CacheHitResult" in step
        meta = step.get("Metadata", {})
        if cached:
            pass  # its job ran in the earlier execution
        elif "ProcessingJob" in meta:
            job = sm.describe_processing_job(
                ProcessingJobName=meta["ProcessingJob"]["Arn"].split("/")[-1])
            job_seconds = epoch(job["ProcessingEndTime"]) - epoch(job["ProcessingStartTime"])
        elif "TrainingJob" in meta:
            job = sm.describe_training_job(
                TrainingJobName=meta["TrainingJob"]["Arn"].split("/")[-1])
            job_seconds = epoch(job["TrainingEndTime"]) - epoch(job["TrainingStartTime"])
        elif "TuningJob" in meta:
            job = sm.describe_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=meta["TuningJob"]["Arn"].split("/")[-1])
            job_seconds = epoch(job["HyperParameterTuningEndTime"]) - epoch(job["CreationTime"])
        job_total += job_seconds or 0.0
        rows.append((step["StepName"], step["StepStatus"], seconds, job_seconds, cached))
    return status, wall, rows, job_total, arn


def test_accuracy(clients, execution_arn) -> float:
    """EvaluateModel's test accuracy (its evaluation.json) in an execution."""
    step = next(s for s in clients.sagemaker.list_pipeline_execution_steps(
        PipelineExecutionArn=execution_arn)["PipelineExecutionSteps"]
        if s["StepName"] == "EvaluateModel")
    job = clients.sagemaker.describe_processing_job(
        ProcessingJobName=step["Metadata"]["ProcessingJob"]["Arn"].split("/")[-1])
    uri = next(o["S3Output"]["S3Uri"] for o in job["ProcessingOutputConfig"]["Outputs"]
               if o["OutputName"] == EVALUATION.output_name)
    bucket, _, key = uri[len("s3://"):].partition("/")
    body = clients.s3.get_object(Bucket=bucket, Key=f"{key}/{EVALUATION.file_name}")["Body"]
    value = json.load(body)
    for part in EVALUATION.accuracy_path.split("."):
        value = value[part]
    return float(value)


def print_table(rows, wall):
    print(f"| {'step':<24} | {'status':<9} | {'step s':>7} | {'job process s':>13} | "
          f"{'share of wall':>13} |")
    print(f"|{'-' * 26}|{'-' * 11}|{'-' * 9}|{'-' * 15}|{'-' * 15}|")
    for name, st, seconds, job_seconds, cached in rows:
        job = "cache hit" if cached else (
            f"{job_seconds:.2f}" if job_seconds is not None else "-")
        print(f"| {name:<24} | {st:<9} | {seconds:7.2f} | {job:>13} | {seconds / wall:13.1%} |")


def main():
    home = tempfile.mkdtemp(prefix="bench-pipeline-")
    service = LocalSageMaker(home).start_background()
    try:
        clients = Clients.create(endpoint_url=service.url, local=True)
        install_pipeline(clients, PipelineConfig(bucket=BUCKET), local=True)
        status, wall, rows, job_total, arn = run_once(clients.sagemaker)
        accuracy = test_accuracy(clients, arn)
        # the same parameters again: PrepareData and TrainModel come from the cache
        again_status, again_wall, again_rows, _, _ = run_once(clients.sagemaker)
        # the tuned variant (its own package group: its approval rule is its own)
        install_pipeline(clients, PipelineConfig(
            bucket=BUCKET, tuning=True, pipeline_name=TUNING_PIPELINE_NAME,
            model_package_group=TUNING_MODEL_PACKAGE_GROUP), local=True)
        tuned = run_once(clients.sagemaker, TUNING_PIPELINE_NAME)
        tuned_accuracy = test_accuracy(clients, tuned[4])
        tuning = tuning_job(clients.sagemaker, tuned[4])
    finally:
        service.close()
        shutil.rmtree(home, ignore_errors=True)

    print(f"machine: {machine()}")
    print(f"execution: {status}, default parameters (Epochs 7, LearningRate 0.007), full "
          "MNIST, fresh service\n")
    print_table(rows, wall)
    overhead = wall - job_total
    print(f"\nwall time, start to {status}: {wall:.1f} s (target <= 12 s: "
          f"{'met' if wall <= 12 else 'NOT met'})")
    print(f"test accuracy: {accuracy:.4f} (target >= 0.980: "
          f"{'met' if accuracy >= 0.980 else 'NOT met'})")
    print(f"sum of job process run times: {job_total:.1f} s")
    print(f"service overhead: {overhead:.2f} s = {overhead / job_total:.1%} of the jobs' run time "
          "(target < 10%)")
    print(f"\nthe same execution again ({again_status}), cached steps reused:\n")
    print_table(again_rows, again_wall)
    print(f"\ncached re-run: {again_wall:.1f} s = {again_wall / wall:.2f} of the first run's "
          f"wall time (target <= 0.33: {'met' if again_wall <= wall / 3 else 'NOT met'})")
    print_tuned(tuned, tuned_accuracy, tuning)
    return 0 if status == again_status == tuned[0] == "Succeeded" else 1


def tuning_job(sm, execution_arn) -> dict:
    step = next(s for s in sm.list_pipeline_execution_steps(
        PipelineExecutionArn=execution_arn)["PipelineExecutionSteps"]
        if s["StepName"] == "TuneModel")
    return sm.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=step["Metadata"]["TuningJob"]["Arn"].split("/")[-1])


def print_tuned(tuned, accuracy, tuning):
    status, wall, rows, _, _ = tuned
    config = tuning["HyperParameterTuningJobConfig"]
    best = tuning["BestTrainingJob"]
    print(f"\nthe tuned variant ({TUNING_PIPELINE_NAME}, {status}): "
          f"{config['Strategy']}, {config['ResourceLimits']['MaxNumberOfTrainingJobs']} trials, "
          f"{config['ResourceLimits']['MaxParallelTrainingJobs']} at once\n")
    print_table(rows, wall)
    print(f"\nwall time: {wall:.1f} s; trials completed: "
          f"{tuning['TrainingJobStatusCounters']['Completed']}; best trial "
          f"{best['TunedHyperParameters']}: validation accuracy "
          f"{best['FinalHyperParameterTuningJobObjectiveMetric']['Value']:.4f}; "
          f"test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    sys.exit(main())
