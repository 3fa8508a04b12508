"""Step caching (a step's CacheConfig), as SageMaker Pipelines does it.

An enabled Processing or Training step whose cache key attributes (AWS's defaults per step type:
what the job runs and reads, not where it writes or what it is called) equal those of a
Succeeded run of the same step in an earlier execution of the same pipeline, ended within
ExpireAfter, is not run again: it takes that run's properties and metadata (its job, its
outputs), the newest such run's, and says so (CacheHitResult). Any change reruns it.
"""
import json
import re
import time
from typing import Optional

KEY_ATTRIBUTES = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": ("AlgorithmSpecification", "CheckpointConfig", "DebugHookConfig",
                 "DebugRuleConfigurations", "Environment", "HyperParameters",
                 "InputDataConfig"),
}
_UNITS = {"Y": 365 * 86400, "M": 30 * 86400, "W": 7 * 86400, "D": 86400}
_TIME_UNITS = {"H": 3600, "M": 60, "S": 1}


def enabled(spec: dict) -> bool:
    return bool((spec.get("CacheConfig") or {}).get("Enabled")) and spec["Type"] in KEY_ATTRIBUTES


def cache_key(spec: dict, arguments: dict) -> str:
    """What a cached run must have had: the step type's key attributes, as resolved."""
    return json.dumps({name: arguments.get(name) for name in KEY_ATTRIBUTES[spec["Type"]]},
                      sort_keys=True)


def expire_seconds(text: Optional[str]) -> float:
    """ExpireAfter, an ISO 8601 duration ("P30D", "PT1H"), or AWS's short forms ("30d",
    "T16m", "30dT5h"); none: no limit."""
    if not text:
        return float("inf")
    match = re.fullmatch(r"P?((?:\d+[YMWD])*)(?:T((?:\d+[HMS])+))?", text.upper())
    if not match or not (match.group(1) or match.group(2)):
        raise ValueError(f"ExpireAfter {text!r} is not an ISO 8601 duration")
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([YMWD])", match.group(1)))
    seconds += sum(int(n) * _TIME_UNITS[u]
                   for n, u in re.findall(r"(\d+)([HMS])", match.group(2) or ""))
    return float(seconds)


def find_hit(backend, execution_arn: str, spec: dict, key: str) -> Optional[dict]:
    """The newest Succeeded run of this step with this key in another execution of the same
    pipeline, ended within ExpireAfter; None if there is none."""
    earliest = time.time() - expire_seconds(spec["CacheConfig"].get("ExpireAfter"))
    runs = [record for other in backend.sibling_executions(execution_arn)
            for record in backend.step_records(other)
            if record["StepName"] == spec["Name"] and record["StepStatus"] == "Succeeded"
            and record.get("CacheKey") == key and record.get("EndTime", 0) >= earliest]
    return max(runs, key=lambda record: record["EndTime"], default=None)
