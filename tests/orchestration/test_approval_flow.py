"""Approval as a reviewer relies on it, locally and for real: the version approved is the
version that ships, rejection rolls back, nothing changes without a reason, and every page and
command says what each run deployed and what is live. Then stop and retry from the page, a
failed gate's DAG and a cache hit, in headless Chromium with a screenshot of each page."""
import os
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from geometry import edges_through_boxes
from localservice import steps_of, wait_for
from pipeline import cli
from pipeline.aws import Clients, install_pipeline
from pipeline.definition import PipelineConfig
from pipeline.target import invocation
from pipelinehelpers import BUCKET, EPOCHS, _artifacts, _browser, start

pytestmark = pytest.mark.slow
GROUP = "mnist-mxnet-models"


@pytest.fixture(scope="module")
def flow(service):
    """v1 registered Approved and deployed by its run; v2 and v3 registered pending."""
    install_pipeline(Clients.create(endpoint_url=service.url, local=True),
                     PipelineConfig(bucket=BUCKET), local=True)
    sm = service.client("sagemaker")
    first = start(sm)
    assert wait_for(sm, first) == "Succeeded"
    v1 = sm.describe_model_package(ModelPackageName=_version(service, 1))
    for _ in range(2):  # two more versions of the same model, waiting for a reviewer
        meta = {k: v for k, v in v1["CustomerMetadataProperties"].items()
                if k != "RegisteredApproval"}
        sm.create_model_package(
            ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification=v1["InferenceSpecification"],
            ModelMetrics=v1["ModelMetrics"], CustomerMetadataProperties=meta)
    return sm, first


def _version(service, number):
    return f"arn:aws:sagemaker:us-east-1:000000000000:model-package/{GROUP}/{number}"


def _cli(service, capsys, *words):
    code = cli.main(["--local", "--local-home", service.home, "--endpoint-url", service.url,
                     *words])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def _hint(service, words):
    return " ".join([*invocation(), "--local", "--local-home", service.home, "--endpoint-url",
                     service.url, words])


def _serving(sm):
    desc = sm.describe_endpoint(EndpointName="mnist-mlp")
    model = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])[
        "ProductionVariants"][0]["ModelName"]
    tags = sm.list_tags(ResourceArn=sm.describe_model(ModelName=model)["ModelArn"])["Tags"]
    return next(t["Value"] for t in tags if t["Key"] == "mnist-mxnet:model-package").rsplit(
        "/", 1)[-1]


def _review(service, capsys, action, number):
    """approve|reject vN from the CLI; returns the deploy run it started, once it ended."""
    code, out, _ = _cli(service, capsys, action, _version(service, number))
    assert code == 0
    status = "Approved" if action == "approve" else "Rejected"
    assert out[0] == f"{_version(service, number)}: {status} (version {number})"
    assert out[1] == ("the approve -> deploy pipeline (mnist-mxnet-deploy) now serves the most "
                      f"recently approved version of {GROUP}")
    run = out[2].removeprefix("deploy run started: ")
    assert out[3] == f"follow it: {_hint(service, 'watch ' + run.split('/')[-1])}"
    assert wait_for(service.client("sagemaker"), run) == "Succeeded"
    return run


def test_the_version_approved_ships_and_every_command_says_so(service, flow, capsys):
    sm, first = flow
    assert _serving(sm) == "1"
    deploy_runs = {}
    for action, number, expected in (("approve", 3, "3"), ("approve", 2, "2"),
                                     ("reject", 2, "3"), ("reject", 3, "1")):
        deploy_runs[(action, number)] = _review(service, capsys, action, number)
        assert _serving(sm) == expected, (action, number)
    rejected_last = _review(service, capsys, "reject", 1)
    assert _serving(sm) == "1"  # nothing approved remains: it keeps serving, and says so

    # an event-started run when nothing changed records nothing
    quiet = sm.start_pipeline_execution(PipelineName="mnist-mxnet-deploy", PipelineParameters=[
        {"Name": "ApprovalEvent", "Value": "true"}])["PipelineExecutionArn"]
    assert wait_for(sm, quiet) == "Succeeded"

    code, out, _ = _cli(service, capsys, "endpoints")
    assert code == 1  # an endpoint serves a model that is not Approved
    since = re.escape
    assert re.fullmatch(rf"mnist-mlp: serving {since(_version(service, 1))} \(Rejected\) since "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out[0])
    assert out[1] == ("  WARNING: serving a Rejected model (v1): approve a version to deploy "
                      "it, or delete the endpoint")
    assert out[2] == f"  delete it: {_hint(service, 'delete-endpoint mnist-mlp')}"
    history = [re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "T", line) for line in out[3:]]
    runs = [deploy_runs[k].split("/")[-1] for k in (("reject", 3), ("reject", 2),
                                                   ("approve", 2), ("approve", 3))]
    assert history == [
        f"  deployed v1 to mnist-mlp at T; still live (execution {runs[0]})",
        f"  deployed v3 to mnist-mlp at T; replaced by v1 at T (execution {runs[1]})",
        f"  deployed v2 to mnist-mlp at T; replaced by v3 at T (execution {runs[2]})",
        f"  deployed v3 to mnist-mlp at T; replaced by v2 at T (execution {runs[3]})",
        f"  deployed v1 to mnist-mlp at T; replaced by v3 at T (execution "
        f"{first.split('/')[-1]})"]

    code, out, _ = _cli(service, capsys, "describe", rejected_last.split("/")[-1])
    assert out[-3:] == [
        "deployment: changed nothing: the endpoint serves v1, which is not Approved, and no "
        "Approved version remains",
        f"endpoint now: mnist-mlp InService, serving {_version(service, 1)} (Rejected)",
        "WARNING: mnist-mlp is serving a Rejected model: approve a version to deploy it, or "
        f"{_hint(service, 'delete-endpoint mnist-mlp')}"]
    code, out, _ = _cli(service, capsys, "describe", quiet.split("/")[-1])
    assert out[-3].startswith("deployment: changed nothing: the endpoint serves v1")
    code, out, _ = _cli(service, capsys, "describe", deploy_runs[("approve", 2)].split("/")[-1])
    assert re.fullmatch(r"deployment: deployed v2 to mnist-mlp at \S+ \S+; replaced by v3 at "
                        r"\S+ \S+", out[-3])



def test_the_registry_and_the_endpoint_page_show_what_is_live(service, flow, capsys):
    """After the flow above: v1, v2, v3 Rejected; v1 still serving, with a warning."""
    _, first = flow
    code, out, _ = _cli(service, capsys, "packages")
    assert code == 0 and out[0].split() == ["version", "approval", "accuracy",
                                            "source", "execution", "created", "live"]
    date, source = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", first.split("/")[-1]
    row = rf" +Rejected +0\.9[789]\d\d  {source} +{date}"  # v2, v3: v1's model and lineage
    assert [line.split()[0] for line in out[1:]] == ["v3", "v2", "v1"]
    assert re.fullmatch(f"v3{row}", out[1]) and re.fullmatch(f"v2{row}", out[2])
    assert re.fullmatch(f"v1{row} mnist-mlp since {date}", out[3]), out[3]

    with urllib.request.urlopen(service.url + "/endpoints", timeout=30) as answer:
        page = answer.read().decode()
    assert "Warning: mnist-mlp is serving a Rejected model (v1)" in page
    assert page.count("<tr><td class=\"date\">") == 5  # five deployments; the quiet runs none


def test_stop_and_retry_from_the_page_and_a_failed_gates_dag(service, flow):
    """Stop and Retry from the execution page, each behind a confirmation; the failed gate's
    DAG (no edge through a box). Screenshots in test-artifacts/."""
    sm, first = flow
    shots = _artifacts()
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        slow = start(sm, Epochs=25, AccuracyThreshold=1.0)  # long enough to stop; cannot pass
        run_page = f"{service.url}/executions/mnist-mxnet/{slow.split('/')[-1]}"
        page.goto(run_page)  # (a running execution's page refreshes itself: goto, not reload)
        page.click("#stop")
        assert "Stop execution" in page.locator(".question").inner_text()
        page.screenshot(path=os.path.join(shots, "confirm-stop.png"))
        page.click("#confirm")
        assert wait_for(sm, slow) == "Stopped"
        page.goto(run_page)
        page.click("#retry")
        page.click("#confirm")
        assert wait_for(sm, slow, until=("Succeeded", "Failed")) == "Failed"  # the gate
        page.goto(run_page)
        assert page.locator("g.step[data-step='AccuracyTooLow']").get_attribute(
            "data-status") == "Failed"
        _no_edge_through_a_box(page)
        page.screenshot(path=os.path.join(shots, "failed-gate.png"), full_page=True)


def test_a_cache_hit_the_registry_and_approving_from_the_page(service, flow):
    """A cached run's page and DAG; the registry with its live marker, two versions compared,
    a version's history; approving with a comment through the confirmation page."""
    sm, first = flow
    shots = _artifacts()
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        cached = start(sm, ModelApprovalStatus="PendingManualApproval")
        assert wait_for(sm, cached) == "Succeeded"
        assert steps_of(sm, cached)["TrainModel"]["CacheHitResult"][
            "SourcePipelineExecutionArn"] == first
        page.goto(f"{service.url}/executions/mnist-mxnet/{cached.split('/')[-1]}")
        note = page.locator("g.step[data-step='TrainModel']").text_content()
        assert "cache hit" in note
        row = page.locator("tr#step-TrainModel").inner_text()
        assert f"cache hit: reused TrainModel of execution {first.split('/')[-1]} (job " \
               f"pipelines-{first.split('/')[-1]}-trainmodel)" in row
        page.screenshot(path=os.path.join(shots, "cached-run.png"), full_page=True)
        page.click("g.step[data-step='TrainModel']")  # a node links to its job and log
        assert "epoch=" in page.locator("pre.log").inner_text()

        page.goto(service.url + "/packages")
        assert "live on mnist-mlp" in page.locator("table.packages tr:has-text('v1')").first \
            .inner_text()
        page.screenshot(path=os.path.join(shots, "registry.png"), full_page=True)
        page.goto(service.url + "/compare-packages?" + urllib.parse.urlencode(
            {"a": _version(service, 1), "b": _version(service, 2)}))
        assert page.locator(".confusion svg").count() == 2
        assert re.search(r"accuracy\s+0\.9\d{3}\s+0\.9\d{3}", page.locator("table").inner_text())
        page.screenshot(path=os.path.join(shots, "package-compare.png"), full_page=True)
        page.goto(service.url + "/packages/" + _version(service, 3).split("/", 1)[1])
        history = page.locator("h2:has-text('Approval') + table").inner_text()
        assert "Rejected by local user" in history and "Approved by local user" in history
        assert page.locator("#reject").count() == 0  # already Rejected: no Reject button
        page.screenshot(path=os.path.join(shots, "package-history.png"), full_page=True)
        page.click("#approve")
        page.fill("textarea[name=comment]", "v3 after all")
        page.screenshot(path=os.path.join(shots, "confirm-approve.png"))
        page.click("#confirm")
        assert "Approved" in page.locator(".notice").inner_text()
        package = sm.describe_model_package(ModelPackageName=_version(service, 3))
        assert package["ApprovalDescription"] == "v3 after all"
        page.goto(service.url + "/endpoints")
        page.screenshot(path=os.path.join(shots, "endpoint-deployments.png"), full_page=True)
        page.goto(service.url + "/?pipeline=mnist-mxnet-deploy")
        shown = page.locator("table.executions tr td:nth-child(3)").all_inner_texts()
        assert len(shown) >= 6 and set(shown) == {"mnist-mxnet-deploy"}
        page.screenshot(path=os.path.join(shots, "executions.png"), full_page=True)


def test_cache_hits_in_describe_logs_and_compare(service, flow, capsys):
    sm, first = flow
    cached = next(r["PipelineExecutionArn"] for r in sm.list_pipeline_executions(
        PipelineName="mnist-mxnet", SortBy="CreationTime", SortOrder="Descending")[
        "PipelineExecutionSummaries"] if "CacheHitResult" in steps_of(
        sm, r["PipelineExecutionArn"])["TrainModel"])
    first_id, cached_id = first.split("/")[-1], cached.split("/")[-1]
    reused = f"cache hit: reused TrainModel of execution {first_id} (job " \
             f"pipelines-{first_id}-trainmodel)"
    code, out, _ = _cli(service, capsys, "describe", cached_id)
    at = out.index(next(line for line in out if line.startswith("  TrainModel ")))
    assert re.fullmatch(r"  TrainModel +Succeeded +cached", out[at]) and out[at + 1] == \
        f"    {reused}"
    code, out, _ = _cli(service, capsys, "logs", cached_id, "TrainModel")
    assert out[0] == f"===== {reused}" and sum("epoch=" in line for line in out) == EPOCHS
    code, out, _ = _cli(service, capsys, "compare", first_id, cached_id)
    rows = {line[:24].strip(): line[24:].split() for line in out[1:]}
    assert rows["step TrainModel"][0] == "Succeeded" and \
        " ".join(rows["step TrainModel"][3:]) == f"cache hit (of {first_id})"
    assert rows["ModelApprovalStatus"] == ["Approved", "PendingManualApproval"]


def test_forms_need_this_services_token(service, flow):
    """A form posted from anywhere else (no token, another origin, a token for another
    subject) changes nothing."""
    sm, _ = flow
    arn = _version(service, 2)
    before = sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"]
    with urllib.request.urlopen(service.url + "/confirm?" + urllib.parse.urlencode(
            {"action": "approve", "subject": _version(service, 1)}), timeout=30) as answer:
        other_token = re.search(r'name="token" value="([0-9a-f]+)"', answer.read().decode())[1]
    for fields, headers in (({}, {}), ({"token": "0" * 64}, {}),
                            ({"token": other_token}, {}),
                            ({"token": other_token}, {"Origin": "null"})):
        body = urllib.parse.urlencode({"action": "approve", "subject": arn, **fields}).encode()
        request = urllib.request.Request(service.url + "/packages/approval", data=body,
                                         headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403, fields
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == before


def _no_edge_through_a_box(page):
    """From the SVG's geometry: no edge passes through a step box."""
    boxes = page.eval_on_selector_all("svg.dag g.step rect", "rs => rs.map(r => [+r.getAttribute"
                                      "('x'), +r.getAttribute('y'), +r.getAttribute('width'), "
                                      "+r.getAttribute('height')])")
    lines = page.eval_on_selector_all("svg.dag polyline.edge",
                                      "ps => ps.map(p => p.getAttribute('points'))")
    assert len(boxes) == 9 and len(lines) >= 9
    paths = [[tuple(map(float, p.split(","))) for p in line.split()] for line in lines]
    assert edges_through_boxes(boxes, paths) == []


def test_an_endpoint_deleted_outside_the_pipeline_is_said_so(service, flow, capsys):
    """The log's last word was a deployment, then the endpoint went by another hand: no page
    or command calls that deployment live."""
    sm, _ = flow
    for run in sm.list_pipeline_executions(PipelineName="mnist-mxnet-deploy")[
            "PipelineExecutionSummaries"]:  # the page's last approval deploys v3
        assert wait_for(sm, run["PipelineExecutionArn"]) == "Succeeded"
    assert _serving(sm) == "3"
    code, out, _ = _cli(service, capsys, "delete-endpoint", "mnist-mlp")
    assert code == 0 and out[0].startswith("deleted endpoint mnist-mlp")
    last = sm.list_pipeline_executions(PipelineName="mnist-mxnet-deploy", SortBy="CreationTime",
                                       SortOrder="Descending")["PipelineExecutionSummaries"][0]
    code, out, _ = _cli(service, capsys, "describe", last["PipelineExecutionArn"].split("/")[-1])
    assert re.fullmatch(r"deployment: deployed v3 to mnist-mlp at \S+ \S+; the endpoint has "
                        r"since been deleted", out[-2]), out
    assert out[-1] == "endpoint now: mnist-mlp does not exist"
    assert _cli(service, capsys, "endpoints")[:2] == (0, ["no endpoints"])
