"""stop, retry and watch from the CLI against a local service; values the CLI knows are wrong
refused before anything starts; a closed pipe ends the CLI quietly."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from localservice import wait_for
from pipeline import cli
from pipeline.target import invocation
from servicehelpers import _sleeping_pipeline, _until


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory, local_service):
    home = tmp_path_factory.mktemp("control")
    service, sm, s3 = local_service(home)
    _sleeping_pipeline(sm, s3, "mnist-mxnet", 3)
    return service, sm, str(home)


def _cli(sleeper, capsys, *words):
    service, _, home = sleeper
    code = cli.main(["--local", "--local-home", home, "--endpoint-url", service.url, *words])
    return code, capsys.readouterr().out.splitlines()


def test_stop_watch_and_retry_an_execution(sleeper, capsys):
    service, sm, home = sleeper
    arn = sm.start_pipeline_execution(PipelineName="mnist-mxnet")["PipelineExecutionArn"]
    run_id = arn.split("/")[-1]
    hint = " ".join([*invocation(), "--local", "--local-home", home, "--endpoint-url",
                     service.url])
    assert _until(lambda: any(s["StepStatus"] == "Executing" for s in sm.
                              list_pipeline_execution_steps(PipelineExecutionArn=arn)[
                                  "PipelineExecutionSteps"]))
    assert _cli(sleeper, capsys, "stop", run_id) == (0, [
        f"stopping {arn}", f"follow it: {hint} watch {run_id}"])
    code, out = _cli(sleeper, capsys, "watch", run_id, "--poll-seconds", "0.2")
    assert code == 1 and "execution Stopped after" in "\n".join(out)
    assert any(line.endswith("Sleep                    Stopped") for line in out), out

    assert _cli(sleeper, capsys, "retry", run_id) == (0, [
        f"retrying {arn}", f"follow it: {hint} watch {run_id}"])
    code, out = _cli(sleeper, capsys, "watch", run_id, "--poll-seconds", "0.2")
    assert code == 0 and "execution Succeeded after" in "\n".join(out)
    assert any(line.endswith("Sleep                    Succeeded") for line in out), out
    assert wait_for(sm, arn) == "Succeeded"

    code, out = _cli(sleeper, capsys, "retry", run_id)  # nothing failed: AWS refuses it too
    assert code == 2


@pytest.mark.parametrize("param, reason", [
    ("Epochs=-1", "parameter Epochs must be >= 1, got -1"),
    ("Epochs=0", "parameter Epochs must be >= 1, got 0"),
    ("AccuracyThreshold=2", "parameter AccuracyThreshold must be >= 0.0 and <= 1.0, got 2.0"),
    ("AccuracyThreshold=-0.1", "parameter AccuracyThreshold must be >= 0.0 and <= 1.0, got -0.1"),
    ("LearningRate=0", "parameter LearningRate must be > 0.0, got 0.0"),
    ("LearningRate=nan", "parameter LearningRate needs a finite number, got 'nan'"),
    ("TrainingInstanceCount=0", "parameter TrainingInstanceCount must be >= 1, got 0"),
    ("BatchSize=0", "parameter BatchSize must be >= 1, got 0"),
    ("ModelApprovalStatus=approved", "parameter ModelApprovalStatus must be one of Approved, "
     "PendingManualApproval, Rejected (the statuses a model package is registered with), got "
     "'approved'"),
])
def test_values_that_cannot_run_are_refused_before_starting(param, reason, capsys):
    # the endpoint URL is never called: the refusal comes first
    code = cli.main(["--local", "--endpoint-url", "http://127.0.0.1:9", "start", "--param",
                     param])
    assert code == 2 and capsys.readouterr().err.strip() == f"error: {reason}"


def test_the_limits_let_the_edges_through(capsys):
    from pipeline.commands import parse_param

    assert parse_param("Epochs=1") == ("Epochs", 1)
    assert parse_param("AccuracyThreshold=1") == ("AccuracyThreshold", 1.0)
    assert parse_param("AccuracyThreshold=0") == ("AccuracyThreshold", 0.0)
    assert parse_param("LearningRate=1e-9") == ("LearningRate", 1e-9)
    for status in ("Approved", "PendingManualApproval", "Rejected"):  # every one AWS takes
        assert parse_param(f"ModelApprovalStatus={status}") == ("ModelApprovalStatus", status)
    for strategy in ("Bayesian", "Random"):
        assert parse_param(f"TuningStrategy={strategy}", tuning=True) == ("TuningStrategy",
                                                                          strategy)


def test_a_closed_pipe_ends_quietly():
    """`run_pipeline.py ... | head`: the reader left; no traceback, no second error."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "run_pipeline.py"),
                               "--bucket", "b", "iam-policy"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 1 and proc.stderr == ""
