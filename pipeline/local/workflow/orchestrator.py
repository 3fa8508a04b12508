"""Runs executions: walks the DAG in dependency order, skipping the branch a condition did not
take, running steps whose dependencies are done side by side up to the execution's
``ParallelismConfiguration``; stop and retry (a retry keeps what succeeded, properties
included); a failed attempt tried again as the step's ``RetryPolicies`` say (``retry``); steps
with caching on reuse an earlier execution's run (``cache``); a selective execution runs only
its selected steps, taking what they need from its source execution.

Every step's end, however it came, is recorded through the internal verbs (``records``): an
expression error or a refusal of the registry becomes the step's failure, a bug in the service
the execution's. Once a step fails or a stop is asked, no further step starts; those running
end first.
"""
import dataclasses
import json
import sqlite3
import threading
import time
import traceback
from concurrent import futures
from dataclasses import dataclass
from typing import Dict, Optional, Set

from pipeline.local.errors import ServiceError
from pipeline.local.workflow import cache, retry
from pipeline.local.workflow.expressions import Context, StepFailed
from pipeline.local.workflow.graph import FlatStep, dependencies, flatten
from pipeline.local.workflow.handlers import Outcome, Status, StepHandler, StepRun
from pipeline.local.workflow.schedule import Schedule

# Steps run at once when neither the execution nor its pipeline says (the API documents none).
DEFAULT_PARALLEL_STEPS = 50
STOPPED_REASON = "stopped by StopPipelineExecution"


class Orchestrator:
    def __init__(self, records, handlers: Dict[str, StepHandler], read_json, jobs):
        """``records``: the internal verbs steps report through; ``handlers``: step type ->
        handler; ``read_json(uri)``: a property file's content; ``jobs``: the job runner
        (stops reach an execution's processes)."""
        self.records, self.handlers, self.read_json, self.jobs = (
            records, handlers, read_json, jobs)
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
                self.records.execution_ended(arn, status.value, reason)
                return
            except ServiceError:  # it cannot take that status (already ended): nothing to do
                return
            except Exception as err:  # noqa: BLE001 - storage errors: try again
                print(f"cannot record the end of {arn} yet: {err}", flush=True)
                time.sleep(wait)
                wait = min(wait * 2, longest_wait)

    def _run(self, arn):
        """Run the execution's steps until none is left to start and none runs: how it
        ended, (status, reason)."""
        run = self._prepare(arn)
        running: Dict[futures.Future, str] = {}
        with futures.ThreadPoolExecutor(thread_name_prefix=f"steps-{arn.split('/')[-1]}") as pool:
            while True:
                self._start_ready(run, pool, running)
                if not running:
                    break
                finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in finished:  # a bug in the service raises: the execution's failure
                    run.finished(running.pop(future), future.result())
        return run.result()

    def _prepare(self, arn) -> "ExecutionRun":
        """The execution's run: a retry keeps what succeeded (its properties included)."""
        execution = self.records.execution_record(arn)
        steps = flatten(json.loads(execution["PipelineDefinition"]))
        earlier = {r["StepName"]: r for r in self.records.step_records(arn)}
        succeeded = {n: r.get("Properties", {}) for n, r in earlier.items()
                     if r["StepStatus"] == Status.SUCCEEDED}
        plan = Schedule(steps, dependencies(steps), done=succeeded)
        context = Context(execution, {n: s.spec for n, s in steps.items()}, succeeded,
                          self.read_json)
        return ExecutionRun(arn, plan, context, earlier, self._stop[arn],
                            Selection.of(execution, plan, self.records))

    def _start_ready(self, run: "ExecutionRun", pool, running):
        """Start, skip or reuse every step that is ready, up to the parallelism limit."""
        for name in run.plan.take(self._parallelism(run.arn)):
            if run.halted:
                break
            step = run.plan.steps[name]
            if run.plan.dependency_skipped(name) or not run.branch_taken(step):
                run.plan.skip(name)
            elif run.selection and name not in run.selection.selected:
                self._not_selected(run, step)
            else:
                attempt = run.earlier.get(name, {}).get("AttemptCount", 0) + 1
                step_run = StepRun(run.arn, step.spec, attempt,
                                   self.records.step_started(run.arn, step.spec, attempt),
                                   run.context, run.stop)
                run.plan.start(name)
                running[pool.submit(self._run_step, step_run)] = name
            if run.halted:
                break

    def _not_selected(self, run: "ExecutionRun", step: FlatStep):
        """A selective execution's step that is not selected: taken from the source
        execution when a selected step needs it, else not run."""
        selection = run.selection
        assert selection is not None  # only asked of a selective execution
        if step.name not in selection.needed:  # downstream or aside
            run.plan.skip(step.name)
            return
        earlier = selection.source.get(step.name, {})
        if earlier.get("StepStatus") != Status.SUCCEEDED.value:
            run.failure = (f"Step {step.name} did not succeed in the source execution "
                           f"{selection.source_arn}; the selected steps need its outputs")
            return
        self.records.step_ended(
            self.records.step_started(run.arn, step.spec, 1), Status.SUCCEEDED.value,
            properties=earlier["Properties"], metadata=earlier["Metadata"],
            selective_result={"SourcePipelineExecutionArn": earlier["ExecutionArn"]})
        run.context.properties[step.name] = earlier["Properties"]
        run.plan.succeed(step.name)

    def _parallelism(self, arn) -> int:
        """Read at each scheduling round: UpdatePipelineExecution may change it meanwhile."""
        config = self.records.execution_record(arn).get("ParallelismConfiguration") or {}
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
            self.records.step_retrying(run.record, run.attempt + 1)
            run = dataclasses.replace(run, attempt=run.attempt + 1)
        metadata = outcome.metadata or None
        if outcome.status == Status.SUCCEEDED:
            self.records.step_ended(run.record, outcome.status.value,
                                    properties=outcome.properties, metadata=metadata,
                                    cache_key=key, cache_hit=hit)
        else:
            self.records.step_ended(run.record, outcome.status.value, outcome.reason
                                    if outcome.status == Status.FAILED else None,
                                    metadata=metadata)
        return outcome

    def _attempt(self, run: StepRun):
        """One attempt: (its outcome, the step's cache key, the run a cache hit reused)."""
        key = hit = None
        try:
            if cache.enabled(run.spec):
                key = cache.cache_key(run.spec, run.arguments())
            source = key and cache.find_hit(self.records, run.execution_arn, run.spec, key)
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


@dataclass
class Selection:
    """A selective execution: the selected steps run; those they need come from the source
    execution (``source``: its step records by name); the others are not run."""

    source_arn: str
    selected: Set[str]
    needed: Set[str]
    source: Dict[str, dict]

    @classmethod
    def of(cls, execution: dict, plan: Schedule, records) -> Optional["Selection"]:
        config = execution.get("SelectiveExecutionConfig")
        if not config:
            return None
        selected = {s["StepName"] for s in config["SelectedSteps"]}
        source_arn = config["SourcePipelineExecutionArn"]
        return cls(source_arn, selected, plan.needed_by(selected),
                   {r["StepName"]: r for r in records.step_records(source_arn)})


@dataclass
class ExecutionRun:
    """One run (or, for a retry, resumption) of an execution: its schedule, the properties
    its steps made (``context``), and the first failure."""

    arn: str
    plan: Schedule
    context: Context
    earlier: Dict[str, dict]  # the execution's step records before this run
    stop: threading.Event
    selection: Optional[Selection] = None
    failure: Optional[str] = None

    @property
    def halted(self) -> bool:
        """Once a step fails or a stop is asked, no further step starts."""
        return bool(self.failure) or self.stop.is_set()

    def branch_taken(self, step: FlatStep) -> bool:
        """A step inside a condition runs only on the branch its condition took."""
        if step.branch is None:
            return True
        return step.branch.taken(self.context.properties[step.branch.condition]["Outcome"])

    def finished(self, name: str, outcome: Outcome):
        if outcome.status == Status.SUCCEEDED:
            self.context.properties[name] = outcome.properties
            self.plan.succeed(name)
            return
        self.plan.end(name)
        if outcome.status == Status.FAILED and not self.failure:
            self.failure = outcome.reason if self.plan.steps[name].type == "Fail" \
                else f"Step {name} failed: {outcome.reason}"

    def result(self):
        if self.failure:
            return Status.FAILED, self.failure
        if self.stop.is_set() and self.plan.unfinished():
            return Status.STOPPED, STOPPED_REASON
        return Status.SUCCEEDED, None
