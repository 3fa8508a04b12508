"""The local run browser: pipelines, executions and their steps, the registry, endpoints.

Plain server-side HTML (no build step), in the same terms as SageMaker Studio's pages.
"""
import json
import time
from html import escape

from pipeline import drawpad
from pipeline.config import render_value

_STYLE = """<style>body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ddd;padding:.3rem .6rem;
text-align:left;font-size:.9rem}th{background:#f5f5f5}.Succeeded,.InService,.Approved,.Completed{color:#16a34a}
.Failed,.Rejected{color:#dc2626}.Executing,.Creating,.Updating,.InProgress{color:#2563eb}</style>"""


def _when(epoch):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else ""


def _table(headers, rows):
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _status(value):
    return f'<span class="{escape(value)}">{escape(value)}</span>'


def _all(list_call, key, **query):
    """Every item of a List* operation of the backend, page after page."""
    items, token = [], None
    while True:
        page = list_call(**query, **({"next_token": token} if token else {}))
        items += page[key]
        token = page.get("NextToken")
        if not token:
            return items


def _changed_parameters(backend, arn):
    """The parameters an execution set to other values than the definition's defaults."""
    definition = json.loads(backend.describe_pipeline_definition_for_execution(arn)[
        "PipelineDefinition"])
    defaults = {p["Name"]: render_value(p.get("DefaultValue"))
                for p in definition.get("Parameters", [])}
    values = _all(backend.list_pipeline_parameters_for_execution, "PipelineParameters",
                  pipeline_execution_arn=arn)
    return [p for p in values if defaults.get(p["Name"]) != p["Value"]]


def index(backend) -> bytes:
    """The run browser's front page, read through the backend's API operations."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Local SageMaker</title>"
             f"{_STYLE}</head><body><h1>Local SageMaker</h1>"]
    endpoints = _all(backend.list_endpoints, "Endpoints", sort_order="Ascending")
    parts.append("<h2>Endpoints</h2>" + _table(["name", "status", "config", "updated", ""], [
        [escape(e["EndpointName"]), _status(e["EndpointStatus"]),
         escape(backend.describe_endpoint(e["EndpointName"])["EndpointConfigName"]),
         _when(e["LastModifiedTime"]),
         f'<a href="/draw/{escape(e["EndpointName"])}">draw a digit</a>']
        for e in endpoints]))
    executions = [e for p in _all(backend.list_pipelines, "PipelineSummaries")
                  for e in _all(backend.list_pipeline_executions, "PipelineExecutionSummaries",
                                pipeline_name=p["PipelineName"])]
    executions.sort(key=lambda e: e["StartTime"], reverse=True)
    rows = []
    for e in executions[:50]:
        arn = e["PipelineExecutionArn"]
        steps = _all(backend.list_pipeline_execution_steps, "PipelineExecutionSteps",
                     pipeline_execution_arn=arn, sort_order="Ascending")
        rows.append([
            escape(arn.split("/")[-1]), _status(e["PipelineExecutionStatus"]),
            _when(e["StartTime"]),
            escape(", ".join(f"{p['Name']}={p['Value']}"
                             for p in _changed_parameters(backend, arn))),
            "<br>".join(f"{escape(s['StepName'])}: {_status(s['StepStatus'])}" for s in steps),
            escape(e.get("PipelineExecutionFailureReason", ""))])
    parts.append("<h2>Executions</h2>" + _table(
        ["execution", "status", "started", "parameters", "steps", "reason"], rows))
    packages = _all(backend.list_model_packages, "ModelPackageSummaryList")
    parts.append("<h2>Model registry</h2>" + _table(
        ["group", "version", "approval", "created", "metrics"], [
            [escape(p["ModelPackageGroupName"]), str(p["ModelPackageVersion"]),
             _status(p["ModelApprovalStatus"]), _when(p["CreationTime"]),
             escape(json.dumps(backend.describe_model_package(p["ModelPackageArn"])
                               .get("ModelMetrics", {}).get("ModelQuality", {})
                               .get("Statistics", {}).get("S3Uri", "")))]
            for p in packages]))
    parts.append("</body></html>")
    return "".join(parts).encode("utf-8")


def draw(endpoint) -> bytes:
    return drawpad.page(endpoint)
