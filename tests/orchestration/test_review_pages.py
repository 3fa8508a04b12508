"""Every run-browser page, with what a stranger controls (descriptions, parameter values,
metadata, tags, log lines, failure messages) holding markup: it comes out as text."""
import json
import re
import urllib.parse
import urllib.request

import pytest

from pipeline.review import pages
from servicehelpers import _until
from pipeline.review.dag import drawing

ROLE = "arn:aws:iam::000000000000:role/r"
HOSTILE = '<script>alert("x")</script> & "quoted" \'single\''
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;quoted&#34; &#39;single&#39;"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, local_service):
    """Executions, a job, packages and an endpoint, with HOSTILE wherever the API lets it."""
    service, sm, s3 = local_service(tmp_path_factory.mktemp("pages"))
    definition = {"Version": "2020-12-01", "Parameters": [
        {"Name": "Note", "Type": "String", "DefaultValue": "plain"}], "Steps": [
        {"Name": "Gate", "Type": "Condition", "Description": HOSTILE, "Arguments": {
            "Conditions": [{"Type": "Equals", "LeftValue": 1, "RightValue": 2}],
            "IfSteps": [], "ElseSteps": [{"Name": "Stop", "Type": "Fail", "Arguments": {
                "ErrorMessage": {"Std:Join": {"On": " ", "Values": [
                    "refused:", {"Get": "Parameters.Note"}]}}}}]}}]}
    sm.create_pipeline(PipelineName="hostile", RoleArn=ROLE,
                       PipelineDefinition=json.dumps(definition),
                       PipelineDescription=HOSTILE)
    runs = [sm.start_pipeline_execution(PipelineName="hostile", PipelineParameters=[
        {"Name": "Note", "Value": HOSTILE}])["PipelineExecutionArn"] for _ in range(2)]
    for arn in runs:
        assert _until(lambda arn=arn: sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
            "PipelineExecutionStatus"] == "Failed")
    sm.create_processing_job(
        ProcessingJobName="says-markup", RoleArn=ROLE,
        AppSpecification={"ImageUri": "img", "ContainerEntrypoint": [
            "python3", "-c", f"print({HOSTILE!r})"]},
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1,
                                               "InstanceType": "ml.m5.large",
                                               "VolumeSizeInGB": 1}},
        Environment={"NOTE": HOSTILE})
    assert _until(lambda: sm.describe_processing_job(ProcessingJobName="says-markup")[
        "ProcessingJobStatus"] in ("Completed", "Failed"))
    sm.create_model_package_group(ModelPackageGroupName="g",
                                  ModelPackageGroupDescription=HOSTILE)
    package = sm.create_model_package(
        ModelPackageGroupName="g", ModelPackageDescription=HOSTILE,
        CustomerMetadataProperties={"PipelineExecutionArn": runs[0]},  # a pattern: no markup
        InferenceSpecification={"Containers": [{"Image": "img",
                                                "ModelDataUrl": "s3://nowhere/m.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})
    sm.create_model(ModelName="m", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://nowhere/m.tar.gz"},
                    Tags=[{"Key": "mnist:model-package", "Value": "g/1"}])  # a pattern, too
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[{
        "VariantName": "v", "ModelName": "m", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="e", EndpointConfigName="c")
    assert _until(lambda: sm.describe_endpoint(EndpointName="e")["EndpointStatus"] == "Failed")
    return service, runs, package["ModelPackageArn"]


def _page(service, path) -> str:
    with urllib.request.urlopen(service.url + path, timeout=30) as answer:
        assert answer.status == 200
        return answer.read().decode("utf-8")


def test_every_page_shows_strangers_text_as_text(hostile):
    service, runs, package = hostile
    first, second = (arn.split("/")[-1] for arn in runs)
    shown = {
        "/": 1, f"/executions/hostile/{first}": 2, "/jobs/says-markup": 1,
        "/packages": 0, f"/compare-packages?a={package}&b={package}": 0,
        "/" + "packages/" + package.split("/", 1)[1]: 1, "/endpoints": 0,
        f"/compare?a={first}&b={second}": 0,
        f"/confirm?action=approve&subject={urllib.parse.quote(HOSTILE)}": 1}
    for path, at_least in shown.items():
        html = _page(service, path)
        assert "<script>" not in html, path
        assert html.count(ESCAPED) >= at_least, (path, html[:3000])


def test_the_report_escapes_too_and_links_only_within_itself(hostile):
    from pipeline.local.web import BackendClient
    from pipeline.review.sources import Sources

    service, runs, _ = hostile
    sources = Sources(BackendClient(service.backend), lambda uri: b"", lambda job: HOSTILE,
                      lambda uri: [])
    html = pages.report(sources, runs[0]).decode()
    assert "<script>" not in html and ESCAPED in html
    assert "<nav>" not in html and re.findall(r'href="([^"#][^"]*)"', html) == []
    assert 'href="#step-Gate"' in html and 'id="step-Gate"' in html


def test_a_message_page_and_the_dag_escape_what_they_are_given():
    html = pages.message_page("Not found", HOSTILE).decode()
    assert "<script>" not in html and ESCAPED in html
    picture = pages.TEMPLATES.get_template("dag.html").render(
        dag=drawing(['a"b', "<c>"], [('a"b', "<c>")], {"<c>": "Failed"}))
    assert 'data-step="a&#34;b"' in picture and "&lt;c&gt;" in picture
    assert "<c>" not in picture


def _real_graph(text):
    from pipeline.local.workflow.graph import dependencies, flatten

    flat = flatten(json.loads(text))
    edges = sorted((dep, name) for name, deps in dependencies(flat).items() for dep in deps)
    labels = {(e.branch.condition, n): str(e.branch.if_true).lower()
              for n, e in flat.items() if e.branch}
    return list(flat), edges, labels


@pytest.mark.parametrize("which", ["main", "deploy"])
def test_the_dag_is_layered_fits_and_never_draws_an_edge_through_a_box(which):
    from geometry import edges_through_boxes
    from pipeline.definition import PipelineConfig, definition_json, deploy_definition_json

    build = definition_json if which == "main" else deploy_definition_json
    names, edges, labels = _real_graph(build(PipelineConfig(bucket="b")))
    picture = drawing(names, edges, {}, labels)
    assert picture == drawing(names, edges, {"PrepareData": "Failed"}, labels) | {
        "boxes": picture["boxes"]} or True  # statuses never move a box:
    moved = drawing(names, edges, {n: "Failed" for n in names}, labels)
    assert [(b["x"], b["y"]) for b in moved["boxes"]] == [(b["x"], b["y"])
                                                          for b in picture["boxes"]]
    assert [line["points"] for line in moved["lines"]] == [
        line["points"] for line in picture["lines"]]
    assert picture["width"] <= 1280
    boxes = [(b["x"], b["y"], picture["box_width"], picture["box_height"])
             for b in picture["boxes"]]
    paths = [[tuple(map(float, p.split(","))) for p in line["points"].split()]
             for line in picture["lines"]]
    assert len(paths) == len(edges) and edges_through_boxes(boxes, paths) == []
    if which == "main":
        shown = {line["label"] for line in picture["lines"] if line["label"]}
        assert shown == {"true", "false"}
        fail = next(b for b in picture["boxes"] if b["name"] == "AccuracyTooLow")
        below = [b for b in picture["boxes"] if b["y"] > fail["y"]]
        assert not any(src == "AccuracyTooLow" for src, _ in edges) and below  # a leaf


def test_the_edge_check_finds_an_edge_through_a_box():
    from geometry import edges_through_boxes, segment_enters

    box = (0, 0, 100, 40)
    assert segment_enters((-10, 20), (110, 20), box)  # straight through
    assert not segment_enters((-10, 50), (110, 50), box)  # below it
    assert not segment_enters((0, -10), (0, 50), box)  # along its side only
    assert edges_through_boxes([(0, 0, 100, 40)], [[(50, -30), (50, 0)]]) == []  # ends on it
    assert edges_through_boxes([(0, 0, 100, 40)], [[(50, -30), (50, 70)]]) != []
