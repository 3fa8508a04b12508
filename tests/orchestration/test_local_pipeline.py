"""The whole pipeline on the local service, for real, on the shipped full MNIST, through boto3."""
import json
import os
import re
import shutil
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from conftest import ROOT
from localservice import steps_of, wait_for
from pipeline.definition import SDK_CONFIG
from pipeline.packaging import TRAINING_SOURCE
from pipelinehelpers import (BUCKET, CHROMIUM_ARGS, EPOCHS, MNIST, _package_of, idx, read_s3_json,
                             start)
pytestmark = pytest.mark.slow


def test_default_parameters_succeed_register_and_deploy(clients, default_run, service):
    sm, s3, runtime = clients
    arn, status = default_run
    steps = steps_of(sm, arn)
    assert status == "Succeeded", {n: s.get("FailureReason") for n, s in steps.items()}
    assert set(steps) == {"PrepareData", "TrainModel", "EvaluateModel", "CheckAccuracy",
                          "Register-RegisterModel", "CheckApproval", "DeployModel", "Cleanup"}
    assert all(s["StepStatus"] == "Succeeded" for s in steps.values())
    assert steps["CheckAccuracy"]["Metadata"]["Condition"]["Outcome"] == "True"
    # Registering fired the package state-change event (as on AWS): the approval rule started
    # the deploy pipeline, which left the package, registered Approved, to this run.
    (event_run,) = sm.list_pipeline_executions(PipelineName="mnist-mxnet-deploy")[
        "PipelineExecutionSummaries"]
    assert wait_for(sm, event_run["PipelineExecutionArn"]) == "Succeeded"
    job = steps_of(sm, event_run["PipelineExecutionArn"])["DeployModel"]["Metadata"][
        "ProcessingJob"]["Arn"].split("/")[-1]
    with open(os.path.join(service.home, "logs", f"{job}.log")) as handle:
        assert "was registered Approved and the pipeline run that registered it is still " \
            "running: it deploys it; nothing to do" in handle.read()

    training = sm.describe_training_job(
        TrainingJobName=steps["TrainModel"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1])
    metrics = {m["MetricName"]: m["Value"] for m in training["FinalMetricDataList"]}
    assert metrics["validation_accuracy"] > 0.97

    package_arn = steps["Register-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"]
    package = sm.describe_model_package(ModelPackageName=package_arn)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == \
        training["ModelArtifacts"]["S3ModelArtifacts"]
    evaluation = read_s3_json(s3, package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"])
    assert evaluation["multiclass_classification_metrics"]["accuracy"]["value"] >= 0.97

    endpoint = sm.describe_endpoint(EndpointName="mnist-mlp")
    assert endpoint["EndpointStatus"] == "InService"
    images, labels = idx("t10k-images-idx3-ubyte")[-200:], idx("t10k-labels-idx1-ubyte")[-200:]
    response = runtime.invoke_endpoint(EndpointName="mnist-mlp", ContentType="application/json",
                                       Body=json.dumps(images.reshape(200, 784).tolist()))
    digits = [p["digit"] for p in json.loads(response["Body"].read())["predictions"]]
    assert np.mean(np.array(digits) == labels) >= 0.97


def test_a_threshold_too_high_fails_at_the_gate_and_changes_nothing(clients, default_run,
                                                                    service, capsys):
    """Through `start --wait`, which exits 1 for a failed execution."""
    from pipeline import cli

    sm, _, _ = clients
    packages = sm.list_model_packages(ModelPackageGroupName="mnist-mxnet-models")[
        "ModelPackageSummaryList"]
    before = sm.describe_endpoint(EndpointName="mnist-mlp")
    assert cli.main(["--local", "--endpoint-url", service.url, "--local-home", service.home,
                     "start", "--wait", "--no-upsert", "--poll-seconds", "0.2",
                     "--param", "AccuracyThreshold=0.999", "--param", "Epochs=2"]) == 1
    out = capsys.readouterr().out
    arn = out.split("started ")[1].split()[0]
    assert "execution Failed after" in out and "reason: Test accuracy 0.9" in out
    steps = steps_of(sm, arn)
    reason = sm.describe_pipeline_execution(PipelineExecutionArn=arn)["FailureReason"]
    assert reason.startswith("Test accuracy 0.9") and "is below AccuracyThreshold 0.999" in reason
    assert steps["AccuracyTooLow"]["StepStatus"] == "Failed"
    assert steps["AccuracyTooLow"]["FailureReason"] == reason
    assert steps["CheckAccuracy"]["Metadata"]["Condition"]["Outcome"] == "False"
    assert not {"Register-RegisterModel", "DeployModel", "Cleanup"} & set(steps)
    assert sm.list_model_packages(ModelPackageGroupName="mnist-mxnet-models")[
        "ModelPackageSummaryList"] == packages
    after = sm.describe_endpoint(EndpointName="mnist-mlp")
    assert after["EndpointConfigName"] == before["EndpointConfigName"]
    assert after["LastModifiedTime"] == before["LastModifiedTime"]
    assert len(sm.list_endpoints()["Endpoints"]) == 1


def test_job_logs_and_parameters_are_kept(clients, default_run, service):
    sm, _, _ = clients
    arn, _ = default_run
    params = {p["Name"]: p["Value"] for p in sm.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=arn)["PipelineParameters"]}
    assert params["Epochs"] == "7" and params["KeepEndpoint"] == "true"
    job = steps_of(sm, arn)["TrainModel"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1]
    with open(os.path.join(service.home, "logs", f"{job}.log")) as handle:
        log = handle.read()
    assert log.count("validation_accuracy=") == EPOCHS


def test_drawing_pad_in_headless_chromium_shows_the_endpoints_prediction(service, default_run):
    from playwright.sync_api import sync_playwright

    artifacts = os.path.join(ROOT, "test-artifacts")
    os.makedirs(artifacts, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 600})
        page.goto(f"{service.url}/draw/mnist-mlp")
        box = page.locator("#pad").bounding_box()
        with page.expect_response(lambda r: "/invocations" in r.url) as response_info:
            # a "7": a top bar, then a diagonal down to the left
            page.mouse.move(box["x"] + 0.25 * box["width"], box["y"] + 0.22 * box["height"])
            page.mouse.down()
            for i in range(1, 11):
                page.mouse.move(box["x"] + (0.25 + 0.05 * i) * box["width"],
                                box["y"] + 0.22 * box["height"])
            for i in range(1, 16):
                page.mouse.move(box["x"] + (0.75 - 0.022 * i) * box["width"],
                                box["y"] + (0.22 + 0.04 * i) * box["height"])
            page.mouse.up()
        answer = response_info.value.json()["predictions"][0]
        page.wait_for_function("document.getElementById('digit').textContent !== ''")
        page.wait_for_function("pending === null && !inFlight")  # the last request answered
        shown = page.locator("#digit").inner_text()
        final = json.loads(service.client("sagemaker-runtime").invoke_endpoint(
            EndpointName="mnist-mlp", ContentType="application/json",
            Body=page.evaluate("JSON.stringify({instances: [Array.from({length: 28}, (_, y) => "
                               "Array.from(pixels.slice(y * 28, y * 28 + 28), "
                               "v => Math.round(v * 1000) / 1000))]})"))["Body"].read())
        assert shown == str(final["predictions"][0]["digit"])
        assert shown == "7", answer
        assert page.locator("#bars .bar").count() == 10
        page.screenshot(path=os.path.join(artifacts, "drawpad.png"))
        page.click("#clear")
        assert page.locator("#digit").inner_text() == ""
        browser.close()


def test_aws_drawing_pad_proxy_forwards_only_its_endpoint(service, default_run):
    import threading
    import urllib.error
    import urllib.request

    from pipeline.drawpad.proxy import make_server

    server = make_server(service.client("sagemaker-runtime"), "mnist-mlp")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert b"drawing pad" in urllib.request.urlopen(base + "/").read()
        request = urllib.request.Request(base + "/endpoints/mnist-mlp/invocations",
                                         data=json.dumps([[0.0] * 784]).encode(),
                                         headers={"Content-Type": "application/json"})
        assert len(json.loads(urllib.request.urlopen(request).read())["predictions"]) == 1
        bad = urllib.request.Request(base + "/endpoints/mnist-mlp/invocations", data=b"[1,2]",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad)
        assert err.value.code == 424 and "cannot read shape [2]" in json.loads(
            err.value.read())["message"]
        other = urllib.request.Request(base + "/endpoints/other/invocations", data=b"[]")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(other)
        assert err.value.code == 404
    finally:
        server.shutdown()


def test_predict_command_reads_pictures_and_arrays(service, default_run, tmp_path, capsys):
    from PIL import Image

    from pipeline import cli

    images, labels = idx("t10k-images-idx3-ubyte")[:3], idx("t10k-labels-idx1-ubyte")[:3]
    files = []
    for n, (image, fmt) in enumerate(zip(images, ("png", "jpg"))):
        path = tmp_path / f"digit{n}.{fmt}"
        Image.fromarray(255 - image).resize((200, 200)).convert("RGB").save(path)
        files.append(str(path))
    np.save(tmp_path / "batch.npy", images)
    files.append(str(tmp_path / "batch.npy"))
    base = ["--local", "--endpoint-url", service.url]
    assert cli.main(base + ["predict", "--endpoint", "mnist-mlp"] + files) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split()[0] for line in lines] == \
        [str(labels[0]), str(labels[1])] + [str(d) for d in labels]
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    assert cli.main(base + ["predict", "--endpoint", "mnist-mlp",
                            str(tmp_path / "blank.png")]) == 2
    assert "the picture is blank" in capsys.readouterr().err
    assert cli.main(base + ["predict", "--endpoint", "mnist-mlp", str(tmp_path / "x.gif")]) == 2
    assert "unsupported file type" in capsys.readouterr().err
    assert cli.main(base + ["predict", "--endpoint", "mnist-mlp", "/nonexistent.png"]) == 2


def test_job_logs_through_the_cloudwatch_logs_api(service, default_run, monkeypatch, capsys):
    """The CloudWatch Logs subset: the streams SageMaker names, events page by page, a filter;
    and the SageMaker SDK's own log reader (`logs_for_job`) pointed at the service."""
    arn, _ = default_run
    sm, logs = service.client("sagemaker"), service.client("logs")
    job = steps_of(sm, arn)["TrainModel"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1]
    (stream,) = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                          logStreamNamePrefix=f"{job}/")["logStreams"]
    assert re.fullmatch(rf"{job}/algo-1-\d+", stream["logStreamName"])
    messages, token = [], None
    while True:
        page = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                   logStreamName=stream["logStreamName"], startFromHead=True,
                                   limit=7, **({"nextToken": token} if token else {}))
        messages += [e["message"] for e in page["events"]]
        if page["nextForwardToken"] == token:
            break
        token = page["nextForwardToken"]
    assert sum(m.startswith("epoch=") for m in messages) == EPOCHS
    found = logs.filter_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                   logStreamNamePrefix=job, filterPattern="validation_accuracy")
    assert len(found["events"]) == EPOCHS
    with pytest.raises(Exception) as err:
        logs.describe_log_streams(logGroupName="/aws/sagemaker/Nope")
    assert "ResourceNotFoundException" in str(err.value)

    import boto3
    import sagemaker

    for name in ("SAGEMAKER", "CLOUDWATCH_LOGS", "S3", "STS"):  # as botocore names them
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{name}", service.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"),
                                default_bucket=BUCKET)
    session.logs_for_job(job, wait=False)
    printed = capsys.readouterr().out
    assert printed.count("epoch=") == EPOCHS and "model saved to" in printed


def test_search_finds_training_jobs_and_packages_by_their_properties(clients, default_run):
    """SageMaker's Search over what a run left: its training job by a nested filter on its
    final metrics, its model package by lineage metadata, with And / Or sub-expressions."""
    sm, _, _ = clients
    arn, _ = default_run
    steps = steps_of(sm, arn)
    job = steps["TrainModel"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1]
    found = sm.search(Resource="TrainingJob", SearchExpression={
        "Filters": [{"Name": "TrainingJobName", "Operator": "Equals", "Value": job}],
        "NestedFilters": [{"NestedPropertyName": "FinalMetricDataList", "Filters": [
            {"Name": "FinalMetricDataList.MetricName", "Operator": "Equals",
             "Value": "validation_accuracy"},
            {"Name": "FinalMetricDataList.Value", "Operator": "GreaterThan", "Value": "0.97"}]}]})
    (record,) = found["Results"]
    assert record["TrainingJob"]["TrainingJobStatus"] == "Completed"
    assert record["TrainingJob"]["HyperParameters"]
    assert sm.search(Resource="TrainingJob", SearchExpression={
        "Filters": [{"Name": "TrainingJobName", "Operator": "Equals", "Value": job}],
        "NestedFilters": [{"NestedPropertyName": "FinalMetricDataList", "Filters": [
            {"Name": "FinalMetricDataList.Value", "Operator": "GreaterThan",
             "Value": "1.5"}]}]})["Results"] == []

    package = _package_of(sm, arn)
    by_lineage = sm.search(Resource="ModelPackage", SearchExpression={"Filters": [
        {"Name": "CustomerMetadataProperties.PipelineExecutionArn", "Operator": "Equals",
         "Value": arn}]})["Results"]
    assert [r["ModelPackage"]["ModelPackageArn"] for r in by_lineage] == [package]
    either = sm.search(Resource="ModelPackage", SearchExpression={"Operator": "Or",
        "SubExpressions": [
            {"Filters": [{"Name": "ModelPackageArn", "Operator": "Equals", "Value": package}]},
            {"Filters": [{"Name": "ModelApprovalStatus", "Operator": "Equals",
                          "Value": "Rejected"}]}]}, SortBy="CreationTime",
        SortOrder="Ascending", MaxResults=100)["Results"]
    assert package in [r["ModelPackage"]["ModelPackageArn"] for r in either]
    assert all(r["ModelPackage"]["ModelPackageArn"] == package
               or r["ModelPackage"]["ModelApprovalStatus"] == "Rejected" for r in either)
    with pytest.raises(ClientError) as err:
        sm.search(Resource="FeatureGroup")
    assert "not supported by the local service" in err.value.response["Error"]["Message"]


def test_cached_steps_reuse_an_identical_earlier_run_and_any_change_reruns(clients, default_run):
    """CacheConfig as Pipelines applies it: the same data and training arguments reuse the
    earlier execution's PrepareData and TrainModel (no new jobs; CacheHitResult names it; later
    steps read its outputs); more epochs rerun training only."""
    sm, _, runtime = clients
    first, _ = default_run
    jobs_before = len(sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"])
    again = start(sm)
    assert wait_for(sm, again) == "Succeeded"
    summaries = {s["StepName"]: s for s in sm.list_pipeline_execution_steps(
        PipelineExecutionArn=again)["PipelineExecutionSteps"]}
    first_steps = steps_of(sm, first)
    for name in ("PrepareData", "TrainModel"):  # the execution that ran the job is named
        ran = first_steps[name].get("CacheHitResult", {}).get("SourcePipelineExecutionArn",
                                                             first)
        assert summaries[name]["CacheHitResult"] == {"SourcePipelineExecutionArn": ran}
        assert summaries[name]["Metadata"] == first_steps[name]["Metadata"]  # the same job
    assert "CacheHitResult" not in summaries["EvaluateModel"]
    assert len(sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]) == jobs_before
    package = sm.describe_model_package(ModelPackageName=_package_of(sm, again))
    assert package["CustomerMetadataProperties"]["TrainingJobName"] == \
        first_steps["TrainModel"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1]

    changed = start(sm, Epochs=3, AccuracyThreshold=0.9)
    assert wait_for(sm, changed) == "Succeeded"
    summaries = {s["StepName"]: s for s in sm.list_pipeline_execution_steps(
        PipelineExecutionArn=changed)["PipelineExecutionSteps"]}
    assert "CacheHitResult" in summaries["PrepareData"]
    assert "CacheHitResult" not in summaries["TrainModel"]  # HyperParameters changed
    assert len(sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]) == jobs_before + 1


def test_a_selective_execution_runs_only_the_selected_steps(clients, default_run):
    """SelectiveExecutionConfig: EvaluateModel alone, again; what it needs (PrepareData,
    TrainModel) comes from the source execution, the steps after it are not run."""
    sm, _, _ = clients
    source, _ = default_run
    config = {"SourcePipelineExecutionArn": source, "SelectedSteps": [
        {"StepName": "EvaluateModel"}]}
    arn = sm.start_pipeline_execution(
        PipelineName="mnist-mxnet", SelectiveExecutionConfig=config,
        PipelineParameters=[{"Name": "MnistSourceUri", "Value": MNIST}])["PipelineExecutionArn"]
    assert wait_for(sm, arn) == "Succeeded"
    assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
        "SelectiveExecutionConfig"] == config
    steps = {s["StepName"]: s for s in sm.list_pipeline_execution_steps(
        PipelineExecutionArn=arn)["PipelineExecutionSteps"]}
    assert set(steps) == {"PrepareData", "TrainModel", "EvaluateModel"}
    earlier = steps_of(sm, source)
    for name in ("PrepareData", "TrainModel"):
        assert steps[name]["SelectiveExecutionResult"] == {"SourcePipelineExecutionArn": source}
        assert steps[name]["Metadata"] == earlier[name]["Metadata"]
    assert "SelectiveExecutionResult" not in steps["EvaluateModel"]
    assert steps["EvaluateModel"]["Metadata"]["ProcessingJob"]["Arn"] != \
        earlier["EvaluateModel"]["Metadata"]["ProcessingJob"]["Arn"]  # it ran again
    with pytest.raises(ClientError) as err:
        sm.start_pipeline_execution(PipelineName="mnist-mxnet", SelectiveExecutionConfig={
            "SourcePipelineExecutionArn": source, "SelectedSteps": [{"StepName": "Nope"}]})
    assert "Selected steps not in the pipeline: Nope" in str(err.value)


@pytest.fixture
def lab(service, clients, default_run, monkeypatch, tmp_path):
    """The AWS lab's notebook setting with the unchanged SageMaker SDK, only endpoint URLs set:
    (its session, the data a run prepared by output name, a role, the training source folder
    as the pipeline packs it: the script, the handlers it ships in the model, the job side's
    helper)."""
    import boto3
    import sagemaker

    for variable in ("S3", "CLOUDWATCH_LOGS", "SAGEMAKER", "SAGEMAKER_RUNTIME"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{variable}", service.url)
    sm, _, runtime = clients
    arn, _ = default_run
    prepare = sm.describe_processing_job(ProcessingJobName=steps_of(sm, arn)["PrepareData"][
        "Metadata"]["ProcessingJob"]["Arn"].split("/")[-1])
    data = {o["OutputName"]: o["S3Output"]["S3Uri"]
            for o in prepare["ProcessingOutputConfig"]["Outputs"]}
    session = sagemaker.Session(
        boto_session=boto3.Session(region_name="us-east-1", aws_access_key_id="local",
                                   aws_secret_access_key="local"),
        sagemaker_client=sm, sagemaker_runtime_client=runtime, default_bucket=BUCKET,
        sagemaker_config=SDK_CONFIG)  # no telemetry: tests never reach the network
    source = tmp_path / "source"
    source.mkdir()
    for name, path in TRAINING_SOURCE:
        shutil.copy(os.path.join(ROOT, path), source / name)
    return session, data, "arn:aws:iam::000000000000:role/lab", source


def test_the_sdks_own_estimator_trains_deploys_and_predicts(clients, lab):
    """MXNet(...).fit(logs=True) on the data a run prepared, deploy(), predict() on real test
    digits, delete_endpoint(): standalone CreateTrainingJob under the container contract the
    pipeline steps get."""
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.mxnet import MXNet
    from sagemaker.serializers import JSONSerializer

    sm = clients[0]
    session, data, role, source = lab
    estimator = MXNet(entry_point="train.py", source_dir=str(source),
                      role=role, framework_version="1.9.0", py_version="py38",
                      instance_count=1, instance_type="ml.m5.large",
                      hyperparameters={"epochs": 2}, sagemaker_session=session,
                      output_path=f"s3://{BUCKET}/lab/output", metric_definitions=[
                          {"Name": "validation_accuracy",
                           "Regex": "validation_accuracy=([0-9.]+)"}])
    estimator.fit({"train": data["train"], "validation": data["validation"]}, logs=True)
    job = sm.describe_training_job(TrainingJobName=estimator.latest_training_job.name)
    assert job["TrainingJobStatus"] == "Completed"
    assert job["ModelArtifacts"]["S3ModelArtifacts"].startswith(f"s3://{BUCKET}/lab/output/")
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert metrics["validation_accuracy"] > 0.9

    predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                 endpoint_name="lab-endpoint", entry_point="inference.py",
                                 source_dir=os.path.join(ROOT, "src", "inference"),
                                 serializer=JSONSerializer(), deserializer=JSONDeserializer())
    images, labels = idx("t10k-images-idx3-ubyte")[:20], idx("t10k-labels-idx1-ubyte")[:20]
    answer = predictor.predict(images.tolist())
    digits = [p["digit"] for p in answer["predictions"]]
    assert sum(d == int(label) for d, label in zip(digits, labels)) >= 17
    predictor.delete_endpoint()
    with pytest.raises(ClientError):
        sm.describe_endpoint(EndpointName="lab-endpoint")


def test_the_sdks_own_script_processor_runs(clients, lab, tmp_path):
    """ScriptProcessor.run: standalone CreateProcessingJob, its input and output mapped."""
    import sagemaker
    from sagemaker.processing import ProcessingInput, ProcessingOutput, ScriptProcessor

    session, data, role, _ = lab
    script = tmp_path / "count.py"
    # /opt/ml paths reach a script as arguments (the local contract maps those, not literals)
    script.write_text("import os, sys\n"
                      "source, target = sys.argv[1:3]\n"
                      "names = sorted(os.listdir(source))\n"
                      "open(os.path.join(target, 'listing.txt'), 'w').write(','.join(names))\n"
                      "print('listed', len(names), 'files')\n")
    processor = ScriptProcessor(image_uri=sagemaker.image_uris.retrieve(
        "mxnet", "us-east-1", version="1.9.0", py_version="py38", instance_type="ml.m5.large",
        image_scope="training"), command=["python3"], role=role, instance_count=1,
        instance_type="ml.m5.large", sagemaker_session=session)
    processor.run(code=str(script), inputs=[ProcessingInput(
        source=data["train"], destination="/opt/ml/processing/input/data")],
        outputs=[ProcessingOutput(source="/opt/ml/processing/output",
                                  destination=f"s3://{BUCKET}/lab/listing")],
        arguments=["/opt/ml/processing/input/data", "/opt/ml/processing/output"], logs=True)
    described = processor.jobs[-1].describe()
    assert described["ProcessingJobStatus"] == "Completed"
    listing = clients[1].get_object(Bucket=BUCKET, Key="lab/listing/listing.txt")["Body"].read()
    assert listing == b"train.npz"


def test_a_standalone_training_job_is_unique_by_name_and_stops(clients, lab):
    """A job started without waiting runs, its name is taken while it does, and a stop ends it
    Stopped (it stays listed)."""
    from sagemaker.mxnet import MXNet

    sm = clients[0]
    session, data, role, source = lab
    long = MXNet(entry_point="train.py", source_dir=str(source), role=role,
                 framework_version="1.9.0", py_version="py38", instance_count=1,
                 instance_type="ml.m5.large", hyperparameters={"epochs": 200},
                 sagemaker_session=session, output_path=f"s3://{BUCKET}/lab/output")
    long.fit({"train": data["train"], "validation": data["validation"]}, wait=False)
    name = long.latest_training_job.name
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"
    with pytest.raises(ClientError) as err:  # names are unique
        sm.create_training_job(**{k: v for k, v in sm.describe_training_job(
            TrainingJobName=name).items() if k in ("TrainingJobName", "AlgorithmSpecification",
                                                   "RoleArn", "OutputDataConfig",
                                                   "ResourceConfig", "StoppingCondition")})
    assert err.value.response["Error"]["Code"] == "ResourceInUse"
    sm.stop_training_job(TrainingJobName=name)
    deadline = time.time() + 60
    while sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] != "Stopped":
        assert time.time() < deadline
        time.sleep(0.5)
    assert name in [j["TrainingJobName"] for j in sm.list_training_jobs(
        NameContains=name)["TrainingJobSummaries"]]
