"""The local service as an AWS look-alike: protocol, validation, errors, SDK, CLI, restarts."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ROOT
from localservice import ServiceProcess, steps_of, wait_for
from pipeline.local import launcher
from pipeline.definition import SDK_CONFIG, PipelineConfig, build_pipeline, definition_json
from pipeline.packaging import build_artifacts, upload_artifacts

BUCKET = "sagemaker-local"
MNIST = os.path.join(ROOT, "data", "mnist")
ROLE = "arn:aws:iam::000000000000:role/r"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = ServiceProcess(tmp_path_factory.mktemp("svc")).start()
    yield svc
    svc.stop()


def upload_code(svc):
    s3 = svc.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    artifacts = build_artifacts("mnist-mxnet")
    upload_artifacts(s3, BUCKET, artifacts)
    return artifacts


def test_requests_are_validated_with_botocores_service_model(service):
    sm = service.client("sagemaker", parameter_validation=False)
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="x", RoleArn=ROLE, PipelineDefinition=123)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "Invalid type for parameter PipelineDefinition" in str(err.value)
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="x", PipelineDefinition="{}")
    assert 'Missing required parameter in input: "RoleArn"' in str(err.value)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as err:  # optional in the API, needed here
        sm.list_pipeline_execution_steps()
    assert "needs the parameter PipelineExecutionArn" in str(err.value)


def test_errors_have_aws_codes_and_messages(service):
    sm = service.client("sagemaker")
    with pytest.raises(ClientError) as err:
        sm.describe_pipeline(PipelineName="missing")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"
    with pytest.raises(ClientError) as err:
        sm.describe_endpoint(EndpointName="missing")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert 'Could not find endpoint "missing"' in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="bad", RoleArn=ROLE, PipelineDefinition="{not json")
    assert "PipelineDefinition is not JSON" in str(err.value)
    cyclic = {"Version": "2020-12-01", "Steps": [
        {"Name": "A", "Type": "Fail", "DependsOn": ["B"], "Arguments": {}},
        {"Name": "B", "Type": "Fail", "DependsOn": ["A"], "Arguments": {}}]}
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="bad", RoleArn=ROLE,
                           PipelineDefinition=json.dumps(cyclic))
    assert "cycle" in str(err.value)
    runtime = service.client("sagemaker-runtime")
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="nope", Body=b"[]", ContentType="application/json")
    assert "Endpoint nope of account 000000000000 not found" in str(err.value)


def test_unknown_operation_is_rejected(service):
    request = urllib.request.Request(service.url + "/", data=b"{}", method="POST", headers={
        "X-Amz-Target": "SageMaker.CreateTimeMachine",
        "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request)
    assert err.value.code == 400
    assert json.loads(err.value.read())["__type"] == "UnknownOperationException"


@pytest.mark.parametrize("path, message", [
    ("/packages/no-group/1", "model-package/no-group/1 does not exist"),
    ("/executions/no-pipeline/abc", "no execution abc"),
    ("/jobs", "no page at /jobs"),
    ("/jobs/no-job", "job with name no-job"),
])
def test_run_browser_pages_of_what_does_not_exist_are_404(service, path, message):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(service.url + path)
    assert err.value.code == 404
    assert message in err.value.read().decode()


def test_the_aws_cli_works_against_it(service):
    upload_code(service)
    service.client("sagemaker").create_model_package_group(ModelPackageGroupName="cli-group")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
           "AWS_DEFAULT_REGION": "us-east-1"}
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    proc = subprocess.run([aws, "--endpoint-url", service.url, "sagemaker",
                           "list-model-package-groups", "--output", "json"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    names = [g["ModelPackageGroupName"] for g in
             json.loads(proc.stdout)["ModelPackageGroupSummaryList"]]
    assert "cli-group" in names
    proc = subprocess.run([aws, "--endpoint-url", service.url, "s3", "ls",
                           f"s3://{BUCKET}/mnist-mxnet/code/", "--recursive"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "sourcedir.tar.gz" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_the_sagemaker_sdks_own_objects_work(service):
    import sagemaker
    artifacts = upload_code(service)
    boto_session = boto3.Session(region_name="us-east-1", aws_access_key_id="local",
                                 aws_secret_access_key="local")
    session = sagemaker.Session(boto_session=boto_session,
                                sagemaker_client=service.client("sagemaker"),
                                sagemaker_runtime_client=service.client("sagemaker-runtime"),
                                default_bucket=BUCKET,
                                sagemaker_config=SDK_CONFIG)  # no telemetry: no network
    pipeline = build_pipeline(PipelineConfig(bucket=BUCKET, pipeline_name="sdk-pipeline"),
                              artifacts)
    pipeline.sagemaker_session = session
    assert pipeline.upsert(role_arn=ROLE)["PipelineArn"].endswith("pipeline/sdk-pipeline")
    assert pipeline.describe()["PipelineName"] == "sdk-pipeline"
    execution = pipeline.start(parameters={
        "MnistSourceUri": MNIST, "Epochs": 2, "AccuracyThreshold": 0.9, "KeepEndpoint": False,
        "EndpointName": "sdk-endpoint"})
    execution.wait(delay=1, max_attempts=300)
    assert execution.describe()["PipelineExecutionStatus"] == "Succeeded"
    steps = {s["StepName"]: s["StepStatus"] for s in execution.list_steps()}
    assert steps["Cleanup"] == "Succeeded" and len(steps) == 8
    with pytest.raises(ClientError):  # KeepEndpoint=false: Cleanup deleted it
        service.client("sagemaker").describe_endpoint(EndpointName="sdk-endpoint")


@pytest.mark.slow
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
    def training_log():  # the training job's log, once it has one
        meta = steps_of(sm, arn).get("TrainModel", {}).get("Metadata", {})
        if "TrainingJob" not in meta:
            return ""
        path = os.path.join(svc.home, "logs", meta["TrainingJob"]["Arn"].split("/")[-1] +
                            ".log")
        return open(path).read() if os.path.exists(path) else ""

    deadline = time.time() + 120
    while "epoch=1 " not in training_log():  # well inside training: an epoch done, 7 to go
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


def test_endpoint_url_option_points_the_cli_at_that_service(service, capsys, monkeypatch):
    from pipeline import cli

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    service.client("sagemaker").create_model_package_group(ModelPackageGroupName="url-group")
    assert cli.main(["--endpoint-url", service.url, "--region", "us-east-1",
                     "--model-package-group", "url-group", "approve", "latest"]) == 2
    assert "no model packages in group url-group" in capsys.readouterr().err
    assert cli.main(["--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1",
                     "approve", "latest"]) == 1  # nothing listens there
    assert "Could not connect" in capsys.readouterr().err


def test_local_and_local_home_start_find_and_stop_a_service(tmp_path, capsys):
    from pipeline import cli

    home = str(tmp_path / "own-home")
    base = ["--local", "--local-home", home]
    assert cli.main(base + ["local", "status"]) == 1
    assert "not running" in capsys.readouterr().out
    try:
        assert cli.main(base + ["local", "start"]) == 0
        url = capsys.readouterr().out.strip()
        with open(os.path.join(home, "service.json")) as handle:
            assert json.load(handle)["url"] == url
        assert cli.main(base + ["executions"]) == 2  # --local: the (empty) service in that home
        assert "Pipeline 'mnist-mxnet' does not exist" in capsys.readouterr().err
        assert cli.main(base + ["local", "status"]) == 0
        assert f"running at {url}" in capsys.readouterr().out
        with open(os.path.join(home, "service.json")) as handle:
            pid = json.load(handle)["pid"]
    finally:
        assert cli.main(base + ["local", "stop"]) == 0
    assert "stopped" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(home, "service.json"))
    with pytest.raises(ChildProcessError):  # stop reaped its own child: no zombie left
        os.waitpid(pid, os.WNOHANG)


def test_names_are_checked_against_the_models_constraints_as_aws_does(service):
    """Every member is checked server-side (pattern, length, enum, range) before an operation
    runs, with AWS's message; names that would be paths never reach the disk."""
    sm = service.client("sagemaker")

    def refusal(call, **request):
        with pytest.raises(ClientError) as err:
            call(**request)
        assert err.value.response["Error"]["Code"] == "ValidationException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return err.value.response["Error"]["Message"]

    variants = [{"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1,
                 "InstanceType": "ml.m5.large"}]
    assert refusal(sm.create_endpoint_config, EndpointConfigName="../../../escaped",
                   ProductionVariants=variants) == (
        "1 validation error detected: Value '../../../escaped' at 'endpointConfigName' failed "
        "to satisfy constraint: Member must satisfy regular expression pattern: "
        "[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
    assert refusal(sm.create_endpoint, EndpointName="/some/dir", EndpointConfigName="c").startswith(
        "1 validation error detected: Value '/some/dir' at 'endpointName' failed")
    message = refusal(sm.create_pipeline, PipelineName="a/../b", RoleArn=ROLE,
                      PipelineDefinition="{}")
    assert "at 'pipelineName' failed to satisfy constraint" in message
    message = refusal(sm.describe_endpoint, EndpointName="e" * 63)  # at the limit: allowed
    assert message == f'Could not find endpoint "{"e" * 63}".'
    message = refusal(sm.describe_endpoint, EndpointName="e" * 64)  # too long for both rules
    assert message.startswith("2 validation errors detected: ")
    assert "Member must have length less than or equal to 63; " in message
    message = refusal(sm.list_pipelines, SortOrder="Sideways", MaxResults=101)
    assert message.startswith("2 validation errors detected: ")
    assert "Member must satisfy enum value set: [Ascending, Descending]" in message
    assert "at 'maxResults' failed to satisfy constraint: Member must have value less than or " \
        "equal to 100" in message
    bad_variant = [dict(variants[0], VariantName="no spaces allowed")]
    assert "at 'productionVariants.1.member.variantName' failed" in refusal(
        sm.create_endpoint_config, EndpointConfigName="ok", ProductionVariants=bad_variant)
    names = os.listdir(os.path.dirname(service.home))
    assert not any("escaped" in n or n == "dir" for n in names)


def test_paths_from_names_are_confined_to_the_home_whatever_the_api_lets_through(tmp_path):
    """The second line of defence: a path built from any name stays strictly inside the home."""
    from pipeline.local.home import ServiceHome

    home = ServiceHome(str(tmp_path / "home"))
    for bad in ("../../escaped", "..", ".", "", "a/b", "x\0y"):
        with pytest.raises(ValueError, match="cannot be used as a file name"):
            home.model_dir("endpoint", bad)
    for bad in ("../../escaped", "a/b", "x\0y"):
        with pytest.raises(ValueError, match="cannot be used as a file name"):
            home.job_log(bad)
    os.makedirs(tmp_path / "home" / "endpoints", exist_ok=True)
    os.symlink(tmp_path, tmp_path / "home" / "endpoints" / "link")  # a link out of the home
    with pytest.raises(ValueError, match="leaves the service's home"):
        home.model_dir("link", "config")
    assert home.model_dir("e", "c") == str(tmp_path / "home" / "endpoints" / "e" / "c")
    assert sorted(os.listdir(tmp_path)) == ["home"]


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


def test_eventbridge_rules_start_pipelines_on_package_state_changes(service):
    """The EventBridge subset, through boto3's events client: a rule on Approved packages of a
    group starts its pipeline target with the target's parameters; other changes do not."""
    sm, events = service.client("sagemaker"), service.client("events")
    sm.create_pipeline(PipelineName="on-approval", RoleArn=ROLE, PipelineDefinition=json.dumps({
        "Version": "2020-12-01", "Parameters": [{"Name": "Why", "Type": "String",
                                                 "DefaultValue": "by hand"}],
        "Steps": [{"Name": "Gate", "Type": "Condition", "Arguments": {"Conditions": []}}]}))
    pattern = {"source": ["aws.sagemaker"],
               "detail-type": ["SageMaker Model Package State Change"],
               "detail": {"ModelPackageGroupName": ["events-group"],
                          "ModelApprovalStatus": ["Approved"]}}
    arn = events.put_rule(Name="approved", EventPattern=json.dumps(pattern))["RuleArn"]
    assert arn == "arn:aws:events:us-east-1:000000000000:rule/approved"
    pipeline_arn = sm.describe_pipeline(PipelineName="on-approval")["PipelineArn"]
    assert events.put_targets(Rule="approved", Targets=[{
        "Id": "t", "Arn": pipeline_arn, "RoleArn": ROLE, "SageMakerPipelineParameters": {
            "PipelineParameterList": [{"Name": "Why", "Value": "approved"}]}}])[
        "FailedEntryCount"] == 0
    refused = events.put_targets(Rule="approved", Targets=[
        {"Id": "q", "Arn": "arn:aws:sqs:us-east-1:000000000000:queue"}])
    assert refused["FailedEntryCount"] == 1
    assert [t["Id"] for t in events.list_targets_by_rule(Rule="approved")["Targets"]] == ["t"]
    with pytest.raises(ClientError) as err:
        events.put_rule(Name="bad", EventPattern='{"source": "aws.sagemaker"}')
    assert err.value.response["Error"]["Code"] == "InvalidEventPatternException"

    def runs():
        return sm.list_pipeline_executions(PipelineName="on-approval")[
            "PipelineExecutionSummaries"]

    sm.create_model_package_group(ModelPackageGroupName="events-group")
    package = sm.create_model_package(
        ModelPackageGroupName="events-group", ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "img"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})[
        "ModelPackageArn"]
    assert runs() == []  # created pending: the pattern wants Approved
    sm.update_model_package(ModelPackageArn=package, ApprovalDescription="no status change")
    assert runs() == []
    sm.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
    (started,) = runs()
    assert started["PipelineExecutionDescription"] == "started by an EventBridge rule"
    params = sm.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=started["PipelineExecutionArn"])["PipelineParameters"]
    assert params == [{"Name": "Why", "Value": "approved"}]
    events.disable_rule(Name="approved")
    sm.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Rejected")
    sm.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
    assert len(runs()) == 1  # a disabled rule starts nothing
    with pytest.raises(ClientError) as err:
        events.delete_rule(Name="approved")
    assert "has targets" in err.value.response["Error"]["Message"]
    events.remove_targets(Rule="approved", Ids=["t"])
    events.delete_rule(Name="approved")
    with pytest.raises(ClientError) as err:
        events.describe_rule(Name="approved")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_experiment_config_is_accepted_and_returned_resolved(service):
    sm = service.client("sagemaker")
    sm.create_pipeline(PipelineName="with-experiments", RoleArn=ROLE,
                       PipelineDefinition=json.dumps({
                           "Version": "2020-12-01",
                           "PipelineExperimentConfig": {
                               "ExperimentName": {"Get": "Execution.PipelineName"},
                               "TrialName": {"Get": "Execution.PipelineExecutionId"}},
                           "Steps": [{"Name": "Gate", "Type": "Condition",
                                      "Arguments": {"Conditions": []}}]}))
    arn = sm.start_pipeline_execution(PipelineName="with-experiments")["PipelineExecutionArn"]
    assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
        "PipelineExperimentConfig"] == {"ExperimentName": "with-experiments",
                                        "TrialName": arn.split("/")[-1]}


def test_event_patterns_match_as_eventbridge_documents():
    from pipeline.local.events import matches

    event = {"source": "aws.sagemaker", "resources": ["arn:a", "arn:b"],
             "detail": {"ModelPackageGroupName": "g", "ModelApprovalStatus": "Approved"}}
    assert matches({"source": ["aws.sagemaker", "aws.s3"]}, event)
    assert matches({"resources": ["arn:b"]}, event)  # any item of a list-valued field
    assert matches({"detail": {"ModelPackageGroupName": [{"prefix": "g"}]}}, event)
    assert matches({"detail": {"ApprovalDescription": [{"exists": False}]}}, event)
    assert not matches({"detail": {"ModelApprovalStatus": ["Rejected"]}}, event)
    assert not matches({"detail": {"Missing": ["x"]}}, event)
    assert not matches({"detail": {"ModelApprovalStatus": [{"exists": False}]}}, event)
    with pytest.raises(ValueError):
        matches({"source": "aws.sagemaker"}, event)  # values must be lists


def _raw(url, request: bytes, timeout=10) -> bytes:
    import socket
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while piece := sock.recv(65536):
                chunks.append(piece)
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(chunks)


@pytest.mark.parametrize("request_bytes,status,message", [
    (b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application"
     b"/json\r\n Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n[]", 400,
     "Unexpected whitespace after header value"),  # a folded line (obs-fold)
    (b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "Transfer-Encoding can't be present with Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.ListModels\r\n"
     b"Content-Length: abc\r\n\r\n", 400, "Invalid character in Content-Length"),
    (b"PUT /sagemaker-local/k HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"-10\r\n", 400, "Invalid character in chunk size"),
    (b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000000"
     b"\r\n\r\n", 413, "over this route's limit of 6291456 bytes"),
    (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.ListModels\r\n"
     b"Content-Length: 99999999999\r\n\r\n", 413, "over this route's limit"),
    (b"GET / HTTP/1.1\r\nHost: rebound.example:80\r\n\r\n", 403, "loopback host name"),
    (b"POST / HTTP/1.1\r\nHost: evil.example\r\nX-Amz-Target: SageMaker.ListModels\r\n"
     b"Content-Length: 2\r\n\r\n{}", 403, "loopback host name"),
])
def test_the_service_refuses_ambiguous_oversized_or_foreign_requests(service, request_bytes,
                                                                     status, message):
    answer = _raw(service.url, request_bytes + b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    assert message in answer.decode("latin-1")
    assert answer.count(b"HTTP/1.1 ") == 1  # the connection closed: nothing more was read
    assert urllib.request.urlopen(service.url + "/ping").status == 200


def test_6_mib_invocations_pass_the_limit_and_one_byte_more_does_not(service):
    runtime = service.client("sagemaker-runtime")
    limit = 6 * 1024 * 1024
    with pytest.raises(ClientError) as err:  # read whole, then: no such endpoint
        runtime.invoke_endpoint(EndpointName="none", Body=b"x" * limit)
    assert "Endpoint none of account" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="none", Body=b"x" * (limit + 1))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    chunked = b"".join(b"%x\r\n%s\r\n" % (n, b"x" * n) for n in (limit // 2, limit // 2 + 1))
    answer = _raw(service.url, b"POST /endpoints/none/invocations HTTP/1.1\r\nHost: 127.0.0.1"
                  b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_large_s3_objects_are_spooled_not_held(service, tmp_path):
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="spooled")
    data = os.urandom(20 * 1024 * 1024)
    s3.put_object(Bucket="spooled", Key="big/object.bin", Body=data)
    assert s3.get_object(Bucket="spooled", Key="big/object.bin")["Body"].read() == data
    head = s3.head_object(Bucket="spooled", Key="big/object.bin")
    import hashlib
    assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


SLOW_HANDLERS = '''"""A model that sleeps as long as it is told: for the hosting tests."""
import time


def model_fn(model_dir):
    return None


def input_fn(body, content_type):
    return float(body or 0)


def predict_fn(seconds, model):
    time.sleep(seconds)
    return seconds


def output_fn(prediction, accept):
    return '{"slept": %s}' % prediction
'''


@pytest.fixture
def hosted(tmp_path):
    """An in-process service with short hosting timeouts, serving the sleeping model."""
    import io
    import tarfile

    from pipeline.local.server import LocalSageMaker

    service = LocalSageMaker(str(tmp_path / "home"), invocation_timeout=2.0,
                             health_seconds=0.3).start_background()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        code = SLOW_HANDLERS.encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(code)
        tar.addfile(info, io.BytesIO(code))
    session = dict(endpoint_url=service.url, region_name="us-east-1",
                   aws_access_key_id="local", aws_secret_access_key="local")
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **session)
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="sleepy/model.tar.gz", Body=archive.getvalue())
    sm = boto3.client("sagemaker", **session)
    runtime = boto3.client("sagemaker-runtime", config=Config(retries={"max_attempts": 1}),
                           **session)
    _model_and_config(sm, "sleepy", "s3://models/sleepy/model.tar.gz")
    sm.create_endpoint(EndpointName="sleepy", EndpointConfigName="sleepy")
    assert _until(lambda: sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"]
                  == "InService", 60)
    yield service, sm, runtime
    service.close()


def _model_and_config(sm, name, model_data):
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "img", "ModelDataUrl": model_data})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])


def _until(predicate, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _server_pid(service):
    return service.hosting.servers["sleepy"].process.pid


def _answers(runtime):
    try:
        body = runtime.invoke_endpoint(EndpointName="sleepy", Body=b"0")["Body"].read()
        return json.loads(body) == {"slept": 0.0}
    except ClientError:
        return False


def test_an_invocation_times_out_as_sagemakers_do(hosted):
    service, sm, runtime = hosted
    started = time.time()
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="sleepy", Body=b"4")
    assert time.time() - started < 3.5  # one timeout (2 s here, 60 s by default), no retry
    assert err.value.response["Error"]["Code"] == "ModelError"
    assert "timed out while waiting for a response from container primary" in \
        err.value.response["Error"]["Message"]
    assert _until(lambda: _answers(runtime), 15)  # served again once the model is free


def test_dead_and_frozen_model_servers_are_replaced_then_the_endpoint_fails(hosted):
    service, sm, runtime = hosted
    first = _server_pid(service)
    os.kill(first, signal.SIGKILL)  # dead
    assert _until(lambda: "sleepy" in service.hosting.servers
                  and _server_pid(service) != first and _answers(runtime), 30)
    second = _server_pid(service)
    os.killpg(second, signal.SIGSTOP)  # frozen, it and its workers: alive, silent
    assert _until(lambda: "sleepy" in service.hosting.servers
                  and _server_pid(service) != second and _answers(runtime), 30)
    assert sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"] == "InService"
    os.kill(_server_pid(service), signal.SIGKILL)  # a third death: restarts are used up
    assert _until(lambda: sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"]
                  == "Failed", 30)
    reason = sm.describe_endpoint(EndpointName="sleepy")["FailureReason"]
    assert "the model server exited with code -9; restarted 2 times" == reason
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="sleepy", Body=b"0")
    assert "Endpoint sleepy is Failed" in err.value.response["Error"]["Message"]


def test_s3_keys_the_store_cannot_hold_get_400_and_change_nothing(service):
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="keys")
    s3.put_object(Bucket="keys", Key="a/b", Body=b"1")
    s3.put_object(Bucket="keys", Key="ends/with.part", Body=b"2")  # an ordinary key
    for key, message in (("a", "other keys lie below it"), ("a/b/c", "'a/b' is an object"),
                         ("x/..", "'..' segments"), ("s" * 256, "a segment over 255 bytes"),
                         ("../keys-evil/k", "'..' segments")):
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket="keys", Key=key, Body=b"x")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, key
        assert message in err.value.response["Error"]["Message"], key
    answer = _raw(service.url, b"PUT /keys/../keys-evil/k HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Length: 1\r\n\r\nx")
    assert answer.startswith(b"HTTP/1.1 400 ")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="keys")["Contents"]]
    assert keys == ["a/b", "ends/with.part"]
    assert not os.path.exists(os.path.join(service.home, "s3", "keys-evil"))


def _sleeping_pipeline(sm, s3, name, seconds):
    """A pipeline whose Processing step prints "sleeping" and sleeps, then a Condition."""
    s3.create_bucket(Bucket="sleeping")
    s3.put_object(Bucket="sleeping", Key=f"{name}/sleep.py", Body=(
        f"import time\nprint('sleeping', flush=True)\ntime.sleep({seconds})\n").encode())
    code_input = {"InputName": "code", "AppManaged": False, "S3Input": {
        "S3Uri": f"s3://sleeping/{name}", "LocalPath": "/opt/ml/processing/input/code",
        "S3DataType": "S3Prefix", "S3InputMode": "File",
        "S3DataDistributionType": "FullyReplicated"}}
    definition = {"Version": "2020-12-01", "Steps": [
        {"Name": "Sleep", "Type": "Processing", "Arguments": {
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "VolumeSizeInGB": 30,
                                                      "InstanceType": "ml.m5.large"}},
            "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": [
                "python3", "/opt/ml/processing/input/code/sleep.py"]},
            "RoleArn": ROLE, "ProcessingInputs": [code_input]}},
        {"Name": "After", "Type": "Condition", "DependsOn": ["Sleep"],
         "Arguments": {"Conditions": []}}]}
    sm.create_pipeline(PipelineName=name, RoleArn=ROLE, PipelineDefinition=json.dumps(definition))


def _job_log_says(sm, home, arn, step, text):
    meta = steps_of(sm, arn).get(step, {}).get("Metadata", {})
    if "ProcessingJob" not in meta:
        return False
    log = os.path.join(home, "logs", meta["ProcessingJob"]["Arn"].split("/")[-1] + ".log")
    return os.path.exists(log) and text in open(log).read()


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


@pytest.mark.parametrize("passing", [True, False])
def test_runtime_connections_pass_to_the_model_server_and_back(hosted, monkeypatch, passing):
    """A client's keep-alive connection to the runtime route is passed to the endpoint's model
    server at its first invocation, which answers the invocations after it itself, in the same
    words; any other request goes back to the service. Without passing (``passing=False``:
    the service proxies each call), every answer is the same."""
    import http.client

    service, sm, _ = hosted
    channels = service.hosting.servers["sleepy"].channels  # one per model-server worker
    assert {service.hosting.channel_of("sleepy") for _ in channels} == set(channels)  # in turn
    if not passing:
        monkeypatch.setattr(service.hosting, "channel_of", lambda endpoint: None)
    service_side = service.http.server_state.connections
    before = len(service_side)
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)

    def post(path, body, headers=None):
        conn.request("POST", path, body, headers or {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response, response.read()

    for _ in range(3):
        response, body = post("/endpoints/sleepy/invocations", b"0")
        assert response.status == 200 and json.loads(body) == {"slept": 0.0}
        assert response.getheader("x-Amzn-Invoked-Production-Variant") == "AllTraffic"
        assert len(service_side) == before + (0 if passing else 1)  # whose connection it is
    response, body = post("/endpoints/sleepy/invocations", b"abc")
    error = json.loads(body)
    assert response.status == 424 and error["__type"] == "ModelError"
    assert error["OriginalStatusCode"] == 500 and error["LogStreamArn"].endswith(
        ":log-group:/aws/sagemaker/Endpoints/sleepy")
    response, body = post("/", b"{}", {"X-Amz-Target": "SageMaker.ListEndpoints",
                                       "Content-Type": "application/x-amz-json-1.1"})
    assert response.status == 200
    assert [e["EndpointName"] for e in json.loads(body)["Endpoints"]] == ["sleepy"]
    assert len(service_side) == before + 1  # back at the service
    response, body = post("/endpoints/missing/invocations", b"0")
    assert response.status == 400 and json.loads(body)["message"] == \
        "Endpoint missing of account 000000000000 not found."
    response, body = post("/endpoints/sleepy/invocations", b"0")  # passed again, or not
    assert response.status == 200 and len(service_side) == before + (0 if passing else 1)
    conn.close()


def test_without_abstract_unix_sockets_the_service_proxies_every_call(tmp_path, monkeypatch):
    """Where connections cannot change hands (abstract Unix sockets are Linux's), the service
    still starts, and its model servers take no passed connections."""
    from pipeline.local import shared
    from pipeline.local.server import LocalSageMaker

    def no_abstract_sockets(name):
        raise OSError(97, "Address family not supported by protocol")

    monkeypatch.setattr(shared.protocol, "listener", no_abstract_sockets)
    service = LocalSageMaker(str(tmp_path / "home")).start_background()
    try:
        assert service.hosting.service_channel is None and service.http.channels == []
        with urllib.request.urlopen(service.url + "/ping", timeout=10) as response:
            assert response.status == 200
    finally:
        service.close()


def test_a_failed_update_keeps_the_old_model_serving(hosted):
    """As on AWS: an update that cannot start its model leaves the endpoint InService on the
    config it had, with the reason, and the old model answering throughout."""
    service, sm, runtime = hosted
    _model_and_config(sm, "broken", "s3://models/missing/model.tar.gz")
    sm.update_endpoint(EndpointName="sleepy", EndpointConfigName="broken")
    assert _until(lambda: sm.describe_endpoint(EndpointName="sleepy")["EndpointStatus"]
                  != "Updating", 30)
    desc = sm.describe_endpoint(EndpointName="sleepy")
    assert desc["EndpointStatus"] == "InService" and desc["EndpointConfigName"] == "sleepy"
    assert "update to broken failed" in desc["FailureReason"]
    assert _answers(runtime)
    assert not os.path.exists(os.path.join(service.home.endpoints_dir, "sleepy", "broken"))


def test_endpoint_weights_and_capacities_are_updated_as_described(hosted):
    service, sm, runtime = hosted
    (variant,) = sm.describe_endpoint(EndpointName="sleepy")["ProductionVariants"]
    assert variant["CurrentWeight"] == 1.0 and variant["CurrentInstanceCount"] == 1
    sm.update_endpoint_weights_and_capacities(EndpointName="sleepy", DesiredWeightsAndCapacities=[
        {"VariantName": "AllTraffic", "DesiredWeight": 0.5, "DesiredInstanceCount": 3}])
    desc = sm.describe_endpoint(EndpointName="sleepy")
    (variant,) = desc["ProductionVariants"]
    assert desc["EndpointStatus"] == "InService"
    assert (variant["CurrentWeight"], variant["DesiredWeight"]) == (0.5, 0.5)
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (3, 3)
    with pytest.raises(ClientError) as err:
        sm.update_endpoint_weights_and_capacities(
            EndpointName="sleepy", DesiredWeightsAndCapacities=[{"VariantName": "Canary",
                                                                 "DesiredWeight": 1.0}])
    assert "['Canary'] are not present in endpoint sleepy" in str(err.value)
    assert _answers(runtime)  # still serving


def test_asynchronous_invocations_write_answers_and_failures_to_s3(hosted):
    """InvokeEndpointAsync as SageMaker does it: 202 with the output location at once, the input
    read from S3, the answer written to S3OutputPath as <InferenceId>.out, a model's error to
    S3FailurePath as <InferenceId>-error.out."""
    service, sm, runtime = hosted
    s3 = boto3.client("s3", endpoint_url=service.url, region_name="us-east-1",
                      aws_access_key_id="local", aws_secret_access_key="local",
                      config=Config(s3={"addressing_style": "path"}))
    with pytest.raises(ClientError) as err:  # its config has no AsyncInferenceConfig
        runtime.invoke_endpoint_async(EndpointName="sleepy", InputLocation="s3://models/x")
    assert "not configured for asynchronous inference" in str(err.value)
    sm.create_endpoint_config(
        EndpointConfigName="sleepy-async", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "sleepy", "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large"}],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://models/async/out",
                                               "S3FailurePath": "s3://models/async/failed"}})
    sm.update_endpoint(EndpointName="sleepy", EndpointConfigName="sleepy-async")
    assert _until(lambda: sm.describe_endpoint(EndpointName="sleepy")["EndpointConfigName"]
                  == "sleepy-async", 60)
    s3.put_object(Bucket="models", Key="async/in/ok.txt", Body=b"0.2")
    s3.put_object(Bucket="models", Key="async/in/bad.txt", Body=b"not a number")
    answer = runtime.invoke_endpoint_async(EndpointName="sleepy", ContentType="text/plain",
                                           InputLocation="s3://models/async/in/ok.txt")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["OutputLocation"] == f"s3://models/async/out/{answer['InferenceId']}.out"
    failing = runtime.invoke_endpoint_async(EndpointName="sleepy", InferenceId="bad-1",
                                            InputLocation="s3://models/async/in/bad.txt")
    assert failing["FailureLocation"] == "s3://models/async/failed/bad-1-error.out"

    def body_of(key):
        try:
            return s3.get_object(Bucket="models", Key=key)["Body"].read()
        except ClientError:
            return None

    assert _until(lambda: body_of(f"async/out/{answer['InferenceId']}.out") is not None, 30)
    assert json.loads(body_of(f"async/out/{answer['InferenceId']}.out")) == {"slept": 0.2}
    assert _until(lambda: body_of("async/failed/bad-1-error.out") is not None, 30)
    assert b"could not convert string to float" in body_of("async/failed/bad-1-error.out")
    assert body_of("async/out/bad-1.out") is None


def test_bad_definitions_and_tokens_are_refused_up_front_with_a_400(service):
    sm = service.client("sagemaker")

    def refused(definition):
        with pytest.raises(ClientError) as err:
            sm.create_pipeline(PipelineName="refused", RoleArn=ROLE,
                               PipelineDefinition=definition if isinstance(definition, str)
                               else json.dumps(definition))
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return err.value.response["Error"]["Message"]

    gate = {"Name": "Gate", "Type": "Condition", "Arguments": {"Conditions": []}}
    assert "cannot take the value 'abc'" in refused({"Version": "2020-12-01", "Parameters": [
        {"Name": "Epochs", "Type": "Integer", "DefaultValue": "abc"}], "Steps": [gate]})
    assert "condition of unknown type 'Sometimes'" in refused({"Steps": [dict(
        gate, Arguments={"Conditions": [{"Type": "Sometimes"}]})]})
    assert "Training step 'Train' lacks AlgorithmSpecification" in refused({"Steps": [
        {"Name": "Train", "Type": "Training"}]})
    assert "nested too deeply" in refused('{"Steps": ' + "[" * 50000 + "]" * 50000 + "}")
    big = json.dumps({"Steps": [gate], "Metadata": {"pad": "x" * 1048576}})
    assert "Member must have length less than or equal to 1048576" in refused(big)
    assert sm.list_pipelines(PipelineNamePrefix="refused")["PipelineSummaries"] == []
    with pytest.raises(ClientError) as err:
        sm.list_pipelines(NextToken="abc")
    assert err.value.response["Error"] == {"Code": "ValidationException",
                                           "Message": "Invalid pagination token"}


def test_a_huge_definition_is_checked_while_other_calls_go_on(service):
    """8,000 steps in a chain are accepted, and list calls made meanwhile are answered (the
    check runs outside the backend's lock; its speed is in bench/definition_check.py)."""
    import threading

    sm = service.client("sagemaker")
    steps = [{"Name": f"S{i}", "Type": "Fail", "Arguments": {"ErrorMessage": "x"},
              **({"DependsOn": [f"S{i - 1}"]} if i else {})} for i in range(8000)]
    answered, done = [], threading.Event()

    def other_calls():
        client = service.client("sagemaker")
        while not done.is_set():
            answered.append(client.list_endpoints()["Endpoints"] is not None)

    thread = threading.Thread(target=other_calls)
    thread.start()
    sm.create_pipeline(PipelineName="eight-thousand", RoleArn=ROLE,
                       PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": steps}))
    done.set()
    thread.join()
    assert answered and all(answered)
    assert sm.describe_pipeline(PipelineName="eight-thousand")["PipelineName"] == "eight-thousand"


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


def test_every_response_has_its_own_request_id(service):
    sm = service.client("sagemaker")
    ids = {sm.list_pipelines()["ResponseMetadata"]["RequestId"] for _ in range(5)}
    with pytest.raises(ClientError) as err:
        sm.describe_pipeline(PipelineName="no-such-pipeline")
    ids.add(err.value.response["ResponseMetadata"]["RequestId"])
    assert len(ids) == 6 and all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids)


def test_s3_as_boto3s_transfer_manager_uses_it(service, tmp_path):
    """ListBuckets, HeadBucket; a 20 MB file uploaded in parts (multipart, as boto3 does over
    8 MB) and downloaded in ranges; DeleteObject; ranges served as S3 serves them."""
    from boto3.s3.transfer import TransferConfig

    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="transfers")
    assert "transfers" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="transfers")
    data = os.urandom(20 * 1024 * 1024 + 123)
    (tmp_path / "big.bin").write_bytes(data)
    parts = TransferConfig(multipart_threshold=8 * 1024 * 1024,
                           multipart_chunksize=8 * 1024 * 1024)
    s3.upload_file(str(tmp_path / "big.bin"), "transfers", "data/big.bin", Config=parts)
    head = s3.head_object(Bucket="transfers", Key="data/big.bin")
    assert head["ContentLength"] == len(data)
    s3.download_file("transfers", "data/big.bin", str(tmp_path / "back.bin"), Config=parts)
    assert (tmp_path / "back.bin").read_bytes() == data
    part = s3.get_object(Bucket="transfers", Key="data/big.bin", Range="bytes=100-199")
    assert part["ContentRange"] == f"bytes 100-199/{len(data)}" and \
        part["Body"].read() == data[100:200]
    assert s3.get_object(Bucket="transfers", Key="data/big.bin",
                         Range="bytes=-10")["Body"].read() == data[-10:]
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket="transfers", Key="data/big.bin", Range=f"bytes={len(data)}-")
    assert err.value.response["Error"]["Code"] == "InvalidRange"
    upload = s3.create_multipart_upload(Bucket="transfers", Key="aborted")["UploadId"]
    s3.abort_multipart_upload(Bucket="transfers", Key="aborted", UploadId=upload)
    with pytest.raises(ClientError):
        s3.upload_part(Bucket="transfers", Key="aborted", UploadId=upload, PartNumber=1,
                       Body=b"x")
    s3.delete_object(Bucket="transfers", Key="data/big.bin")
    assert "Contents" not in s3.list_objects_v2(Bucket="transfers")


def test_list_objects_v2_pages_with_max_keys_and_continuation_tokens(service):
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="paged")
    keys = [f"p/{i:03d}" for i in range(25)]
    for key in keys:
        s3.put_object(Bucket="paged", Key=key, Body=b"x")
    first = s3.list_objects_v2(Bucket="paged", Prefix="p/", MaxKeys=10)
    assert first["IsTruncated"] and first["KeyCount"] == 10 and first["MaxKeys"] == 10
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="paged", Prefix="p/", PaginationConfig={"PageSize": 7})
    seen = [[o["Key"] for o in page["Contents"]] for page in pages]
    assert [len(p) for p in seen] == [7, 7, 7, 4]
    assert sum(seen, []) == keys
    after = s3.list_objects_v2(Bucket="paged", StartAfter="p/020")
    assert [o["Key"] for o in after["Contents"]] == keys[21:]


def test_errors_as_aws_gives_them(service):
    sm = service.client("sagemaker")

    def error_of(call, **request):
        with pytest.raises(ClientError) as err:
            call(**request)
        return err.value.response["Error"]

    assert error_of(sm.describe_training_job, TrainingJobName="nope") == {
        "Code": "ValidationException", "Message": "Requested resource not found."}
    assert error_of(sm.describe_processing_job, ProcessingJobName="nope") == {
        "Code": "ValidationException", "Message": "Could not find requested job with name nope"}
    spec = {"Containers": [{"Image": "img"}], "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]}
    assert error_of(sm.create_model_package, ModelPackageGroupName="never-created",
                    InferenceSpecification=spec)["Message"] == \
        "Model Package Group never-created does not exist."
    assert sm.list_model_package_groups(NameContains="never-created")[
        "ModelPackageGroupSummaryList"] == []  # not created on the way
    sm.create_model_package_group(ModelPackageGroupName="errors-group")
    assert "cannot have it" in error_of(
        sm.create_model_package, ModelPackageGroupName="errors-group",
        ModelPackageName="named", InferenceSpecification=spec)["Message"]
    arn = sm.describe_model_package_group(ModelPackageGroupName="errors-group")[
        "ModelPackageGroupArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(45)])
    assert "at most 50 tags" in error_of(sm.add_tags, ResourceArn=arn, Tags=[
        {"Key": f"more{i}", "Value": "v"} for i in range(6)])["Message"]
    assert len(sm.list_tags(ResourceArn=arn)["Tags"]) == 45
    assert "Member must have length less than or equal to 50" in error_of(
        sm.add_tags, ResourceArn=arn, Tags=[{"Key": f"x{i}", "Value": "v"} for i in range(51)])[
        "Message"]


def test_unset_optional_members_are_omitted(service):
    sm = service.client("sagemaker")
    sm.create_pipeline(PipelineName="plain", RoleArn=ROLE, PipelineDefinition=json.dumps(
        {"Version": "2020-12-01", "Steps": [{"Name": "Gate", "Type": "Condition",
                                              "Arguments": {"Conditions": []}}]}))
    assert "PipelineDescription" not in sm.describe_pipeline(PipelineName="plain")
    arn = sm.start_pipeline_execution(PipelineName="plain")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=30) == "Succeeded"
    desc = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert "PipelineExecutionDescription" not in desc and "FailureReason" not in desc
    (step,) = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)[
        "PipelineExecutionSteps"]
    assert "StepDescription" not in step and "FailureReason" not in step
    sm.create_model_package_group(ModelPackageGroupName="plain-group")
    assert "ModelPackageGroupDescription" not in sm.describe_model_package_group(
        ModelPackageGroupName="plain-group")


def test_endpoint_configs_describe_back_what_they_were_created_with(service):
    sm = service.client("sagemaker")
    sm.create_model(ModelName="described", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "img", "ModelDataUrl": f"s3://{BUCKET}/nothing/model.tar.gz"})
    capture = {"EnableCapture": True, "InitialSamplingPercentage": 50,
               "DestinationS3Uri": "s3://capture/here",
               "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}
    sm.create_endpoint_config(
        EndpointConfigName="described", KmsKeyId="alias/mine", DataCaptureConfig=capture,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "described",
                             "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    desc = sm.describe_endpoint_config(EndpointConfigName="described")
    assert desc["KmsKeyId"] == "alias/mine" and desc["DataCaptureConfig"] == capture


def test_lists_sort_page_and_filter_as_each_operation_documents(service):
    sm = service.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="ordered")
    container = {"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/m/model.tar.gz"}
    spec = {"Containers": [container], "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]}
    for _ in range(3):
        sm.create_model_package(ModelPackageGroupName="ordered", InferenceSpecification=spec)
    versions = [p["ModelPackageVersion"] for p in sm.list_model_packages(
        ModelPackageGroupName="ordered")["ModelPackageSummaryList"]]
    assert versions == [1, 2, 3]  # ListModelPackages: "The default is Ascending."
    assert [p["ModelPackageVersion"] for p in sm.list_model_packages(
        ModelPackageGroupName="ordered", SortOrder="Descending")[
        "ModelPackageSummaryList"]] == [3, 2, 1]
    assert sm.list_model_packages(ModelPackageGroupName="ordered",
                                  ModelPackageType="Unversioned")["ModelPackageSummaryList"] == []

    sm.create_model(ModelName="paged", ExecutionRoleArn=ROLE, PrimaryContainer=container)
    sm.create_endpoint_config(EndpointConfigName="paged", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "paged", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    before = sm.list_endpoints()["Endpoints"]
    for n in range(12 - len(before)):  # their model data does not exist: they end Failed
        sm.create_endpoint(EndpointName=f"paged-{n}", EndpointConfigName="paged")
    page = sm.list_endpoints(NameContains="paged")
    assert len(page["Endpoints"]) == 10 and "NextToken" in page  # "defaults to 10"
    rest = sm.list_endpoints(NameContains="paged", NextToken=page["NextToken"])["Endpoints"]
    names = [e["EndpointName"] for e in page["Endpoints"] + rest]
    assert len(names) == len(set(names)) == 12 - len(before)
    created = [e["CreationTime"] for e in page["Endpoints"]]
    assert created == sorted(created, reverse=True)  # ListEndpoints: Descending by default
    middle = page["Endpoints"][5]["CreationTime"]
    newer = sm.list_endpoints(NameContains="paged", CreationTimeAfter=middle,
                              MaxResults=100)["Endpoints"]
    assert {e["EndpointName"] for e in newer} == {e["EndpointName"]
                                                   for e in page["Endpoints"][:5]}

    pipelines = sm.list_pipelines(MaxResults=100)["PipelineSummaries"]
    if pipelines:
        oldest = min(p["CreationTime"] for p in pipelines)
        assert sm.list_pipelines(CreatedBefore=oldest)["PipelineSummaries"] == []
        assert len(sm.list_pipelines(CreatedAfter=oldest, MaxResults=100)[
            "PipelineSummaries"]) == len(pipelines) - 1
    assert sm.list_training_jobs(WarmPoolStatusEquals="Available")["TrainingJobSummaries"] == []


def test_model_package_updates_merge_metadata_and_add_inference_specifications(service):
    sm = service.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="updated")
    assert sm.describe_model_package_group(ModelPackageGroupName="updated")["CreatedBy"] == {}
    container = {"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/m/model.tar.gz"}
    spec = {"Containers": [container], "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]}
    arn = sm.create_model_package(ModelPackageGroupName="updated", InferenceSpecification=spec,
                                  CustomerMetadataProperties={"a": "1", "b": "2"})[
        "ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, CustomerMetadataProperties={"c": "3"},
                            CustomerMetadataPropertiesToRemove=["a"],
                            AdditionalInferenceSpecificationsToAdd=[
                                {"Name": "compiled", "Containers": [container]}])
    desc = sm.describe_model_package(ModelPackageName=arn)
    assert desc["CustomerMetadataProperties"] == {"b": "2", "c": "3"}
    assert [s["Name"] for s in desc["AdditionalInferenceSpecifications"]] == ["compiled"]
    sm.update_model_package(ModelPackageArn=arn, AdditionalInferenceSpecificationsToAdd=[
        {"Name": f"more-{n}", "Containers": [container]} for n in range(14)])  # 15: the limit
    with pytest.raises(ClientError) as err:
        sm.update_model_package(ModelPackageArn=arn, AdditionalInferenceSpecificationsToAdd=[
            {"Name": "one-more", "Containers": [container]}])
    assert "can not exceed 15 (this would make 16)" in err.value.response["Error"]["Message"]


def test_a_list_filter_the_service_cannot_apply_is_refused_not_ignored(service):
    sm = service.client("sagemaker")
    sm.create_pipeline(PipelineName="aliased", RoleArn=ROLE, PipelineDefinition=json.dumps(
        {"Version": "2020-12-01", "Steps": [{"Name": "Gate", "Type": "Condition",
                                              "Arguments": {"Conditions": []}}]}))
    with pytest.raises(ClientError) as err:
        sm.list_pipeline_executions(PipelineName="aliased", PipelineVersionAlias="x")
    assert "pipeline_version_alias is not supported by the local service's " \
        "ListPipelineExecutions" in err.value.response["Error"]["Message"]


def test_unversioned_model_packages(service):
    """CreateModelPackage with a ModelPackageName and no group: described by name, listed by
    default (AWS's default ModelPackageType is Unversioned) and not among a group's versions;
    approval does not apply; the run browser shows it."""
    sm = service.client("sagemaker")
    spec = {"Containers": [{"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/m/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]}
    arn = sm.create_model_package(ModelPackageName="standalone", InferenceSpecification=spec,
                                  ModelPackageDescription="not in a group")["ModelPackageArn"]
    assert arn.endswith(":model-package/standalone")
    desc = sm.describe_model_package(ModelPackageName="standalone")
    assert desc["ModelPackageArn"] == arn and "ModelApprovalStatus" not in desc
    assert "ModelPackageGroupName" not in desc and "ModelPackageVersion" not in desc
    listed = [p["ModelPackageArn"] for p in sm.list_model_packages()["ModelPackageSummaryList"]]
    assert arn in listed
    assert all(":model-package/standalone" in a or a.count("/") == 1 for a in listed)
    assert arn not in [p["ModelPackageArn"] for p in sm.list_model_packages(
        ModelPackageType="Versioned")["ModelPackageSummaryList"]]
    with pytest.raises(ClientError) as err:
        sm.create_model_package(ModelPackageName="standalone", InferenceSpecification=spec)
    assert "already exists" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    assert "does not apply to unversioned" in err.value.response["Error"]["Message"]
    with urllib.request.urlopen(service.url + "/packages/standalone") as page:
        html = page.read().decode()
    assert "Model package standalone" in html and "not in a group" in html
    assert 'id="approve"' not in html
    with urllib.request.urlopen(service.url + "/packages") as page:
        assert "/packages/standalone" in page.read().decode()
    sm.delete_model_package(ModelPackageName="standalone")
    with pytest.raises(ClientError):
        sm.describe_model_package(ModelPackageName="standalone")


def test_a_pipeline_definition_can_come_from_s3(service):
    """PipelineDefinitionS3Location, as the SDK sends definitions too large for the request."""
    sm = service.client("sagemaker")
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="definitions")
    first = {"Version": "2020-12-01", "Steps": [{"Name": "Gate", "Type": "Condition",
                                                 "Arguments": {"Conditions": []}}]}
    second = {**first, "Parameters": [{"Name": "Epochs", "Type": "Integer", "DefaultValue": 3}]}
    s3.put_object(Bucket="definitions", Key="p/one.json", Body=json.dumps(first).encode())
    s3.put_object(Bucket="definitions", Key="p/two.json", Body=json.dumps(second).encode())
    sm.create_pipeline(PipelineName="from-s3", RoleArn=ROLE, PipelineDefinitionS3Location={
        "Bucket": "definitions", "ObjectKey": "p/one.json"})
    assert json.loads(sm.describe_pipeline(PipelineName="from-s3")["PipelineDefinition"]) == first
    sm.update_pipeline(PipelineName="from-s3", PipelineDefinitionS3Location={
        "Bucket": "definitions", "ObjectKey": "p/two.json"})
    assert json.loads(sm.describe_pipeline(PipelineName="from-s3")["PipelineDefinition"]) == \
        second
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="from-nowhere", RoleArn=ROLE,
                           PipelineDefinitionS3Location={"Bucket": "definitions",
                                                         "ObjectKey": "p/missing.json"})
    assert "s3://definitions/p/missing.json does not exist" in str(err.value)
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="from-both", RoleArn=ROLE,
                           PipelineDefinition=json.dumps(first), PipelineDefinitionS3Location={
                               "Bucket": "definitions", "ObjectKey": "p/one.json"})
    assert "not both" in str(err.value)


def test_a_request_that_stalls_half_way_gets_a_408(tmp_path):
    """The service's read timeout: headers or a body that stop arriving are refused after that
    many seconds without a byte (408, connection closed)."""
    from pipeline.local.server import LocalSageMaker

    service = LocalSageMaker(str(tmp_path / "home"), read_timeout=1.0).start_background()
    try:
        for partial in (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Tar",
                        b"PUT /bucket/key HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100"
                        b"\r\n\r\nfirst bytes"):
            answer = _raw(service.url, partial)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b"nothing arrived for 1 s" in answer
        assert urllib.request.urlopen(service.url + "/ping").status == 200
    finally:
        service.close()


def test_a_service_serves_its_homes_region_and_its_arns_name_it(tmp_path, capsys):
    """As a regional endpoint: ARNs carry the region requests are signed for; a request signed
    for another region is AWS's InvalidSignatureException; the home keeps its region."""
    from pipeline import cli

    home = str(tmp_path / "eu-home")
    svc = ServiceProcess(home)
    svc.proc, info = launcher.spawn(home, region="eu-west-1")
    svc.url = info["url"]
    try:
        assert info["region"] == "eu-west-1"
        eu = boto3.client("sagemaker", endpoint_url=svc.url, region_name="eu-west-1",
                          aws_access_key_id="local", aws_secret_access_key="local")
        arn = eu.create_model_package_group(ModelPackageGroupName="regional")[
            "ModelPackageGroupArn"]
        assert arn.startswith("arn:aws:sagemaker:eu-west-1:")
        assert eu.describe_model_package_group(ModelPackageGroupName="regional")[
            "ModelPackageGroupArn"] == arn
        with pytest.raises(ClientError) as err:
            svc.client("sagemaker").list_model_package_groups()  # signed for us-east-1
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert err.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert "Credential should be scoped to a valid region, not 'us-east-1'" in \
            err.value.response["Error"]["Message"]
        assert svc.client("s3").list_buckets()["Buckets"] == []  # S3 takes any region
        # the CLI talks to it in its region, and refuses to mix another in
        base = ["--local", "--local-home", home]
        assert cli.main(base + ["--model-package-group", "regional", "approve", "latest"]) == 2
        assert "no model packages in group regional" in capsys.readouterr().err
        assert cli.main(base + ["--region", "us-east-1", "executions"]) == 2
        assert "serves eu-west-1, not us-east-1" in capsys.readouterr().err
    finally:
        svc.stop()
    with pytest.raises(ValueError, match="keeps resources of eu-west-1, not us-east-1"):
        launcher.spawn(home, region="us-east-1")
    with pytest.raises(ValueError, match="'../eu' is not a region name"):
        launcher.spawn(str(tmp_path / "other-home"), region="../eu")
    svc.proc, info = launcher.spawn(home)  # the home's own region again
    try:
        assert info["region"] == "eu-west-1"
    finally:
        svc.stop()
