"""The definition's expression language, pure: Get (Parameters, Execution, Steps), Std:Join,
Std:JsonGet and conditions. Reading a property file is the caller's (``read_json``)."""
import json
import re
import time
from datetime import datetime, timezone
from typing import Callable

from pipeline.config import render_value

_TOKEN = re.compile(r"\.?([A-Za-z0-9_]+)|\[(?:'([^']*)'|\"([^\"]*)\"|(\d+))\]")


class StepFailed(Exception):
    """A step failed; the message becomes its FailureReason."""


def render(value) -> str:
    """How a value reads inside a string (Std:Join, container arguments)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return render_value(value)


def json_path(document, path):
    """The subset of JSONPath that JsonGet uses: a.b[0].c"""
    current = document
    for match in _TOKEN.finditer(path.lstrip("$").lstrip(".")):
        key = match.group(1) or match.group(2) or match.group(3)
        try:
            current = current[int(match.group(4))] if match.group(4) else current[key]
        except (KeyError, IndexError, TypeError):
            raise StepFailed(f"JsonGet: path {path!r} not found in the property file")
    return current


class PropertyFileRef:
    def __init__(self, step_name, file_name):
        self.step_name, self.file_name = step_name, file_name


class Context:
    """What expressions can read while one execution runs: its record (ARN, start, parameter
    values), the step specs, the properties of the steps done so far, and a reader of S3 JSON
    documents (``read_json(uri)``, raising OSError or ValueError)."""

    def __init__(self, execution: dict, step_specs: dict, properties: dict,
                 read_json: Callable[[str], object]):
        self.execution, self.step_specs, self.properties, self.read_json = (
            execution, step_specs, properties, read_json)

    def get(self, path):
        head, _, rest = path.partition(".")
        if head == "Parameters":
            if rest not in self.execution["Parameters"]:
                raise StepFailed(f"unknown parameter {rest!r}")
            return self.execution["Parameters"][rest]
        if head == "Execution":
            arn = self.execution["PipelineExecutionArn"]
            values = {
                "PipelineExecutionId": arn.split("/")[-1], "PipelineExecutionArn": arn,
                "PipelineName": arn.split("/")[1], "PipelineArn": self.execution["PipelineArn"],
                "StartDateTime": _iso(self.execution["CreationTime"]),
                "CurrentDateTime": _iso(time.time())}
            if rest not in values:
                raise StepFailed(f"unknown execution variable {rest!r}")
            return values[rest]
        if head == "Steps":
            return self._step_property(rest)
        raise StepFailed(f"cannot Get {path!r}")

    def _step_property(self, path):
        step_name, _, rest = path.partition(".")  # step names may hold hyphens
        tokens = list(_TOKEN.finditer(rest))
        if len(tokens) >= 2 and tokens[0].group(1) == "PropertyFiles":
            return PropertyFileRef(step_name, tokens[1].group(1))
        current = self.properties.get(step_name)
        if current is None:
            raise StepFailed(f"step {step_name!r} has no properties yet")
        for match in tokens:
            if match.group(1):
                key = match.group(1)
                if not isinstance(current, dict) or key not in current:
                    raise StepFailed(f"property {path!r} not found")
                current = current[key]
            elif match.group(4):
                current = current[int(match.group(4))]
            else:
                key = match.group(2) or match.group(3)
                if isinstance(current, dict):
                    current = current[key]
                else:  # a list addressed by name: Outputs['train'] -> OutputName == 'train'
                    current = next((item for item in current if key in [
                        v for k, v in item.items() if k.endswith("Name")]), None)
                    if current is None:
                        raise StepFailed(f"property {path!r} not found")
        return current

    def resolve(self, value):
        if isinstance(value, dict):
            if set(value) == {"Get"}:
                return self.get(value["Get"])
            if set(value) == {"Std:Join"}:
                spec = value["Std:Join"]
                return spec.get("On", "").join(render(self.resolve(v)) for v in spec["Values"])
            if set(value) == {"Std:JsonGet"}:
                return self.json_get(value["Std:JsonGet"])
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def json_get(self, spec):
        if "S3Uri" in spec:
            uri = render(self.resolve(spec["S3Uri"]))
        else:
            ref = self.resolve(spec["PropertyFile"])
            if not isinstance(ref, PropertyFileRef):
                raise StepFailed("JsonGet needs a PropertyFile reference")
            declared = self.step_specs[ref.step_name].get("PropertyFiles", [])
            pf = next((p for p in declared if p["PropertyFileName"] == ref.file_name), None)
            if pf is None:
                raise StepFailed(f"step {ref.step_name!r} declares no property file "
                                 f"{ref.file_name!r}")
            base = self._step_property(
                f"{ref.step_name}.ProcessingOutputConfig.Outputs['{pf['OutputName']}']"
                ".S3Output.S3Uri")
            uri = f"{base.rstrip('/')}/{pf['FilePath']}"
        try:
            document = self.read_json(uri)
        except (OSError, ValueError) as err:
            raise StepFailed(f"JsonGet: cannot read {uri}: {err}")
        return json_path(document, spec["Path"])

    def condition(self, cond) -> bool:
        kind = cond["Type"]
        if kind == "Not":
            return not self.condition(cond["Expression"])
        if kind == "Or":
            return any(self.condition(c) for c in cond["Conditions"])
        if kind == "In":
            query = self.resolve(cond["QueryValue"])
            return any(_equal(query, self.resolve(v)) for v in cond["Values"])
        left, right = self.resolve(cond["LeftValue"]), self.resolve(cond["RightValue"])
        if kind == "Equals":
            return _equal(left, right)
        if kind == "NotEquals":
            return not _equal(left, right)
        try:
            left, right = float(left), float(right)
        except (TypeError, ValueError):
            raise StepFailed(f"{kind} needs numbers, got {left!r} and {right!r}")
        return {"GreaterThan": left > right, "GreaterThanOrEqualTo": left >= right,
                "LessThan": left < right, "LessThanOrEqualTo": left <= right}[kind]


def _equal(a, b):
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return render(a) == render(b)


def _iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
