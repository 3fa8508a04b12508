"""DeployModel and Cleanup against moto: create, update, smoke test, rollback, clean up.

moto implements SageMaker's model registry and hosting calls but not UpdateEndpoint; the
``moto_update_endpoint`` fixture adds it (switch the endpoint's config, as AWS does once the update
completes). Runtime answers are queued through moto's sagemaker-runtime backend.
"""
import json

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.responses import SageMakerResponse
from moto.sagemakerruntime.models import sagemakerruntime_backends

import cleanup
import deploy

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
ENDPOINT = "mnist-test"


@pytest.fixture
def moto_update_endpoint(monkeypatch):
    def update_endpoint(self):
        backend = self.sagemaker_backend
        name = self._get_param("EndpointName")
        endpoint = backend.endpoints[name]
        endpoint.endpoint_config_name = self._get_param("EndpointConfigName")
        return json.dumps({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)


@pytest.fixture
def aws(monkeypatch, moto_update_endpoint):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sm = boto3.client("sagemaker", region_name=REGION)
        sm.create_model_package_group(ModelPackageGroupName="mnist")
        yield sm


@pytest.fixture
def test_dir(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(10, 28, 28), dtype=np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    np.savez(tmp_path / "test.npz", images=images, labels=labels)
    return tmp_path


def register(sm, status="Approved", **extra):
    return sm.create_model_package(
        ModelPackageGroupName="mnist", ModelApprovalStatus=status, **extra,
        InferenceSpecification={
            "Containers": [{"Image": "mxnet-inference:1.9.0-cpu-py38",
                            "ModelDataUrl": "s3://bucket/model.tar.gz",
                            "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]


def queue_answer(digits):
    """The next invoke_endpoint answers these digits (one per smoke-test image)."""
    body = json.dumps({"predictions": [{"digit": int(d), "probabilities": [0.1] * 10}
                                       for d in digits]})
    queue_raw(body, "application/json")


def queue_raw(body, content_type):
    backend = sagemakerruntime_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.results.clear()  # moto repeats its answer to an identical request; we want the next
    backend.results_queue.append((body, content_type, "AllTraffic", ""))


def run_deploy(package, execution, test_dir, tmp_path):
    failure = tmp_path / f"failure-{execution}"
    code = deploy.main(["--model-package-arn", package, "--endpoint-name", ENDPOINT,
                        "--execution-id", execution, "--role-arn", ROLE, "--test", str(test_dir),
                        "--smoke-images", "10", "--failure-file", str(failure)])
    return code, failure.read_text() if failure.exists() else ""


def endpoint_config(sm):
    return sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]


def test_first_deploy_creates_the_endpoint_and_passes_the_smoke_test(aws, test_dir, tmp_path):
    queue_answer(range(10))
    code, failure = run_deploy(register(aws), "exec1", test_dir, tmp_path)
    assert code == 0, failure
    assert endpoint_config(aws) == "mnist-test-exec1"
    model = aws.describe_model(ModelName="mnist-test-exec1")
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://bucket/model.tar.gz"
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_PROGRAM": "inference.py"}


def test_update_switches_config_and_a_failed_smoke_test_rolls_back(aws, test_dir, tmp_path):
    queue_answer(range(10))
    assert run_deploy(register(aws), "exec1", test_dir, tmp_path)[0] == 0
    queue_answer([0] * 10)  # the new model answers 0 for everything: 10% accuracy
    code, failure = run_deploy(register(aws), "exec2", test_dir, tmp_path)
    assert code == 1
    assert "smoke test: accuracy 0.100 on 10 test digits is below 0.8" in failure
    assert "kept on mnist-test-exec1" in failure
    assert endpoint_config(aws) == "mnist-test-exec1"  # rolled back
    names = [c["EndpointConfigName"] for c in aws.list_endpoint_configs()["EndpointConfigs"]]
    assert names == ["mnist-test-exec1"]  # the failed config and model are gone
    assert [m["ModelName"] for m in aws.list_models()["Models"]] == ["mnist-test-exec1"]


def test_failed_smoke_test_on_a_new_endpoint_removes_it(aws, test_dir, tmp_path):
    queue_answer([])  # no predictions at all
    code, failure = run_deploy(register(aws), "exec1", test_dir, tmp_path)
    assert code == 1 and "0 predictions for 10 images" in failure and "removed" in failure
    assert aws.list_endpoints()["Endpoints"] == []


def test_unanswerable_endpoint_rolls_back(aws, test_dir, tmp_path):
    queue_raw("<html>oops</html>", "text/html")
    code, failure = run_deploy(register(aws), "exec1", test_dir, tmp_path)
    assert code == 1 and "did not answer with predictions" in failure
    assert aws.list_endpoints()["Endpoints"] == []


def test_a_package_pending_approval_is_not_deployed(aws, test_dir, tmp_path):
    code, _ = run_deploy(register(aws, "PendingManualApproval"), "exec1", test_dir, tmp_path)
    assert code == 0
    assert aws.list_endpoints()["Endpoints"] == [] and aws.list_models()["Models"] == []


def test_long_names_fit_sagemakers_63_characters():
    name = deploy.resource_name("e" * 63, "arn:aws:sagemaker:x:1:pipeline/p/execution/abcdef123456")
    assert len(name) == 63 and name.endswith("-abcdef123456")


def test_cleanup_deletes_only_unused_resources_of_this_endpoint(aws, test_dir, tmp_path):
    for execution in ("exec1", "exec2"):
        queue_answer(range(10))
        assert run_deploy(register(aws), execution, test_dir, tmp_path)[0] == 0
    aws.create_model(ModelName="mnist-test-someone-else", ExecutionRoleArn=ROLE,
                     PrimaryContainer={"Image": "x"})  # untagged: not ours
    deleted = cleanup.cleanup(aws, ENDPOINT, keep_endpoint=True)
    assert deleted == {"endpoint": None, "endpoint_configs": ["mnist-test-exec1"],
                       "models": ["mnist-test-exec1"]}
    assert endpoint_config(aws) == "mnist-test-exec2"
    remaining = sorted(m["ModelName"] for m in aws.list_models()["Models"])
    assert remaining == ["mnist-test-exec2", "mnist-test-someone-else"]


def test_cleanup_without_keep_endpoint_deletes_the_endpoint_and_all_it_used(aws, test_dir,
                                                                           tmp_path):
    queue_answer(range(10))
    assert run_deploy(register(aws), "exec1", test_dir, tmp_path)[0] == 0
    assert cleanup.main(["--endpoint-name", ENDPOINT, "--keep-endpoint", "false"]) == 0
    assert aws.list_endpoints()["Endpoints"] == []
    assert aws.list_endpoint_configs()["EndpointConfigs"] == []
    assert aws.list_models()["Models"] == []


def test_cleanup_rejects_a_bad_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cleanup.main(["--endpoint-name", ENDPOINT, "--keep-endpoint", "maybe"])
    assert exit_info.value.code == 2 and "expected true or false" in capsys.readouterr().err


def test_group_mode_deploys_the_newest_approved_package_once(aws, test_dir, tmp_path, capsys):
    """The approve -> deploy pipeline: the group's newest Approved package, its test digits read
    from the S3 URI the package records; a second run finds it already served."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="data")
    s3.upload_file(str(test_dir / "test.npz"), "data", "run1/test/test.npz")
    approved = register(aws, CustomerMetadataProperties={"TestData": "s3://data/run1/test"})
    register(aws, "PendingManualApproval")  # newer, but not approved: not shipped

    def run(execution):
        queue_answer(range(10))
        return deploy.main(["--model-package-group", "mnist", "--endpoint-name", ENDPOINT,
                            "--execution-id", execution, "--role-arn", ROLE, "--test", "package",
                            "--smoke-images", "10", "--failure-file", str(tmp_path / "f")])

    assert run("deploy1") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["model_package_arn"] == approved
    tags = aws.list_tags(ResourceArn=aws.describe_model(ModelName="mnist-test-deploy1")[
        "ModelArn"])["Tags"]
    assert {"Key": deploy.PACKAGE_TAG, "Value": approved} in tags
    assert run("deploy2") == 0
    assert "already serves" in capsys.readouterr().out
    assert endpoint_config(aws) == "mnist-test-deploy1"
    assert [c["EndpointConfigName"] for c in aws.list_endpoint_configs()["EndpointConfigs"]] == [
        "mnist-test-deploy1"]


def test_group_mode_without_an_approved_package_fails_clearly(aws, tmp_path):
    register(aws, "PendingManualApproval")
    failure = tmp_path / "failure"
    code = deploy.main(["--model-package-group", "mnist", "--endpoint-name", ENDPOINT,
                        "--execution-id", "x", "--role-arn", ROLE, "--test", "package",
                        "--failure-file", str(failure)])
    assert code == 1 and "no Approved model package in group mnist" in failure.read_text()


def test_an_update_that_leaves_the_old_config_fails_the_deploy_truthfully(aws, test_dir,
                                                                         tmp_path, monkeypatch):
    """As on AWS (and the local service) a failed update keeps the endpoint InService on its old
    config: DeployModel must see that, not accept it, and say it kept the old config."""
    queue_answer(range(10))
    assert run_deploy(register(aws), "exec1", test_dir, tmp_path)[0] == 0

    def failing_update(self):  # the update fails: the endpoint stays on what it served
        return json.dumps({"EndpointArn": self.sagemaker_backend.endpoints[
            self._get_param("EndpointName")].arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", failing_update, raising=False)
    queue_answer(range(10))
    code, failure = run_deploy(register(aws), "exec2", test_dir, tmp_path)
    assert code == 1
    assert "is InService" in failure and "(rolled back: endpoint kept on mnist-test-exec1)" \
        in failure
    assert endpoint_config(aws) == "mnist-test-exec1"


def test_a_failed_rollback_is_reported_as_failed(aws, test_dir, tmp_path, monkeypatch):
    queue_answer(range(10))
    assert run_deploy(register(aws), "exec1", test_dir, tmp_path)[0] == 0
    calls = []

    def update_then_break(self):  # the update applies; the rollback's update is refused
        calls.append(self._get_param("EndpointConfigName"))
        if len(calls) > 1:
            raise ValidationError("not allowed to update now")
        endpoint = self.sagemaker_backend.endpoints[self._get_param("EndpointName")]
        endpoint.endpoint_config_name = self._get_param("EndpointConfigName")
        return json.dumps({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_then_break, raising=False)
    queue_answer([0] * 10)  # the smoke test fails: roll back, which fails
    code, failure = run_deploy(register(aws), "exec2", test_dir, tmp_path)
    assert code == 1 and "smoke test: accuracy 0.100" in failure
    assert "ROLLBACK FAILED" in failure and "not allowed to update now" in failure
    assert "kept on" not in failure
    assert endpoint_config(aws) == "mnist-test-exec2"  # the truth: still on the new config


def test_cleanup_stops_when_the_endpoint_cannot_be_described(aws, test_dir, tmp_path,
                                                             monkeypatch):
    """Throttling or AccessDenied on DescribeEndpoint is not "no endpoint": deleting what the
    live endpoint uses would take it down, even with KeepEndpoint=true."""
    from botocore.exceptions import ClientError

    queue_answer(range(10))
    assert run_deploy(register(aws), "exec1", test_dir, tmp_path)[0] == 0
    real = aws.describe_endpoint

    def throttled(**kwargs):
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                          "DescribeEndpoint")

    monkeypatch.setattr(aws, "describe_endpoint", throttled)
    with pytest.raises(ClientError, match="Rate exceeded"):
        cleanup.cleanup(aws, ENDPOINT, keep_endpoint=True)
    monkeypatch.setattr(aws, "describe_endpoint", real)
    assert [c["EndpointConfigName"] for c in aws.list_endpoint_configs()["EndpointConfigs"]] == [
        "mnist-test-exec1"]
    assert [m["ModelName"] for m in aws.list_models()["Models"]] == ["mnist-test-exec1"]


def test_an_update_already_in_flight_is_waited_for_then_retried(aws, test_dir, tmp_path,
                                                                monkeypatch, capsys):
    """Two executions deploying to one endpoint: the second is refused "Cannot update
    in-progress endpoint" (as on AWS); it waits for the endpoint to settle and tries again, and
    rolls back to (and names) the config the endpoint settled on."""
    queue_answer(range(10))
    assert run_deploy(register(aws), "exec1", test_dir, tmp_path)[0] == 0
    refusals = []

    def busy_once(self):
        backend = self.sagemaker_backend
        endpoint = backend.endpoints[self._get_param("EndpointName")]
        if not refusals:  # meanwhile another deployment switched the endpoint to exec-other
            refusals.append(1)
            endpoint.endpoint_config_name = "mnist-test-exec1"
            raise ValidationError(f'Cannot update in-progress endpoint "{endpoint.arn}".')
        endpoint.endpoint_config_name = self._get_param("EndpointConfigName")
        return json.dumps({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", busy_once, raising=False)
    queue_answer(range(10))
    code, failure = run_deploy(register(aws), "exec2", test_dir, tmp_path)
    assert code == 0, failure
    out = capsys.readouterr().out
    assert out.count("updating endpoint mnist-test: mnist-test-exec1 -> mnist-test-exec2") == 2
    assert endpoint_config(aws) == "mnist-test-exec2"


def test_a_busy_endpoint_that_stays_busy_fails_truthfully(aws, test_dir, tmp_path,
                                                          monkeypatch):
    queue_answer(range(10))
    assert run_deploy(register(aws), "exec1", test_dir, tmp_path)[0] == 0

    def always_busy(self):
        endpoint = self.sagemaker_backend.endpoints[self._get_param("EndpointName")]
        raise ValidationError(f'Cannot update in-progress endpoint "{endpoint.arn}".')

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", always_busy, raising=False)
    monkeypatch.setattr(deploy, "BUSY_RETRIES", 2)
    code, failure = run_deploy(register(aws), "exec2", test_dir, tmp_path)
    assert code == 1 and "Cannot update in-progress endpoint" in failure
    assert "(rolled back: endpoint kept on mnist-test-exec1)" in failure
    assert endpoint_config(aws) == "mnist-test-exec1"


def test_cleanup_waits_for_another_runs_deployment_before_deleting(aws, test_dir, tmp_path,
                                                                   monkeypatch, capsys):
    """While another execution updates the endpoint, the config and model it switches to are
    not in use yet: Cleanup waits for the endpoint to settle, then deletes only what it left
    unused (deleting them mid-update broke that deployment)."""
    queue_answer(range(10))
    assert run_deploy(register(aws), "exec1", test_dir, tmp_path)[0] == 0
    real = aws.describe_endpoint
    polls = []

    def updating_twice(**kwargs):
        desc = real(**kwargs)
        polls.append(desc["EndpointStatus"])
        return {**desc, "EndpointStatus": "Updating"} if len(polls) <= 2 else desc

    monkeypatch.setattr(aws, "describe_endpoint", updating_twice)
    monkeypatch.setattr(cleanup.time, "sleep", lambda seconds: None)
    cleanup.cleanup(aws, ENDPOINT, keep_endpoint=True)
    assert len(polls) == 3
    assert capsys.readouterr().out.count("(another deployment): waiting before cleaning up") == 2
    assert [c["EndpointConfigName"] for c in aws.list_endpoint_configs()["EndpointConfigs"]] == [
        "mnist-test-exec1"]

    monkeypatch.setattr(aws, "describe_endpoint",
                        lambda **kwargs: {**real(**kwargs), "EndpointStatus": "Updating"})
    with pytest.raises(RuntimeError, match="still Updating after 0 s: nothing deleted"):
        cleanup.in_use(aws, ENDPOINT, timeout=0)


def test_two_cleanups_at_once_both_succeed(aws, test_dir, tmp_path, monkeypatch, capsys):
    """A pipeline run's Cleanup and the event-started deploy run's end together: what one
    deletes first, the other finds gone, and that is no failure."""
    for execution in ("exec1", "exec2"):
        queue_answer(range(10))
        assert run_deploy(register(aws), execution, test_dir, tmp_path)[0] == 0
    real_config, real_model = aws.delete_endpoint_config, aws.delete_model

    def other_run_first(real):
        def delete(**name):
            real(**name)  # the other Cleanup deletes it between our listing and our delete
            return real(**name)
        return delete

    monkeypatch.setattr(aws, "delete_endpoint_config", other_run_first(real_config))
    monkeypatch.setattr(aws, "delete_model", other_run_first(real_model))
    deleted = cleanup.cleanup(aws, ENDPOINT, keep_endpoint=True)
    assert deleted == {"endpoint": None, "endpoint_configs": [], "models": []}
    out = capsys.readouterr().out
    assert "mnist-test-exec1: already deleted (another run's Cleanup)" in out
    assert [c["EndpointConfigName"] for c in aws.list_endpoint_configs()["EndpointConfigs"]] == [
        "mnist-test-exec2"]
    monkeypatch.setattr(aws, "delete_model", lambda **name: (_ for _ in ()).throw(
        ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}},
                    "DeleteModel")))
    queue_answer(range(10))
    assert run_deploy(register(aws), "exec3", test_dir, tmp_path)[0] == 0
    with pytest.raises(ClientError, match="slow down"):  # any other error still stops it
        cleanup.cleanup(aws, ENDPOINT, keep_endpoint=True)
