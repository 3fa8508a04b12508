"""Runs executions: walks the DAG in dependency order, skipping the branch a condition did not
take, running steps whose dependencies are done side by side up to the execution's
``ParallelismConfiguration``; stop and retry (a retry keeps what succeeded, properties
included); a failed attempt tried again as the step's ``RetryPolicies`` say (``retry``); steps
with caching on reuse an earlier execution's run (``cache``); a selective execution runs only
its selected steps, taking what they need from its source execution.

Every step's end, however it came, is recorded through the backend: an expression error or a
refusal of the registry becomes the step's failure, a bug in the service the execution's. Once a
step fails or a stop is asked, no further step starts; those running end first.
"""
import dataclasses
import json
import sqlite3
import threading
import time
import traceback
from concurrent import futures
from typing import Dict

from pipeline.local.errors import ServiceError
from pipeline.local.workflow import cache, retry
from pipeline.local.workflow.expressions import Context, StepFailed
from pipeline.local.workflow.graph import ancestors, dependencies, flatten
from pipeline.local.workflow.handlers import Outcome, Status, StepHandler, StepRun

# Steps run at once when neither the execution nor its pipeline says (the API documents none).
DEFAULT_PARALLEL_STEPS = 50
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
        running: Dict[futures.Future, str] = {}
        failure = None
        selection = execution.get("SelectiveExecutionConfig")
        if selection:  # only the selected steps run; what they need comes from the source
            selected = {s["StepName"] for s in selection["SelectedSteps"]}
            needed = ancestors(selected, deps) - selected
            source = {r["StepName"]: r for r in self.backend.step_records(
                selection["SourcePipelineExecutionArn"])}
        with futures.ThreadPoolExecutor(thread_name_prefix=f"steps-{arn.split('/')[-1]}") as pool:
            while True:
                limit, changed = self._parallelism(arn), True
                while changed:  # until a pass over the steps starts, skips or takes none
                    changed = False
                    for name in steps:  # in definition order, as many as the limit allows
                        if failure or stop.is_set() or len(running) >= limit:
                            break
                        if name in done | skipped | set(running.values()) or \
                                not deps[name] <= done | skipped:
                            continue
                        changed = True
                        owner = steps[name]["owner"]
                        if deps[name] & skipped or (owner and context.properties[owner[0]][
                                "Outcome"] != (owner[1] == "IfSteps")):
                            skipped.add(name)
                            continue
                        spec = steps[name]["step"]
                        if selection and name not in selected:
                            if name not in needed:  # downstream or aside: not run here
                                skipped.add(name)
                                continue
                            earlier = source.get(name, {})
                            if earlier.get("StepStatus") != Status.SUCCEEDED.value:
                                failure = (f"Step {name} did not succeed in the source "
                                           f"execution {selection['SourcePipelineExecutionArn']}"
                                           "; the selected steps need its outputs")
                                break
                            self.backend.step_ended(
                                self.backend.step_started(arn, spec, 1), Status.SUCCEEDED.value,
                                properties=earlier["Properties"], metadata=earlier["Metadata"],
                                selective_result={
                                    "SourcePipelineExecutionArn": earlier["ExecutionArn"]})
                            context.properties[name] = earlier["Properties"]
                            done.add(name)
                            continue
                        attempt = records.get(name, {}).get("AttemptCount", 0) + 1
                        run = StepRun(arn, spec, attempt,
                                      self.backend.step_started(arn, spec, attempt), context,
                                      stop)
                        running[pool.submit(self._run_step, run)] = name
                if not running:
                    break
                finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    outcome = future.result()  # a bug in the service: the execution's failure
                    if outcome.status == Status.SUCCEEDED:
                        context.properties[name] = outcome.properties
                        done.add(name)
                    elif outcome.status == Status.FAILED and not failure:
                        failure = outcome.reason if steps[name]["step"]["Type"] == "Fail" \
                            else f"Step {name} failed: {outcome.reason}"
        if failure:
            return Status.FAILED, failure
        if stop.is_set() and set(steps) - done - skipped:
            return Status.STOPPED, STOPPED_REASON
        return Status.SUCCEEDED, None

    def _parallelism(self, arn) -> int:
        """Read at each scheduling round: UpdatePipelineExecution may change it meanwhile."""
        config = self.backend.execution_record(arn).get("ParallelismConfiguration") or {}
        return config.get("MaxParallelExecutionSteps", DEFAULT_PARALLEL_STEPS)

    def _run_step(self, run: StepRun) -> Outcome:
        """Run a step's attempts (as many as its retry policies allow) and record its end."""
        retries = retry.RetryState(run.spec)
        while True:
            outcome, key, hit = self._attempt(run)
            delay = retries.delay(outcome.exception_type) \
                if outcome.status == Status.FAILED else None
            if delay is None:
                break
            print(f"{run.execution_arn}: step {run.name}, attempt {run.attempt} failed "
                  f"({outcome.reason}); its retry policy tries again in {delay:g} s", flush=True)
            if run.stop.wait(delay):
                outcome = Outcome(Status.STOPPED, metadata=outcome.metadata)
                break
            self.backend.step_retrying(run.record, run.attempt + 1)
            run = dataclasses.replace(run, attempt=run.attempt + 1)
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

    def _attempt(self, run: StepRun):
        """One attempt: (its outcome, the step's cache key, the run a cache hit reused)."""
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
            outcome = Outcome(Status.FAILED, reason=err.message,
                              exception_type=retry.error_exception_type(err.code))
        except ValueError as err:  # a CacheConfig this service cannot read
            outcome = Outcome(Status.FAILED, reason=str(err))
        except (sqlite3.OperationalError, OSError) as err:  # the service's store refused
            outcome = Outcome(Status.FAILED, exception_type=retry.SERVICE_FAULT,
                              reason=f"InternalServerError: the local service could not "
                                     f"record the step: {err}")
        return outcome, key, hit
