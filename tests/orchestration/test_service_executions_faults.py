"""Executions that stop, retry, train on several instances, survive a restart and a full disk."""
import json
import os
import re
import signal
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localservice import ServiceProcess, steps_of, wait_for
from pipeline.definition import PipelineConfig, definition_json
from servicehelpers import (BUCKET, MNIST, ROLE, upload_code, _until, _sleeping_pipeline,
                            _job_log_says)


@pytest.mark.slow
def _training_log(svc, sm, arn) -> str:
    """The execution's training job's log, once it has one."""
    meta = steps_of(sm, arn).get("TrainModel", {}).get("Metadata", {})
    if "TrainingJob" not in meta:
        return ""
    path = os.path.join(svc.home, "logs", meta["TrainingJob"]["Arn"].split("/")[-1] + ".log")
    return open(path).read() if os.path.exists(path) else ""


def test_restart_during_training_interrupts_then_retry_completes(tmp_path):
    svc = ServiceProcess(tmp_path / "home").start()
    artifacts = upload_code(svc)
    sm = svc.client("sagemaker")
    sm.create_pipeline(PipelineName="mnist-mxnet", RoleArn=ROLE,
                       PipelineDefinition=definition_json(PipelineConfig(bucket=BUCKET),
                                                          artifacts))
    arn = sm.start_pipeline_execution(PipelineName="mnist-mxnet", PipelineParameters=[
        {"Name": "MnistSourceUri", "Value": MNIST}, {"Name": "Epochs", "Value": "8"},
        {"Name": "AccuracyThreshold", "Value": "0.9"}])["PipelineExecutionArn"]
    deadline = time.time() + 120
    while "epoch=1 " not in _training_log(svc, sm, arn):  # an epoch done, 7 to go
        assert time.time() < deadline
        time.sleep(0.1)
    svc.stop(signal.SIGKILL)  # a crash, not a clean stop

    svc = ServiceProcess(tmp_path / "home").start()
    sm = svc.client("sagemaker")
    try:
        desc = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
        assert desc["PipelineExecutionStatus"] == "Failed"
        assert "interrupted" in desc["FailureReason"]
        steps = steps_of(sm, arn)
        assert steps["PrepareData"]["StepStatus"] == "Succeeded"
        assert steps["TrainModel"]["StepStatus"] == "Failed"
        prepare = sm.describe_processing_job(ProcessingJobName=steps["PrepareData"]["Metadata"][
            "ProcessingJob"]["Arn"].split("/")[-1])
        train_uri = next(o["S3Output"]["S3Uri"] for o in
                         prepare["ProcessingOutputConfig"]["Outputs"] if o["OutputName"] == "train")
        bucket, _, key = train_uri[5:].partition("/")
        listed = svc.client("s3").list_objects_v2(Bucket=bucket, Prefix=key)
        assert [o["Key"].split("/")[-1] for o in listed["Contents"]] == ["train.npz"]

        sm.retry_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="retry-1" * 5)
        assert wait_for(sm, arn) == "Succeeded"
        steps = steps_of(sm, arn)
        assert steps["PrepareData"]["AttemptCount"] == 1  # kept, not re-run
        assert steps["TrainModel"]["AttemptCount"] == 2
        assert all(s["StepStatus"] == "Succeeded" for s in steps.values())
        assert sm.describe_endpoint(EndpointName="mnist-mlp")["EndpointStatus"] == "InService"
    finally:
        svc.stop()

    svc = ServiceProcess(tmp_path / "home").start()  # endpoints come back after a restart
    try:
        sm = svc.client("sagemaker")
        deadline = time.time() + 60
        while sm.describe_endpoint(EndpointName="mnist-mlp")["EndpointStatus"] != "InService":
            assert time.time() < deadline
            time.sleep(0.2)
        body = json.dumps([[0.0] * 784])
        answer = svc.client("sagemaker-runtime").invoke_endpoint(
            EndpointName="mnist-mlp", ContentType="application/json", Body=body)
        assert len(json.loads(answer["Body"].read())["predictions"][0]["probabilities"]) == 10
    finally:
        svc.stop()


@pytest.mark.slow
def test_several_training_instances_train_with_dist_sync(service):
    from pipeline.aws import Clients, install_pipeline

    install_pipeline(Clients.create(endpoint_url=service.url, local=True),
                     PipelineConfig(bucket=BUCKET, pipeline_name="dist"), local=True)
    sm = service.client("sagemaker")
    arn = sm.start_pipeline_execution(PipelineName="dist", PipelineParameters=[
        {"Name": "MnistSourceUri", "Value": MNIST}, {"Name": "TrainingInstanceCount", "Value": "2"},
        {"Name": "Epochs", "Value": "2"}, {"Name": "AccuracyThreshold", "Value": "0.99"}],
    )["PipelineExecutionArn"]
    assert wait_for(sm, arn) == "Failed"  # at the gate: 2 epochs on halves do not reach 0.99
    steps = steps_of(sm, arn)
    assert steps["TrainModel"]["StepStatus"] == "Succeeded"
    assert steps["AccuracyTooLow"]["StepStatus"] == "Failed"
    job = steps["TrainModel"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1]
    assert sm.describe_training_job(TrainingJobName=job)["ResourceConfig"]["InstanceCount"] == 2
    with open(os.path.join(service.home, "logs", f"{job}.log")) as handle:
        log = handle.read()
    assert "worker 1 of 2, 27000 training" in log and "worker 2 of 2, 27000 training" in log
    assert log.count("kvstore dist_sync") == 2
    assert log.count("validation_accuracy=") == 4  # two epochs on each worker
    # Real synchronisation: both workers hold the same weights after every step, so on the same
    # validation set they measure the same thing; their training shards (and losses) differ.
    per_epoch = {}
    for match in re.finditer(r"epoch=(?P<epoch>\d+) train_loss=(?P<train_loss>[0-9.]+) "
                             r"train_accuracy=[0-9.]+ validation_loss=(?P<validation_loss>"
                             r"[0-9.]+) validation_accuracy=(?P<validation_accuracy>[0-9.]+)",
                             log):
        per_epoch.setdefault(match["epoch"], []).append(match.groupdict())
    assert sorted(per_epoch) == ["1", "2"]
    for epoch, (first, second) in per_epoch.items():
        assert (first["validation_loss"], first["validation_accuracy"]) == \
            (second["validation_loss"], second["validation_accuracy"]), epoch
        assert first["train_loss"] != second["train_loss"], epoch


def test_stop_and_retry_follow_the_executions_status(service):
    sm = service.client("sagemaker")
    only_a_gate = {"Version": "2020-12-01", "Steps": [
        {"Name": "Gate", "Type": "Condition", "Arguments": {"Conditions": []}}]}
    sm.create_pipeline(PipelineName="gate-only", RoleArn=ROLE,
                       PipelineDefinition=json.dumps(only_a_gate))
    arn = sm.start_pipeline_execution(PipelineName="gate-only")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=30) == "Succeeded"
    with pytest.raises(ClientError) as err:
        sm.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="s" * 32)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "Execution is Succeeded, not Executing" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.retry_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="r" * 32)
    assert "can be retried; this one is Succeeded" in err.value.response["Error"]["Message"]
    assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
        "PipelineExecutionStatus"] == "Succeeded"


def test_stop_pipeline_execution_stops_the_running_job_and_what_follows(service):
    """StopPipelineExecution on a running execution: the job is stopped (its process ends), the
    step and the execution end Stopped, and later steps never start."""
    sm, s3 = service.client("sagemaker"), service.client("s3", s3={"addressing_style": "path"})
    _sleeping_pipeline(sm, s3, "stoppable", 120)
    arn = sm.start_pipeline_execution(PipelineName="stoppable")["PipelineExecutionArn"]

    def job():
        meta = steps_of(sm, arn).get("Sleep", {}).get("Metadata", {})
        if "ProcessingJob" not in meta:
            return None
        return sm.describe_processing_job(
            ProcessingJobName=meta["ProcessingJob"]["Arn"].split("/")[-1])

    assert _until(lambda: _job_log_says(sm, service.home, arn, "Sleep", "sleeping"), 30)
    started = time.time()
    sm.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="stop" * 8)
    assert wait_for(sm, arn, timeout=30) == "Stopped"
    assert time.time() - started < 15  # the 120 s job did not run out
    steps = steps_of(sm, arn)
    assert steps["Sleep"]["StepStatus"] == "Stopped" and "After" not in steps
    assert job()["ProcessingJobStatus"] == "Stopped"


def test_a_full_disk_never_wedges_an_execution(tmp_path):
    """The store refuses every write for a while (a full disk) as a job ends: the API answers
    503 with the reason instead of dropping connections, the execution's end is recorded once
    space returns, and Retry then completes it."""
    import sqlite3
    import threading

    from pipeline.local.server import LocalSageMaker

    service = LocalSageMaker(str(tmp_path / "home")).start_background()
    full, refused = threading.Event(), []
    store, real_write = service.store, service.store.write

    def write(kind, name, body, create=False):
        if full.is_set():
            refused.append(kind)
            raise sqlite3.OperationalError("database or disk is full")
        return real_write(kind, name, body, create)

    store.write = write
    session = dict(endpoint_url=service.url, region_name="us-east-1",
                   aws_access_key_id="local", aws_secret_access_key="local",
                   config=Config(retries={"max_attempts": 1}))
    sm = boto3.client("sagemaker", **session)
    s3 = boto3.client("s3", **dict(session, config=Config(s3={"addressing_style": "path"})))
    try:
        _sleeping_pipeline(sm, s3, "disk", 2)
        arn = sm.start_pipeline_execution(PipelineName="disk")["PipelineExecutionArn"]
        assert _until(lambda: _job_log_says(sm, service.home.root, arn, "Sleep", "sleeping"), 30)
        full.set()
        # the job ends meanwhile; recording it, then the execution's end, is refused (retried)
        assert _until(lambda: refused.count("execution") >= 2, 30), refused
        assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
            "PipelineExecutionStatus"] == "Executing"
        with pytest.raises(ClientError) as err:
            sm.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="s" * 32)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert "database or disk is full" in err.value.response["Error"]["Message"]
        full.clear()  # space returns
        assert wait_for(sm, arn, timeout=30) == "Failed"
        reason = sm.describe_pipeline_execution(PipelineExecutionArn=arn)["FailureReason"]
        assert "database or disk is full" in reason
        sm.retry_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="r" * 32)
        assert wait_for(sm, arn, timeout=60) == "Succeeded"
        assert steps_of(sm, arn)["After"]["StepStatus"] == "Succeeded"
    finally:
        full.clear()
        service.close()


def test_a_home_that_cannot_be_written_is_served_read_only(tmp_path, monkeypatch, capsys):
    """Started on a full disk with an execution a previous run left Executing: the service
    cannot record it as interrupted, so it serves read-only and says why; reads are answered,
    anything that would change state gets 503 in its API's shape (it used to exit)."""
    import sqlite3
    import urllib.error
    import urllib.request

    from pipeline.local import server as service_module
    from pipeline.local.backend.records import PipelineExecution
    from pipeline.local.store import Store

    home = tmp_path / "home"
    first = service_module.LocalSageMaker(str(home))
    first.store.put(PipelineExecution.kind, "left", {
        "PipelineExecutionArn": "left", "PipelineExecutionStatus": "Executing"})
    first.close()

    def full(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "write", full)
    service = service_module.LocalSageMaker(str(home)).start_background()
    try:
        assert service.read_only == ("recording the work a previous run left failed: "
                                     "database or disk is full")
        session = dict(endpoint_url=service.url, region_name="us-east-1",
                       aws_access_key_id="local", aws_secret_access_key="local",
                       config=Config(retries={"max_attempts": 1}))
        sm = boto3.client("sagemaker", **session)
        s3 = boto3.client("s3", **dict(session, config=Config(s3={"addressing_style": "path"})))
        assert sm.list_pipelines()["PipelineSummaries"] == []
        with pytest.raises(ClientError) as err:
            sm.create_model_package_group(ModelPackageGroupName="g")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert "serving read-only (recording the work a previous run left failed: database " \
            "or disk is full): start it again with room to write" in \
            err.value.response["Error"]["Message"]
        assert s3.list_buckets()["Buckets"] == []
        with pytest.raises(ClientError) as err:
            s3.create_bucket(Bucket="b")
        assert err.value.response["Error"]["Code"] == "ServiceUnavailable"  # S3's XML
        assert urllib.request.urlopen(f"{service.url}/").status == 200
        with pytest.raises(urllib.error.HTTPError) as page:
            urllib.request.urlopen(urllib.request.Request(
                f"{service.url}/executions/stop", data=b"arn=left", method="POST"))
        assert page.value.code == 503
    finally:
        service.close()
    monkeypatch.setattr(service_module.LocalSageMaker, "serve_forever", lambda self: None)
    with pytest.raises(SystemExit):
        service_module.serve(str(home))
    assert "warning: serving read-only: recording the work a previous run left failed: " \
        "database or disk is full." in capsys.readouterr().err
