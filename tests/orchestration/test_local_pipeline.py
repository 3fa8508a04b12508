"""The whole pipeline on the local service, for real, on the shipped full MNIST, through boto3."""
import gzip
import json
import os

import numpy as np
import pytest

from conftest import ROOT
from localservice import ServiceProcess, steps_of, wait_for
from pipeline.aws import Clients, install_pipeline
from pipeline.definition import PipelineConfig

BUCKET = "sagemaker-local"
MNIST = os.path.join(ROOT, "data", "mnist")
pytestmark = pytest.mark.slow


def idx(name):
    with gzip.open(os.path.join(MNIST, f"{name}.gz")) as handle:
        raw = handle.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = ServiceProcess(tmp_path_factory.mktemp("local-sagemaker")).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def clients(service):
    install_pipeline(Clients.create(endpoint_url=service.url, local=True),
                     PipelineConfig(bucket=BUCKET), local=True)
    return service.client("sagemaker"), service.client("s3"), service.client("sagemaker-runtime")


def start(sm, **params):
    params.setdefault("MnistSourceUri", MNIST)
    return sm.start_pipeline_execution(
        PipelineName="mnist-mxnet",
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in params.items()],
    )["PipelineExecutionArn"]


def read_s3_json(s3, uri):
    bucket, _, key = uri[5:].partition("/")
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture(scope="module")
def default_run(clients):
    sm, _, _ = clients
    arn = start(sm)
    return arn, wait_for(sm, arn)


def test_default_parameters_succeed_register_and_deploy(clients, default_run):
    sm, s3, runtime = clients
    arn, status = default_run
    steps = steps_of(sm, arn)
    assert status == "Succeeded", {n: s.get("FailureReason") for n, s in steps.items()}
    assert set(steps) == {"PrepareData", "TrainModel", "EvaluateModel", "CheckAccuracy",
                          "Register-RegisterModel", "DeployModel", "Cleanup"}
    assert all(s["StepStatus"] == "Succeeded" for s in steps.values())
    assert steps["CheckAccuracy"]["Metadata"]["Condition"]["Outcome"] == "True"

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
    assert evaluation["metrics"]["accuracy"]["value"] >= 0.97

    endpoint = sm.describe_endpoint(EndpointName="mnist-mlp")
    assert endpoint["EndpointStatus"] == "InService"
    images, labels = idx("t10k-images-idx3-ubyte")[-200:], idx("t10k-labels-idx1-ubyte")[-200:]
    response = runtime.invoke_endpoint(EndpointName="mnist-mlp", ContentType="application/json",
                                       Body=json.dumps(images.reshape(200, 784).tolist()))
    digits = [p["digit"] for p in json.loads(response["Body"].read())["predictions"]]
    assert np.mean(np.array(digits) == labels) >= 0.97


def test_a_threshold_too_high_fails_at_the_gate_and_changes_nothing(clients, default_run):
    sm, _, _ = clients
    packages = sm.list_model_packages(ModelPackageGroupName="mnist-mxnet-models")[
        "ModelPackageSummaryList"]
    before = sm.describe_endpoint(EndpointName="mnist-mlp")
    arn = start(sm, AccuracyThreshold=0.999, Epochs=2)
    assert wait_for(sm, arn) == "Failed"
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
    assert params["Epochs"] == "20" and params["KeepEndpoint"] == "true"
    job = steps_of(sm, arn)["TrainModel"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1]
    with open(os.path.join(service.home, "logs", f"{job}.log")) as handle:
        log = handle.read()
    assert log.count("validation_accuracy=") == 20


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


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
        page.wait_for_timeout(300)  # let a last in-flight request settle
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


def test_review_commands_describe_executions_and_logs(service, default_run, capsys):
    from pipeline import cli

    arn, _ = default_run
    base = ["--local", "--endpoint-url", service.url, "--local-home", service.home]
    assert cli.main(base + ["describe", arn.split("/")[-1]]) == 0
    out = capsys.readouterr().out
    assert "status    Succeeded" in out and "outcome: True" in out
    assert "final metrics: train_loss=" in out and "validation_accuracy=0.9" in out
    assert cli.main(base + ["executions"]) == 0
    assert arn.split("/")[-1] in capsys.readouterr().out
    job = steps_of(service.client("sagemaker"), arn)["TrainModel"]["Metadata"]["TrainingJob"][
        "Arn"].split("/")[-1]
    assert cli.main(base + ["logs", job]) == 0
    assert capsys.readouterr().out.count("epoch=") == 20
    assert cli.main(base + ["logs", "no-such-job"]) == 2
    assert "no log for job" in capsys.readouterr().err


def test_run_browser_lists_endpoints_executions_and_packages(service, default_run):
    import urllib.request

    arn, _ = default_run
    page = urllib.request.urlopen(service.url + "/").read().decode()
    assert "mnist-mlp" in page and 'href="/draw/mnist-mlp"' in page
    assert arn.split("/")[-1] in page and "Succeeded" in page
    assert "mnist-mxnet-models" in page and "evaluation.json" in page
