"""The DAG of a definition: its steps (condition branches included), their dependencies from
data references and DependsOn, the checks a definition must pass, and parameter values."""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

from pipeline.config import parse_bool
from pipeline.local.workflow import retry

SUPPORTED_TYPES = {"Processing", "Training", "Tuning", "RegisterModel", "Model", "Condition",
                   "Fail"}
STEP_NAME = re.compile(r"[A-Za-z0-9\-_]{1,64}")
# Sizes of a reference the local service takes (the schema sets none; a path this long is no
# pipeline's and would only cost time): a Get's dotted path, a JsonGet's JSON path.
MAX_GET_SEGMENTS, MAX_PATH_LENGTH = 64, 1024


class DefinitionError(Exception):
    """The definition cannot run (unknown step type, bad reference, cycle)."""


@dataclass(frozen=True)
class Branch:
    """Where a step sits in a condition: the condition step, and which of its branches."""

    condition: str
    if_true: bool  # IfSteps (True) or ElseSteps (False)

    def taken(self, outcome: bool) -> bool:
        return outcome == self.if_true


@dataclass(frozen=True)
class FlatStep:
    """A step of the definition, condition branches flattened: its spec as the definition
    gives it, and the branch it sits in (None: the top level)."""

    name: str
    spec: dict
    branch: Optional[Branch] = None

    @property
    def type(self) -> str:
        return self.spec["Type"]


def flatten(definition) -> Dict[str, FlatStep]:
    """Every step by name, in definition order (a condition's branches after it)."""
    steps: Dict[str, FlatStep] = {}

    def add(step, branch):
        if not isinstance(step, dict):
            raise DefinitionError(f"a step is an object, not {type(step).__name__}")
        name = step.get("Name")
        if not isinstance(name, str) or not STEP_NAME.fullmatch(name):
            raise DefinitionError(f"step Name {name!r} must be 1 to 64 letters, digits, - or _ "
                                  "(the pattern of AWS's definition schema)")
        depends = step.get("DependsOn", [])
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise DefinitionError(f"step {name!r}: DependsOn must be a list of step names, "
                                  f"not {depends!r}")
        if name in steps:
            raise DefinitionError(f"step name {name!r} is used twice")
        if step.get("Type") not in SUPPORTED_TYPES:
            raise DefinitionError(f"step {name!r} has type {step.get('Type')!r}; the local "
                                  f"service runs {', '.join(sorted(SUPPORTED_TYPES))}")
        steps[name] = FlatStep(name, step, branch)
        if step["Type"] == "Condition":
            for key, if_true in (("IfSteps", True), ("ElseSteps", False)):
                for child in step.get("Arguments", {}).get(key, []):
                    add(child, Branch(name, if_true))

    for step in definition.get("Steps", []):
        add(step, None)
    return steps


def references(value) -> set:
    """Step names a value reads from (Get Steps.X..., property files); DefinitionError for a
    reference past the sizes above."""
    found = set()
    if isinstance(value, dict):
        get = value.get("Get")
        if isinstance(get, str) and (get.count(".") >= MAX_GET_SEGMENTS
                                     or len(get) > MAX_PATH_LENGTH):
            raise DefinitionError(f"a Get path may have at most {MAX_GET_SEGMENTS} segments and "
                                  f"{MAX_PATH_LENGTH} characters; got {get[:60]!r}...")
        path = value.get("Std:JsonGet", {}).get("Path") if isinstance(
            value.get("Std:JsonGet"), dict) else None
        if isinstance(path, str) and len(path) > MAX_PATH_LENGTH:
            raise DefinitionError(f"a JsonGet Path may have at most {MAX_PATH_LENGTH} "
                                  f"characters; got {len(path)}")
        if isinstance(get, str) and get.startswith("Steps."):
            found.add(get.split(".")[1].split("[")[0])
        for key, item in value.items():
            if key not in ("IfSteps", "ElseSteps"):
                found |= references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


def ancestors(names, deps: Dict[str, set]) -> set:
    """Every step the given steps depend on, directly or not."""
    found: set = set()
    todo = list(names)
    while todo:
        for parent in deps[todo.pop()] - found:
            found.add(parent)
            todo.append(parent)
    return found


def dependencies(steps: Dict[str, FlatStep]) -> Dict[str, set]:
    """Each step's dependencies: the steps its arguments read, its DependsOn, and the condition
    whose branch it sits in."""
    deps, known = {}, set(steps)
    for name, entry in steps.items():
        step = entry.spec
        own = references(step.get("Arguments", {})) | set(step.get("DependsOn", []))
        if entry.branch:
            own.add(entry.branch.condition)
        unknown = own - known
        if unknown:
            raise DefinitionError(f"step {name!r} refers to unknown step(s) {sorted(unknown)}")
        if name in own:
            raise DefinitionError(f"step {name!r} refers to itself")
        deps[name] = own
    return deps


CONDITION_TYPES = {"Equals", "NotEquals", "GreaterThan", "GreaterThanOrEqualTo", "LessThan",
                   "LessThanOrEqualTo", "In", "Not", "Or"}
# Arguments a step of each type cannot run without (the rest is checked when it runs, as the
# API it calls checks it).
REQUIRED_ARGUMENTS = {"Processing": ("AppSpecification", "ProcessingResources"),
                      "Training": ("AlgorithmSpecification", "ResourceConfig",
                                   "OutputDataConfig"),
                      "Tuning": ("HyperParameterTuningJobConfig",),
                      "RegisterModel": ("InferenceSpecification",),
                      "Condition": ("Conditions",), "Fail": (), "Model": ()}


def _check_condition(step_name, condition):
    if not isinstance(condition, dict) or condition.get("Type") not in CONDITION_TYPES:
        kind = condition.get("Type") if isinstance(condition, dict) else condition
        raise DefinitionError(f"step {step_name!r} has a condition of unknown type {kind!r}; "
                              f"known: {', '.join(sorted(CONDITION_TYPES))}")
    inner = [condition.get("Expression")] if condition["Type"] == "Not" else \
        condition.get("Conditions", []) if condition["Type"] == "Or" else []
    for nested in inner:
        _check_condition(step_name, nested)


def _check_step(name, step):
    arguments = step.get("Arguments", {})
    if not isinstance(arguments, dict):
        raise DefinitionError(f"step {name!r} has Arguments that are not an object")
    missing = [a for a in REQUIRED_ARGUMENTS[step["Type"]] if a not in arguments]
    if missing:
        raise DefinitionError(f"{step['Type']} step {name!r} lacks {', '.join(missing)} in "
                              "its Arguments")
    problems = retry.check(name, step)
    if problems:
        raise DefinitionError("; ".join(problems))
    if step["Type"] == "Condition":
        if not isinstance(arguments["Conditions"], list):
            raise DefinitionError(f"step {name!r}: Conditions must be a list")
        for condition in arguments["Conditions"]:
            _check_condition(name, condition)


def check_definition(definition) -> List[str]:
    """The steps in an order that respects their dependencies (Kahn's algorithm: linear in
    steps and edges); DefinitionError unless the local service can run this definition."""
    if not isinstance(definition, dict) or not isinstance(definition.get("Steps"), list):
        raise DefinitionError("a definition is an object with a Steps list")
    steps = flatten(definition)
    for name, entry in steps.items():
        _check_step(name, entry.spec)
    deps = dependencies(steps)
    waiting = {name: len(d) for name, d in deps.items()}
    followers: Dict[str, List[str]] = {name: [] for name in deps}
    for name, d in deps.items():
        for dep in d:
            followers[dep].append(name)
    order = [name for name, count in waiting.items() if count == 0]
    for name in order:  # grows while it is walked
        for follower in followers[name]:
            waiting[follower] -= 1
            if waiting[follower] == 0:
                order.append(follower)
    if len(order) < len(deps):
        raise DefinitionError(f"steps depend on each other in a cycle: "
                              f"{sorted(set(deps) - set(order))[:20]}")
    for spec in definition.get("Parameters", []):
        if not isinstance(spec, dict):
            raise DefinitionError(f"parameter {spec!r} is not an object")
        if spec.get("Type") not in ("String", "Integer", "Float", "Boolean"):
            raise DefinitionError(f"parameter {spec.get('Name')!r} has unknown type "
                                  f"{spec.get('Type')!r}")
        if "DefaultValue" in spec:
            try:
                coerce_parameter(spec, spec["DefaultValue"])
            except (ValueError, KeyError) as err:
                raise DefinitionError(f"default value: {err}")
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
