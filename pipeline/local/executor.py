"""Runs a stored pipeline definition: DAG order, expressions, conditions, and step handlers.

The executor knows the definition language (Get, Std:Join, Std:JsonGet, conditions, DependsOn,
condition branches); what a step *does* is behind a small handler per step type (Processing,
Training, RegisterModel, Model, Condition, Fail), in the manner of kfp's local runner.
"""
import json
import re
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import Dict

from pipeline.local.jobs import JobResult
from pipeline.local.models import ServiceError

SUPPORTED_TYPES = {"Processing", "Training", "RegisterModel", "Model", "Condition", "Fail"}
FINAL = {"Succeeded", "Failed", "Stopped"}
_TOKEN = re.compile(r"\.?([A-Za-z0-9_]+)|\[(?:'([^']*)'|\"([^\"]*)\"|(\d+))\]")


class DefinitionError(Exception):
    """The definition cannot run (unknown step type, bad reference, cycle)."""


class StepFailed(Exception):
    """A step failed; the message becomes its FailureReason."""


class Stopped(Exception):
    """StopPipelineExecution arrived while the step ran."""


# ------------------------------------------------------------------ the DAG
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


def check_definition(definition):
    """Raise DefinitionError unless the local service can run this definition."""
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
    kind, name = spec["Type"], spec["Name"]
    try:
        if kind == "Integer":
            return int(raw)
        if kind == "Float":
            return float(raw)
        if kind == "Boolean":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() not in ("true", "false"):
                raise ValueError
            return str(raw).lower() == "true"
        return str(raw)
    except (TypeError, ValueError):
        raise ValueError(f"Parameter {name} of type {kind} cannot take the value {raw!r}")


def render(value) -> str:
    """How a value reads inside a string (Std:Join, container arguments)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


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


# --------------------------------------------------------------- evaluation
class Context:
    """What expressions can read while one execution runs."""

    def __init__(self, execution, step_specs, properties, s3):
        self.execution, self.step_specs, self.properties, self.s3 = (
            execution, step_specs, properties, s3)

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
            with open(self.s3.path_of(uri)) as handle:
                document = json.load(handle)
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


# ---------------------------------------------------------------- executor
class Executor:
    def __init__(self, backend, jobs, s3):
        self.backend, self.jobs, self.s3 = backend, jobs, s3
        self.store = backend.store
        self._stop: Dict[str, threading.Event] = {}
        self._current_job: Dict[str, str] = {}
        self.handlers = {"Processing": self._processing, "Training": self._training,
                         "RegisterModel": self._register_model, "Model": self._model,
                         "Condition": self._condition, "Fail": self._fail}

    # --- lifecycle ---
    def start(self, arn):
        """Run (or, for a retry, resume) an execution in the background."""
        self._stop[arn] = threading.Event()
        threading.Thread(target=self._run_safely, args=(arn,), daemon=True,
                         name=f"execution-{arn.split('/')[-1]}").start()

    def stop(self, arn):
        if arn in self._stop:
            self._stop[arn].set()
        job = self._current_job.get(arn)
        if job:
            self.jobs.stop(job)

    def recover(self):
        """After a restart: what was running was interrupted; it can be retried."""
        reason = "interrupted: the local SageMaker service stopped while this ran; retry it"
        for step in self.store.list("step"):
            if step["StepStatus"] in ("Starting", "Executing", "Stopping"):
                self.store.update("step", f"{step['ExecutionArn']}|{step['StepName']}",
                                  StepStatus="Failed", FailureReason=reason, EndTime=time.time())
        for kind, status_key, name_key in (("processing-job", "ProcessingJobStatus",
                                            "ProcessingJobName"),
                                           ("training-job", "TrainingJobStatus",
                                            "TrainingJobName")):
            for job in self.store.list(kind):
                if job[status_key] in ("InProgress", "Stopping"):
                    self.store.update(kind, job[name_key], **{status_key: "Failed"},
                                      FailureReason=reason, LastModifiedTime=time.time())
        for execution in self.store.list("execution"):
            if execution["PipelineExecutionStatus"] in ("Executing", "Stopping"):
                self.store.update("execution", execution["PipelineExecutionArn"],
                                  PipelineExecutionStatus="Failed", FailureReason=reason,
                                  LastModifiedTime=time.time())

    # --- running ---
    def _run_safely(self, arn):
        try:
            self._run(arn)
        except Exception as err:  # a bug must not leave the execution Executing forever
            traceback.print_exc()
            self._finish(arn, "Failed", f"internal error in the local service: {err}")

    def _finish(self, arn, status, reason=None):
        self.store.update("execution", arn, PipelineExecutionStatus=status,
                          FailureReason=reason, LastModifiedTime=time.time())

    def _run(self, arn):
        execution = self.store.get("execution", arn)
        definition = json.loads(execution["PipelineDefinition"])
        steps = flatten(definition)
        deps = dependencies(steps)
        records = {s["StepName"]: s for s in self.store.list("step", prefix=f"{arn}|")}
        # A retry keeps what succeeded, outputs and condition outcomes included.
        properties = {n: r.get("Properties", {}) for n, r in records.items()
                      if r["StepStatus"] == "Succeeded"}
        ctx = Context(execution, {n: e["step"] for n, e in steps.items()}, properties, self.s3)
        done, skipped, failure = set(properties), set(), None
        while failure is None:
            ready = [n for n in steps if n not in done | skipped and deps[n] <= done | skipped]
            if not ready:
                break
            name = ready[0]
            entry = steps[name]
            owner = entry["owner"]
            if deps[name] & skipped or (owner and ctx.properties[owner[0]]["Outcome"] !=
                                        (owner[1] == "IfSteps")):
                skipped.add(name)
                continue
            if self._stop[arn].is_set():
                self._finish(arn, "Stopped", "stopped by StopPipelineExecution")
                return
            status, reason = self._run_step(arn, ctx, entry["step"], records.get(name))
            if status == "Succeeded":
                done.add(name)
            elif status == "Stopped":
                self._finish(arn, "Stopped", "stopped by StopPipelineExecution")
                return
            else:
                failure = reason
        if failure is not None:
            self._finish(arn, "Failed", failure)
        else:
            self._finish(arn, "Succeeded")

    def _run_step(self, arn, ctx, step, previous):
        name, key = step["Name"], f"{arn}|{step['Name']}"
        attempt = (previous or {}).get("AttemptCount", 0) + 1
        self.store.put("step", key, {
            "ExecutionArn": arn, "StepName": name, "StepDisplayName": step.get("DisplayName",
                                                                              name),
            "StepDescription": step.get("Description", ""), "StartTime": time.time(),
            "StepStatus": "Executing", "AttemptCount": attempt, "Metadata": {},
            "Properties": {}})
        try:
            try:
                props, metadata = self.handlers[step["Type"]](arn, ctx, step, attempt, key)
            except ServiceError as err:  # the registry or hosting refused the request
                raise StepFailed(err.message)
        except Stopped:
            self.store.update("step", key, StepStatus="Stopped", EndTime=time.time())
            return "Stopped", ""
        except StepFailed as err:
            self.store.update("step", key, StepStatus="Failed", FailureReason=str(err),
                              EndTime=time.time())
            return "Failed", str(err) if step["Type"] == "Fail" else \
                f"Step {name} failed: {err}"
        ctx.properties[name] = props
        self.store.update("step", key, StepStatus="Succeeded", EndTime=time.time(),
                          Metadata=metadata, Properties=props)
        return "Succeeded", ""

    def _job_name(self, arn, step, attempt):
        base = re.sub(r"[^a-zA-Z0-9-]", "-", f"pipelines-{arn.split('/')[-1]}-{step['Name']}")
        suffix = f"-{attempt}" if attempt > 1 else ""
        return (base[:63 - len(suffix)] + suffix).lower()

    # --- handlers: (arn, ctx, step, attempt, record key) -> (properties, metadata) ---
    _JOB_KINDS = {"ProcessingJob": "processing-job", "TrainingJob": "training-job"}

    def _start_job(self, arn, step, attempt, key, job_type, request, fields):
        """Record a job as InProgress and link it to its step: (name, ARN, start time)."""
        name = self._job_name(arn, step, attempt)
        job_arn = self.backend.arn(self._JOB_KINDS[job_type], name)
        now = time.time()
        self.store.put(self._JOB_KINDS[job_type], name, dict(
            request, **{f"{job_type}Name": name, f"{job_type}Arn": job_arn,
                        f"{job_type}Status": "InProgress"},
            CreationTime=now, LastModifiedTime=now, PipelineExecutionArn=arn, **fields))
        self.store.update("step", key, Metadata={job_type: {"Arn": job_arn}})
        return name, job_arn, now

    def _run_job(self, arn, name, run):
        """Run a job; the status it ends with: Completed, Stopped or Failed."""
        self._current_job[arn] = name
        try:
            result = run()
        except (OSError, ValueError, KeyError) as err:
            result = JobResult(2, f"ClientError: {err}", 0.0)
        finally:
            self._current_job.pop(arn, None)
        status = "Completed" if result.exit_code == 0 else (
            "Stopped" if self._stop[arn].is_set() else "Failed")
        return result, status

    @staticmethod
    def _raise_for(status, reason):
        if status == "Stopped":
            raise Stopped()
        if status != "Completed":
            raise StepFailed(reason or "the job failed")

    def _processing(self, arn, ctx, step, attempt, key):
        request = ctx.resolve(step["Arguments"])
        name, job_arn, now = self._start_job(arn, step, attempt, key, "ProcessingJob", request,
                                             {"ProcessingStartTime": time.time()})
        result, status = self._run_job(arn, name, lambda: self.jobs.run_processing(name, request))
        changes = {"ProcessingJobStatus": status, "LastModifiedTime": time.time(),
                   # as on AWS: the container's own run, not the input download or upload
                   "ProcessingStartTime": result.process_start or now,
                   "ProcessingEndTime": result.process_end or time.time()}
        if result.failure_reason:
            changes.update(FailureReason=result.failure_reason, ExitMessage=result.failure_reason)
        job = self.store.update("processing-job", name, **changes)
        self._raise_for(status, result.failure_reason)
        return job, {"ProcessingJob": {"Arn": job_arn}}

    def _training(self, arn, ctx, step, attempt, key):
        request = ctx.resolve(step["Arguments"])
        name, job_arn, now = self._start_job(
            arn, step, attempt, key, "TrainingJob", request,
            {"SecondaryStatus": "Training", "TrainingStartTime": time.time(),
             "FinalMetricDataList": []})
        metrics = {}

        def on_metric(metric, value):
            metrics[metric] = value
            self.store.update("training-job", name, FinalMetricDataList=[
                {"MetricName": k, "Value": v, "Timestamp": time.time()}
                for k, v in metrics.items()])

        result, status = self._run_job(arn, name, lambda: self.jobs.run_training(
            name, request, on_metric))
        started, ended = result.process_start or now, result.process_end or time.time()
        changes = {"TrainingJobStatus": status, "SecondaryStatus": status,
                   "TrainingStartTime": started, "TrainingEndTime": ended,
                   "LastModifiedTime": time.time(),
                   "SecondaryStatusTransitions": [
                       {"Status": "Downloading", "StartTime": now, "EndTime": started},
                       {"Status": "Training", "StartTime": started, "EndTime": ended},
                       {"Status": "Uploading", "StartTime": ended, "EndTime": time.time()}],
                   "TrainingTimeInSeconds": int(round(result.seconds)),
                   "BillableTimeInSeconds": int(round(result.seconds))}
        if result.exit_code == 0:
            output = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
            changes["ModelArtifacts"] = {
                "S3ModelArtifacts": f"{output}/{name}/output/model.tar.gz"}
        if result.failure_reason:
            changes["FailureReason"] = result.failure_reason
        job = self.store.update("training-job", name, **changes)
        self._raise_for(status, result.failure_reason)
        return job, {"TrainingJob": {"Arn": job_arn}}

    def _register_model(self, arn, ctx, step, attempt, key):
        request = ctx.resolve(step["Arguments"])
        request.pop("SkipModelValidation", None)
        package_arn = self.backend.create_model_package(request)["ModelPackageArn"]
        package = self.backend.describe_model_package({"ModelPackageName": package_arn})
        return package, {"RegisterModel": {"Arn": package_arn}}

    def _model(self, arn, ctx, step, attempt, key):
        request = ctx.resolve(step["Arguments"])
        request["ModelName"] = self._job_name(arn, step, attempt)
        self.backend.create_model(request)
        model = self.backend.describe_model({"ModelName": request["ModelName"]})
        return model, {"Model": {"Arn": model["ModelArn"]}}

    def _condition(self, arn, ctx, step, attempt, key):
        outcome = all(ctx.condition(c) for c in step["Arguments"]["Conditions"])
        return {"Outcome": outcome}, {"Condition": {"Outcome": str(outcome)}}

    def _fail(self, arn, ctx, step, attempt, key):
        message = render(ctx.resolve(step.get("Arguments", {}).get("ErrorMessage", "")))
        self.store.update("step", key, Metadata={"Fail": {"ErrorMessage": message}})
        raise StepFailed(message)
