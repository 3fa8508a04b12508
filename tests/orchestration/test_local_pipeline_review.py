"""Reviewing and approving real runs of the whole pipeline on the local service: the review
commands (describe, executions, logs, compare, report), a run waiting for approval approved from
the CLI and from the run browser's page (headless Chromium), each deploying through the rule."""
import contextlib
import io
import os
import re

import pytest

from localservice import steps_of, wait_for
from pipeline.packaging import source_commit
from pipeline.target import invocation
from pipelinehelpers import (EPOCHS, MNIST, _artifacts, _browser, _deployed_by_rule, _package_of,
                             start)
pytestmark = pytest.mark.slow


def _review(service, default_run, pending_run):
    """(the default run's id, the pending run's id, the CLI's options for this service)."""
    return (default_run[0].split("/")[-1], pending_run.split("/")[-1],
            ["--local", "--endpoint-url", service.url, "--local-home", service.home])


def test_review_commands_describe_and_executions(service, default_run, pending_run, capsys):
    from pipeline import cli

    run_id, other, base = _review(service, default_run, pending_run)
    assert cli.main(base + ["describe", run_id]) == 0
    out = capsys.readouterr().out
    assert "status    Succeeded  (started " in out
    assert re.search(r"TrainModel\s+Succeeded\s+[0-9.]+ s", out)  # step durations
    assert re.search(r"condition: 0\.9[0-9]{3} >= 0\.97 -> true", out)  # the gate's values
    assert "condition: Approved == Approved -> true" in out
    assert re.search(r"evaluation: accuracy=0\.9[0-9]{3}, weighted_precision=", out)
    assert "(Approved)" in out and re.search(
        r"deployment: deployed v\d+ to mnist-mlp at [0-9-]+ [0-9:]+; ", out)
    assert "endpoint now: mnist-mlp InService, serving arn:" in out
    assert "final metrics: train_loss=" in out and "validation_accuracy=0.9" in out

    assert cli.main(base + ["executions"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["execution", "pipeline", "status", "started", "duration",
                               "accuracy", "outcome"]
    mine = next(r for r in rows if r.startswith(run_id)).split()
    assert mine[1:3] == ["mnist-mxnet", "Succeeded"] and mine[6] == "s"
    assert 0.97 <= float(mine[7]) <= 1
    assert re.search(r"registered v\d+ \((Approved|Rejected)\); deployed v\d+ to mnist-mlp",
                     " ".join(mine[8:]))
    assert rows.index(next(r for r in rows if r.startswith(other))) < rows.index(
        next(r for r in rows if r.startswith(run_id)))  # newest first


def test_review_commands_logs_and_compare(service, default_run, pending_run, capsys):
    from pipeline import cli

    run_id, other, base = _review(service, default_run, pending_run)
    assert cli.main(base + ["logs", run_id, "TrainModel"]) == 0
    assert capsys.readouterr().out.count("epoch=") == EPOCHS
    assert cli.main(base + ["logs", run_id]) == 0
    out = capsys.readouterr().out
    assert "===== PrepareData (" in out and "===== DeployModel (" in out
    assert cli.main(base + ["logs", run_id, "CheckAccuracy"]) == 2
    assert "ran no job (Condition)" in capsys.readouterr().err
    assert cli.main(base + ["logs", "no-such-run"]) == 2
    assert "no execution 'no-such-run'" in capsys.readouterr().err

    assert cli.main(base + ["compare", run_id, other]) == 0
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()
             if line.strip()}
    assert lines["Epochs"] == ["7", "4"]
    assert lines["ModelApprovalStatus"] == ["Approved", "PendingManualApproval"]
    assert float(lines["accuracy"][0]) > float(lines["accuracy"][1]) > 0.9


def test_review_command_report_is_one_self_contained_file(service, default_run, pending_run,
                                                          tmp_path):
    from pipeline import cli

    run_id, _, base = _review(service, default_run, pending_run)
    report = tmp_path / "run.html"
    assert cli.main(base + ["report", run_id, "-o", str(report)]) == 0
    html = report.read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html)  # nothing fetched from elsewhere
    assert re.findall(r"\w+=\"(http://[^\"]*)", html) == re.findall(  # only SVG namespaces
        r"xmlns(?::\w+)?=\"(http://[^\"]*)", html)
    assert html.count("<svg") == 3  # the DAG, the curves, the confusion matrix
    assert "0.9" in html and "CheckAccuracy" in html
    shots = _artifacts()
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(report.as_uri())
        assert page.locator("svg.dag g.step").count() == 9
        assert page.locator(".curves svg").count() == 1
        assert page.locator(".confusion svg").count() == 1
        page.screenshot(path=os.path.join(shots, "report.png"), full_page=True)


@pytest.fixture(scope="module")
def pending_run(service, clients):
    """A run registered PendingManualApproval, started with `start --wait`: it shows training
    progress (its epochs are no earlier run's: no cache hit), and stops short of deploying."""
    from pipeline import cli

    sm, _, _ = clients
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["--local", "--endpoint-url", service.url, "--local-home", service.home,
                         "start", "--wait", "--no-upsert", "--poll-seconds", "0.2",
                         "--param", f"MnistSourceUri={MNIST}",
                         "--param", "ModelApprovalStatus=PendingManualApproval",
                         "--param", "Epochs=4", "--param", "AccuracyThreshold=0.9"])
    text = out.getvalue()
    assert code == 0, text
    arn = text.split("started ")[1].split()[0]
    assert re.search(r"epoch 1/4: train_loss=[0-9.]+, validation_loss=[0-9.]+, "
                     r"validation_accuracy=0\.9[0-9]+", text), text
    assert re.search(r"\]  PrepareData +Succeeded - cache hit: reused PrepareData of execution "
                     r"\w+ \(job pipelines-\w+-preparedata\)\n", text), text
    hint = " ".join([*invocation(), "--local", "--local-home", service.home, "--endpoint-url",
                     service.url])
    package = _package_of(sm, arn)
    assert "epoch 4/4: " in text and "TrainModel               Succeeded\n" in text and \
        f"waiting for approval: {hint} approve {package} deploys it" in text
    arn_id = text.split("started ")[1].split()[0].split("/")[-1]
    assert f"review it: {service.url}/executions/mnist-mxnet/{arn_id}" in text
    assert f"report: {hint} report {arn_id} -o run.html" in text
    steps = steps_of(sm, arn)
    assert steps["CheckApproval"]["Metadata"]["Condition"]["Outcome"] == "False"
    assert "DeployModel" not in steps
    return arn


def test_approve_from_the_cli_deploys_through_the_rule(service, clients, pending_run, capsys):
    from pipeline import cli

    sm, _, runtime = clients
    package = _package_of(sm, pending_run)
    lineage = sm.describe_model_package(ModelPackageName=package)["CustomerMetadataProperties"]
    assert lineage["PipelineExecutionArn"] == pending_run
    assert lineage["CodeCommit"] == (source_commit() or "unknown")  # `start` recorded it
    assert lineage["DataSha256.train-images"] == \
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    assert float(lineage["FinalValidationAccuracy"]) > 0.9
    before = len(sm.list_pipeline_executions(PipelineName="mnist-mxnet-deploy")[
        "PipelineExecutionSummaries"])
    base = ["--local", "--endpoint-url", service.url, "--local-home", service.home]
    assert cli.main(base + ["approve", "latest"]) == 0
    assert f"{package}: Approved" in capsys.readouterr().out
    _deployed_by_rule(sm, runtime, package)
    assert len(sm.list_pipeline_executions(PipelineName="mnist-mxnet-deploy")[
        "PipelineExecutionSummaries"]) == before + 1


def test_run_browser_pages_and_approving_from_the_page(service, clients, default_run):
    """Every page in headless Chromium, with a screenshot each; Approve on a package page
    starts the deploy pipeline through the rule, and the endpoint then answers."""
    sm, _, runtime = clients
    arn, _ = default_run
    pending = start(sm, ModelApprovalStatus="PendingManualApproval", Epochs=2,
                    AccuracyThreshold=0.9)
    assert wait_for(sm, pending) == "Succeeded"
    package = _package_of(sm, pending)
    run_id = arn.split("/")[-1]
    shots = _artifacts()
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        _executions_and_a_run(page, service.url, run_id, pending, shots)
        _approve_on_the_package_page(page, service.url, package, pending, shots)
        deploy_arn = _deployed_by_rule(sm, runtime, package)

        page.goto(service.url + "/endpoints")
        row = page.locator("table.endpoints").inner_text()
        assert "mnist-mlp" in page.locator("h2").first.inner_text()
        assert "InService" in row and package.split("/", 1)[1] in row
        history = page.locator("table.deployments").inner_text()  # newest first
        assert history.index(deploy_arn.split("/")[-1]) < history.index(run_id)
        page.screenshot(path=os.path.join(shots, "endpoints.png"), full_page=True)

        page.goto(f"{service.url}/compare?a={run_id}&b={pending.split('/')[-1]}")
        assert page.locator(".curves svg").count() == 1
        assert "Epochs" in page.locator("body").inner_text()
        page.screenshot(path=os.path.join(shots, "compare.png"), full_page=True)

        page.goto(service.url + "/")
        assert deploy_arn.split("/")[-1] in page.locator("table.executions").inner_text()

    import urllib.error
    import urllib.request
    forged = urllib.request.Request(service.url + "/packages/approval", method="POST",
                                    data=f"arn={package}&status=Rejected".encode(),
                                    headers={"Origin": "http://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged)
    assert refused.value.code == 403
    assert sm.describe_model_package(ModelPackageName=package)["ModelApprovalStatus"] == \
        "Approved"


def _executions_and_a_run(page, url, run_id, pending, shots):
    """The executions list (newest first), the run's page (DAG statuses, the gate) and its
    training job's page (log, curves)."""
    page.goto(url + "/")
    rows = page.locator("table.executions tr")
    assert rows.count() >= 3
    assert pending.split("/")[-1] in rows.nth(1).inner_text()  # newest first
    assert re.search(r"Succeeded.*0\.9\d{3}", page.locator(
        f"tr:has-text('{run_id}')").inner_text(), re.S)
    page.screenshot(path=os.path.join(shots, "executions.png"), full_page=True)

    page.click(f"text={run_id}")
    nodes = page.locator("svg.dag g.step")
    statuses = {nodes.nth(i).get_attribute("data-step"): nodes.nth(i).get_attribute(
        "data-status") for i in range(nodes.count())}
    assert statuses == {"PrepareData": "Succeeded", "TrainModel": "Succeeded",
                        "EvaluateModel": "Succeeded", "CheckAccuracy": "Succeeded",
                        "Register-RegisterModel": "Succeeded", "CheckApproval": "Succeeded",
                        "DeployModel": "Succeeded", "Cleanup": "Succeeded",
                        "AccuracyTooLow": "not run"}
    assert re.search(r"0\.9\d{3} >= 0\.97 -> true", page.locator("table.steps").inner_text())
    page.screenshot(path=os.path.join(shots, "execution.png"), full_page=True)

    page.click("text=pipelines-" + run_id + "-trainmodel")
    log = page.locator("pre.log").inner_text()
    assert log.count("epoch=") == EPOCHS and "model saved to" in log
    assert page.locator(".curves svg").count() == 1
    assert "validation" in page.locator(".curves").inner_text()  # the chart's legend
    page.screenshot(path=os.path.join(shots, "job.png"), full_page=True)


def _approve_on_the_package_page(page, url, package, pending, shots):
    """The pending package's page (status, confusion matrix, lineage), then Approve and its
    confirmation."""
    page.goto(url + "/packages/" + package.split("/", 1)[1])
    assert "PendingManualApproval" in page.locator("body").inner_text()
    heat = page.locator(".confusion svg")
    assert heat.count() == 1 and "predicted" in heat.text_content()
    lineage = page.locator("table.lineage").inner_text()
    assert pending.split("/")[-1] in lineage and "DataSha256.test-labels" in lineage
    page.screenshot(path=os.path.join(shots, "package.png"), full_page=True)
    page.click("#approve")
    page.click("#confirm")
    assert "Approved" in page.locator("table").first.inner_text()
    page.screenshot(path=os.path.join(shots, "package-approved.png"), full_page=True)
