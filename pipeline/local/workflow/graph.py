"""The DAG of a definition: its steps (condition branches included), their dependencies from
data references and DependsOn, the checks a definition must pass, and parameter values."""
from typing import Dict, List

from pipeline.config import parse_bool

SUPPORTED_TYPES = {"Processing", "Training", "RegisterModel", "Model", "Condition", "Fail"}


class DefinitionError(Exception):
    """The definition cannot run (unknown step type, bad reference, cycle)."""


def flatten(definition) -> Dict[str, dict]:
    """name -> {"step", "owner": (condition, "IfSteps"|"ElseSteps") or None}, in order."""
    steps = {}

    def add(step, owner):
        name = step.get("Name")
        if not name:
            raise DefinitionError("a step has no Name")
        if name in steps:
            raise DefinitionError(f"step name {name!r} is used twice")
        if step.get("Type") not in SUPPORTED_TYPES:
            raise DefinitionError(f"step {name!r} has type {step.get('Type')!r}; the local "
                                  f"service runs {', '.join(sorted(SUPPORTED_TYPES))}")
        steps[name] = {"step": step, "owner": owner}
        if step["Type"] == "Condition":
            for branch in ("IfSteps", "ElseSteps"):
                for child in step.get("Arguments", {}).get(branch, []):
                    add(child, (name, branch))

    for step in definition.get("Steps", []):
        add(step, None)
    return steps


def references(value) -> set:
    """Step names a value reads from (Get Steps.X..., property files)."""
    found = set()
    if isinstance(value, dict):
        get = value.get("Get")
        if isinstance(get, str) and get.startswith("Steps."):
            found.add(get.split(".")[1].split("[")[0])
        for key, item in value.items():
            if key not in ("IfSteps", "ElseSteps"):
                found |= references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


def dependencies(steps) -> Dict[str, set]:
    deps = {}
    for name, entry in steps.items():
        step = entry["step"]
        own = references(step.get("Arguments", {})) | set(step.get("DependsOn", []))
        if entry["owner"]:
            own.add(entry["owner"][0])
        unknown = own - set(steps)
        if unknown:
            raise DefinitionError(f"step {name!r} refers to unknown step(s) {sorted(unknown)}")
        if name in own:
            raise DefinitionError(f"step {name!r} refers to itself")
        deps[name] = own
    return deps


def check_definition(definition) -> List[str]:
    """The steps in an order that respects their dependencies; DefinitionError unless the
    local service can run this definition."""
    if not isinstance(definition, dict) or not isinstance(definition.get("Steps"), list):
        raise DefinitionError("a definition is an object with a Steps list")
    deps = dependencies(flatten(definition))
    order, done = [], set()
    while len(done) < len(deps):
        ready = [n for n, d in deps.items() if n not in done and d <= done]
        if not ready:
            raise DefinitionError(f"steps depend on each other in a cycle: "
                                  f"{sorted(set(deps) - done)}")
        done |= set(ready)
        order += ready
    for spec in definition.get("Parameters", []):
        if spec.get("Type") not in ("String", "Integer", "Float", "Boolean"):
            raise DefinitionError(f"parameter {spec.get('Name')!r} has unknown type "
                                  f"{spec.get('Type')!r}")
    return order


def coerce_parameter(spec, raw):
    """A parameter's value (given as a string or its default) as its declared type."""
    kind, name = spec["Type"], spec["Name"]
    try:
        if kind == "Integer":
            return int(raw)
        if kind == "Float":
            return float(raw)
        if kind == "Boolean":
            return parse_bool(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ValueError(f"Parameter {name} of type {kind} cannot take the value {raw!r}")
