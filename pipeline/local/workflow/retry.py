"""A step's ``RetryPolicies``, as SageMaker Pipelines documents them (docs.aws.amazon.com/
sagemaker/latest/dg/pipelines-retry-policy.html): each policy names exception types and retries
a failed attempt after ``IntervalSeconds``, multiplied by ``BackoffRate`` for each retry it made,
until ``MaxAttempts`` retries or ``ExpireAfterMin`` minutes after the step's first attempt.

What the local service's faults count as (``Outcome.exception_type``): a write the service's
own store refuses while running a step is ``Step.SERVICE_FAULT``; a job that failed because the
service could not stage or collect its data (a full disk) ``SageMaker.JOB_INTERNAL_ERROR``
(FailureReason "InternalServerError: ..."); a job whose processes could not be started for
lack of memory or process slots ``SageMaker.CAPACITY_ERROR`` ("CapacityError: ..."). An error of
the job's own code or inputs ("ClientError", "AlgorithmError") is never retried.
"""
import errno
import math
import time
from typing import Dict, List, Optional, Tuple

SERVICE_FAULT = "Step.SERVICE_FAULT"
THROTTLING = "Step.THROTTLING"
JOB_INTERNAL_ERROR = "SageMaker.JOB_INTERNAL_ERROR"
CAPACITY_ERROR = "SageMaker.CAPACITY_ERROR"
RESOURCE_LIMIT = "SageMaker.RESOURCE_LIMIT"
EXCEPTION_TYPES = (SERVICE_FAULT, THROTTLING, JOB_INTERNAL_ERROR, CAPACITY_ERROR, RESOURCE_LIMIT)
# The step types AWS lets retry, of those this service runs.
STEP_TYPES = ("Processing", "Training", "RegisterModel", "Model")
# The limits the SageMaker SDK enforces and AWS documents.
MAX_ATTEMPTS, MAX_EXPIRE_AFTER_MIN, MAX_INTERVAL_SECONDS = 20, 14400, 43200

# errno of a staging error -> (the job's FailureReason prefix, the exception type it is)
_INTERNAL = ("InternalServerError", JOB_INTERNAL_ERROR)
_CAPACITY = ("CapacityError", CAPACITY_ERROR)
_STAGING_FAULTS = {errno.ENOSPC: _INTERNAL, errno.EDQUOT: _INTERNAL, errno.EIO: _INTERNAL,
                   errno.EROFS: _INTERNAL, errno.EAGAIN: _CAPACITY, errno.ENOMEM: _CAPACITY}
_ERROR_CODES = {"ThrottlingException": THROTTLING, "ResourceLimitExceeded": RESOURCE_LIMIT}


def staging_failure(err: Exception) -> Tuple[str, Optional[str]]:
    """(a job's FailureReason, its exception type or None) for an error met while staging,
    starting or collecting it: the service's own fault when the machine refused, the
    request's otherwise (a ClientError, never retried)."""
    code = getattr(err, "errno", None)
    prefix, exception_type = _STAGING_FAULTS[code] if code in _STAGING_FAULTS else \
        ("ClientError", None)
    return f"{prefix}: {err}", exception_type


def error_exception_type(code: str) -> Optional[str]:
    """The exception type of an API error the service answered a step with."""
    return _ERROR_CODES.get(code)


def check(step_name: str, step: dict) -> List[str]:
    """The problems of a step's RetryPolicies (empty when it can run with them)."""
    policies = step.get("RetryPolicies")
    if policies is None:
        return []
    if step.get("Type") not in STEP_TYPES:
        return [f"step {step_name!r}: RetryPolicies are supported on {', '.join(STEP_TYPES)} "
                f"steps, not {step.get('Type')}"]
    if not isinstance(policies, list):
        return [f"step {step_name!r}: RetryPolicies must be a list"]
    problems = []
    for number, policy in enumerate(policies, 1):
        where = f"step {step_name!r}, retry policy {number}"
        if not isinstance(policy, dict):
            problems.append(f"{where} is not an object")
            continue
        unknown = set(policy) - {"ExceptionType", "IntervalSeconds", "BackoffRate",
                                 "MaxAttempts", "ExpireAfterMin"}
        if unknown:
            problems.append(f"{where} has unknown members {sorted(unknown)}")
        types = policy.get("ExceptionType")
        if not isinstance(types, list) or not types or \
                any(t not in EXCEPTION_TYPES for t in types):
            problems.append(f"{where}: ExceptionType must be a non-empty list of "
                            f"{', '.join(EXCEPTION_TYPES)}; got {types!r}")
        for member, low, high in (("IntervalSeconds", 0, MAX_INTERVAL_SECONDS),
                                  ("MaxAttempts", 0, MAX_ATTEMPTS),
                                  ("ExpireAfterMin", 0, MAX_EXPIRE_AFTER_MIN)):
            value = policy.get(member)
            if value is not None and (type(value) is not int or not low <= value <= high):
                problems.append(f"{where}: {member} must be an integer from {low} to {high}; "
                                f"got {value!r}")
        rate = policy.get("BackoffRate")
        if rate is not None and (type(rate) not in (int, float) or not math.isfinite(rate)
                                 or rate < 0):
            problems.append(f"{where}: BackoffRate must be a finite number >= 0; got {rate!r}")
        if ("MaxAttempts" in policy) == ("ExpireAfterMin" in policy):
            problems.append(f"{where}: give exactly one of MaxAttempts and ExpireAfterMin")
    return problems


class RetryState:
    """The retries one step made, per policy; ``delay`` says whether (and after how long) a
    failed attempt is tried again."""

    def __init__(self, step: dict, clock=time.time):
        self.policies = step.get("RetryPolicies") or []
        self.clock = clock
        self.first_attempt = clock()
        self.retries: Dict[int, int] = {}

    def delay(self, exception_type: Optional[str]) -> Optional[float]:
        """Seconds to wait before the next attempt, or None: not retried."""
        matching = [(n, p) for n, p in enumerate(self.policies)
                    if exception_type in p["ExceptionType"]]
        if not matching:
            return None
        number, policy = matching[0]
        done = self.retries.get(number, 0)
        try:  # a large rate makes the wait longer than any interval a policy may give
            wait = min(policy.get("IntervalSeconds", 1) * policy.get("BackoffRate", 2.0) ** done,
                       float(MAX_INTERVAL_SECONDS))
        except OverflowError:
            wait = float(MAX_INTERVAL_SECONDS)
        if "MaxAttempts" in policy and done >= policy["MaxAttempts"]:
            return None
        if "ExpireAfterMin" in policy and \
                self.clock() + wait - self.first_attempt >= policy["ExpireAfterMin"] * 60:
            return None
        self.retries[number] = done + 1
        return wait
