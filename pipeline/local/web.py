"""The local run browser: pipelines, executions and their steps, the registry, endpoints.

Plain server-side HTML (no build step), in the same terms as SageMaker Studio's pages.
"""
import json
import time
from html import escape

from pipeline import drawpad

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


def index(store) -> bytes:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Local SageMaker</title>"
             f"{_STYLE}</head><body><h1>Local SageMaker</h1>"]
    parts.append("<h2>Endpoints</h2>" + _table(["name", "status", "config", "updated", ""], [
        [escape(e["EndpointName"]), _status(e["EndpointStatus"]), escape(e["EndpointConfigName"]),
         _when(e["LastModifiedTime"]),
         f'<a href="/draw/{escape(e["EndpointName"])}">draw a digit</a>']
        for e in store.list("endpoint")]))
    steps = {}
    for step in store.list("step"):
        steps.setdefault(step["ExecutionArn"], []).append(step)
    executions = sorted(store.list("execution"), key=lambda e: e["CreationTime"], reverse=True)
    parts.append("<h2>Executions</h2>" + _table(
        ["execution", "status", "started", "parameters", "steps", "reason"], [
            [escape(e["PipelineExecutionArn"].split("/")[-1]), _status(e["PipelineExecutionStatus"]),
             _when(e["CreationTime"]),
             escape(", ".join(f"{p['Name']}={p['Value']}" for p in e.get("ParametersGiven", []))),
             "<br>".join(f"{escape(s['StepName'])}: {_status(s['StepStatus'])}"
                         for s in sorted(steps.get(e["PipelineExecutionArn"], []),
                                         key=lambda s: s["StartTime"])),
             escape(e.get("FailureReason", ""))]
            for e in executions[:50]]))
    packages = store.list("model-package")
    parts.append("<h2>Model registry</h2>" + _table(
        ["group", "version", "approval", "created", "metrics"], [
            [escape(p["ModelPackageGroupName"]), str(p["ModelPackageVersion"]),
             _status(p["ModelApprovalStatus"]), _when(p["CreationTime"]),
             escape(json.dumps(p.get("ModelMetrics", {}).get("ModelQuality", {})
                               .get("Statistics", {}).get("S3Uri", "")))]
            for p in reversed(packages)]))
    parts.append("</body></html>")
    return "".join(parts).encode("utf-8")


def draw(endpoint) -> bytes:
    return drawpad.page(endpoint)
