"""Runs executions: walks the DAG in dependency order, one step at a time, skipping the branch
a condition did not take; stop and retry (a retry keeps what succeeded, properties included);
steps with caching on reuse an earlier execution's run (``cache``); a selective execution runs
only its selected steps, taking what they need from its source execution.

Every step's end, however it came, is recorded through the backend: an expression error or a
refusal of the registry becomes the step's failure, a bug in the service the execution's.
"""
import json
import threading
import time
import traceback
from typing import Dict

from pipeline.local.errors import ServiceError
from pipeline.local.workflow import cache
from pipeline.local.workflow.expressions import Context, StepFailed
from pipeline.local.workflow.graph import ancestors, dependencies, flatten
from pipeline.local.workflow.handlers import Outcome, Status, StepHandler, StepRun

STOPPED_REASON = "stopped by StopPipelineExecution"


class Orchestrator:
    def __init__(self, backend, handlers: Dict[str, StepHandler], read_json, jobs):
        self.backend, self.handlers, self.read_json, self.jobs = (
            backend, handlers, read_json, jobs)
        self._stop: Dict[str, threading.Event] = {}

    def start(self, arn):
        """Run (or, for a retry, resume) an execution in the background."""
        self._stop[arn] = threading.Event()
        self.jobs.resume_owner(arn)
        threading.Thread(target=self._run_safely, args=(arn,), daemon=True,
                         name=f"execution-{arn.split('/')[-1]}").start()

    def stop(self, arn):
        if arn in self._stop:
            self._stop[arn].set()
        self.jobs.stop_owner(arn)

    def _run_safely(self, arn):
        try:
            status, reason = self._run(arn)
        except Exception as err:  # a bug or a full disk must not leave it Executing forever
            traceback.print_exc()
            status, reason = Status.FAILED, f"internal error in the local service: {err}"
        self._record_end(arn, status, reason)

    def _record_end(self, arn, status, reason, first_wait=0.1, longest_wait=5.0):
        """Record how the execution ended, however long the store refuses (a full disk): until
        then it reads Executing, and Stop and Retry work once it is recorded."""
        wait = first_wait
        while True:
            try:
                self.backend.execution_ended(arn, status.value, reason)
                return
            except ServiceError:  # it cannot take that status (already ended): nothing to do
                return
            except Exception as err:  # noqa: BLE001 - storage errors: try again
                print(f"cannot record the end of {arn} yet: {err}", flush=True)
                time.sleep(wait)
                wait = min(wait * 2, longest_wait)

    def _run(self, arn):
        execution = self.backend.execution_record(arn)
        steps = flatten(json.loads(execution["PipelineDefinition"]))
        deps = dependencies(steps)
        records = {r["StepName"]: r for r in self.backend.step_records(arn)}
        properties = {n: r.get("Properties", {}) for n, r in records.items()
                      if r["StepStatus"] == Status.SUCCEEDED}
        context = Context(execution, {n: e["step"] for n, e in steps.items()}, properties,
                          self.read_json)
        stop = self._stop[arn]
        done, skipped = set(properties), set()
        selection = execution.get("SelectiveExecutionConfig")
        if selection:  # only the selected steps run; what they need comes from the source
            selected = {s["StepName"] for s in selection["SelectedSteps"]}
            needed = ancestors(selected, deps) - selected
            source = {r["StepName"]: r for r in self.backend.step_records(
                selection["SourcePipelineExecutionArn"])}
        while True:
            ready = [n for n in steps if n not in done | skipped and deps[n] <= done | skipped]
            if not ready:
                return Status.SUCCEEDED, None
            name = ready[0]
            owner = steps[name]["owner"]
            if deps[name] & skipped or (owner and context.properties[owner[0]]["Outcome"] !=
                                        (owner[1] == "IfSteps")):
                skipped.add(name)
                continue
            if stop.is_set():
                return Status.STOPPED, STOPPED_REASON
            spec = steps[name]["step"]
            if selection and name not in selected:
                if name not in needed:  # downstream or aside: not run in this execution
                    skipped.add(name)
                    continue
                earlier = source.get(name, {})
                if earlier.get("StepStatus") != Status.SUCCEEDED.value:
                    return Status.FAILED, (f"Step {name} did not succeed in the source execution "
                                           f"{selection['SourcePipelineExecutionArn']}; the "
                                           "selected steps need its outputs")
                self.backend.step_ended(
                    self.backend.step_started(arn, spec, 1), Status.SUCCEEDED.value,
                    properties=earlier["Properties"], metadata=earlier["Metadata"],
                    selective_result={"SourcePipelineExecutionArn": earlier["ExecutionArn"]})
                context.properties[name] = earlier["Properties"]
                done.add(name)
                continue
            attempt = records.get(name, {}).get("AttemptCount", 0) + 1
            run = StepRun(arn, spec, attempt, self.backend.step_started(arn, spec, attempt),
                          context, stop)
            outcome = self._run_step(run)
            if outcome.status == Status.STOPPED:
                return Status.STOPPED, STOPPED_REASON
            if outcome.status == Status.FAILED:
                reason = outcome.reason if spec["Type"] == "Fail" else \
                    f"Step {name} failed: {outcome.reason}"
                return Status.FAILED, reason
            context.properties[name] = outcome.properties
            done.add(name)

    def _run_step(self, run: StepRun) -> Outcome:
        key = hit = None
        try:
            if cache.enabled(run.spec):
                key = cache.cache_key(run.spec, run.arguments())
            source = key and cache.find_hit(self.backend, run.execution_arn, run.spec, key)
            if source:  # not run again: the earlier run's job and outputs
                outcome = Outcome(Status.SUCCEEDED, source["Properties"], source["Metadata"])
                # the execution whose job it is (a hit on a hit names the one that ran it)
                hit = source.get("CacheHitResult") or {
                    "SourcePipelineExecutionArn": source["ExecutionArn"]}
            else:
                outcome = self.handlers[run.spec["Type"]].run(run)
        except StepFailed as err:
            outcome = Outcome(Status.FAILED, reason=str(err))
        except ServiceError as err:  # the registry or hosting refused the request
            outcome = Outcome(Status.FAILED, reason=err.message)
        except ValueError as err:  # a CacheConfig this service cannot read
            outcome = Outcome(Status.FAILED, reason=str(err))
        metadata = outcome.metadata or None
        if outcome.status == Status.SUCCEEDED:
            self.backend.step_ended(run.record, outcome.status.value,
                                    properties=outcome.properties, metadata=metadata,
                                    cache_key=key, cache_hit=hit)
        else:
            self.backend.step_ended(run.record, outcome.status.value, outcome.reason
                                    if outcome.status == Status.FAILED else None,
                                    metadata=metadata)
        return outcome
