"""The orchestrator with fake step handlers (no job processes, no HTTP): parallelism, condition
branches, selective runs, stop, failure and retry, each in well under a second."""
import json
import threading
import time

import pytest

from pipeline.local.backend.common import Tags
from pipeline.local.backend.records import Records
from pipeline.local.resources import PipelineExecution
from pipeline.local.store import Store
from pipeline.local.workflow.handlers import (ConditionHandler, FailHandler, Outcome, Status,
                                              StepHandler)
from pipeline.local.workflow.orchestrator import Orchestrator
from pipeline.local.workflow.schedule import Schedule
from pipeline.local.workflow.graph import dependencies, flatten

PIPELINE = "arn:aws:sagemaker:us-east-1:000000000000:pipeline/p"


class FakeJobs:
    """What the orchestrator asks of the job runner: stops reach an execution's processes."""

    def __init__(self):
        self.stopped = []

    def resume_owner(self, owner):
        pass

    def stop_owner(self, owner):
        self.stopped.append(owner)


class FakeStep(StepHandler):
    """Runs "Processing" steps: each records its start, waits as its arguments say (a number
    of seconds, or until the run is stopped), and succeeds unless told to fail."""

    def __init__(self):
        self.started, self.lock = [], threading.Lock()
        self.running = self.most_at_once = 0

    def run(self, step):
        arguments = step.spec.get("Arguments", {})
        with self.lock:
            self.started.append(step.name)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if arguments.get("UntilStopped"):
                step.stop.wait(10)
                return Outcome(Status.STOPPED)
            time.sleep(arguments.get("Seconds", 0))
            if arguments.get("Fail"):
                return Outcome(Status.FAILED, reason=arguments["Fail"])
            return Outcome(Status.SUCCEEDED, {"Value": arguments.get("Value", step.name)})
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def world(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    records = Records(store, "us-east-1", Tags(store))
    fake = FakeStep()
    handlers = {"Processing": fake, "Condition": ConditionHandler(), "Fail": FailHandler()}
    orchestrator = Orchestrator(records, handlers, lambda uri: {}, FakeJobs())
    return store, records, orchestrator, fake


def step(name, depends=(), **arguments):
    return {"Name": name, "Type": "Processing", "DependsOn": list(depends),
            "Arguments": arguments}


def start(world, steps, execution_id="e1", parallelism=None, parameters=None, selection=None):
    store, records, orchestrator, _ = world
    arn = PipelineExecution.arn_of(PIPELINE, execution_id)
    doc = {"PipelineArn": PIPELINE, "PipelineExecutionArn": arn, "CreationTime": time.time(),
           "PipelineExecutionStatus": "Executing", "Parameters": parameters or {},
           "PipelineDefinition": json.dumps({"Version": "2020-12-01", "Steps": steps})}
    if parallelism:
        doc["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": parallelism}
    if selection:
        doc["SelectiveExecutionConfig"] = selection
    store.create(PipelineExecution.kind, arn, doc)
    orchestrator.start(arn)
    return arn


def finish(world, arn, timeout=5.0):
    records = world[1]
    deadline = time.time() + timeout
    while time.time() < deadline:
        doc = records.execution_record(arn)
        if doc["PipelineExecutionStatus"] not in ("Executing", "Stopping"):
            steps = {r["StepName"]: r for r in records.step_records(arn)}
            return doc["PipelineExecutionStatus"], doc.get("FailureReason"), steps
        time.sleep(0.01)
    raise TimeoutError(arn)


def test_independent_steps_run_side_by_side_up_to_the_limit(world):
    steps = [step(f"S{i}", Seconds=0.1) for i in range(5)] + [
        step("After", depends=[f"S{i}" for i in range(5)])]
    status, _, records = finish(world, start(world, steps, parallelism=2))
    assert status == "Succeeded"
    assert world[3].most_at_once == 2
    assert world[3].started[-1] == "After"
    assert {r["StepStatus"] for r in records.values()} == {"Succeeded"}


def test_without_a_limit_all_ready_steps_start_at_once(world):
    status, _, _ = finish(world, start(world, [step(f"S{i}", Seconds=0.2) for i in range(4)]))
    assert status == "Succeeded" and world[3].most_at_once == 4


@pytest.mark.parametrize("threshold, ran, skipped", [(1, "Yes", "No"), (5, "No", "Yes")])
def test_only_the_branch_a_condition_took_runs(world, threshold, ran, skipped):
    condition = {"Name": "Check", "Type": "Condition", "Arguments": {
        "Conditions": [{"Type": "GreaterThanOrEqualTo", "LeftValue": 3,
                        "RightValue": {"Get": "Parameters.T"}}],
        "IfSteps": [step("Yes"), step("YesAfter", depends=["Yes"])],
        "ElseSteps": [step("No")]}}
    status, _, records = finish(world, start(world, [step("First"), condition],
                                             parameters={"T": threshold}))
    assert status == "Succeeded"
    assert records["Check"]["Metadata"]["Condition"]["Outcome"] == str(threshold <= 3)
    assert ran in records and skipped not in records
    assert ("YesAfter" in records) == (ran == "Yes")


def test_a_failed_step_fails_the_execution_and_nothing_starts_after_it(world):
    steps = [step("Bad", Fail="it broke"), step("Next", depends=["Bad"]),
             step("Later", depends=["Slow"]), step("Slow", Seconds=0.2)]
    status, reason, records = finish(world, start(world, steps))
    assert status == "Failed" and reason == "Step Bad failed: it broke"
    assert records["Bad"]["StepStatus"] == "Failed"
    assert records["Slow"]["StepStatus"] == "Succeeded"  # running: it ends first
    assert "Next" not in records and "Later" not in records


def test_a_fail_step_gives_its_message_as_the_executions_reason(world):
    fail = {"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": {
        "Std:Join": {"On": " ", "Values": ["accuracy", {"Get": "Parameters.A"}, "is low"]}}}}
    status, reason, _ = finish(world, start(world, [fail], parameters={"A": 0.5}))
    assert (status, reason) == ("Failed", "accuracy 0.5 is low")


def test_stop_ends_the_running_step_and_starts_nothing_more(world):
    arn = start(world, [step("Wait", UntilStopped=True), step("Next", depends=["Wait"])])
    orchestrator = world[2]
    deadline = time.time() + 5
    while "Wait" not in world[3].started and time.time() < deadline:
        time.sleep(0.01)
    world[0].update(PipelineExecution.kind, arn, PipelineExecutionStatus="Stopping")
    orchestrator.stop(arn)
    status, reason, records = finish(world, arn)
    assert status == "Stopped" and "StopPipelineExecution" in reason
    assert records["Wait"]["StepStatus"] == "Stopped" and "Next" not in records
    assert orchestrator.jobs.stopped == [arn]


def test_a_retry_keeps_what_succeeded_and_runs_the_rest(world):
    store, records, orchestrator, fake = world
    arn = start(world, [step("A"), step("B", depends=["A"], Fail="first time")])
    assert finish(world, arn)[0] == "Failed"
    definition = json.loads(records.execution_record(arn)["PipelineDefinition"])
    definition["Steps"][1]["Arguments"] = {}
    store.update(PipelineExecution.kind, arn, PipelineExecutionStatus="Executing",
                 PipelineDefinition=json.dumps(definition))
    orchestrator.start(arn)
    status, _, steps = finish(world, arn)
    assert status == "Succeeded"
    assert fake.started == ["A", "B", "B"]
    assert steps["B"]["AttemptCount"] == 2 and steps["A"]["AttemptCount"] == 1


def test_a_selective_run_reuses_what_its_steps_need_and_runs_only_the_selected(world):
    chain = [step("A", Value="a1"), step("B", depends=["A"]), step("C", depends=["B"]),
             step("D", depends=["C"]), step("Aside")]
    source = start(world, chain, execution_id="src")
    assert finish(world, source)[0] == "Succeeded"
    world[3].started.clear()
    arn = start(world, chain, execution_id="sel", selection={
        "SourcePipelineExecutionArn": source, "SelectedSteps": [{"StepName": "C"}]})
    status, _, records = finish(world, arn)
    assert status == "Succeeded" and world[3].started == ["C"]
    assert set(records) == {"A", "B", "C"}  # D is downstream, Aside aside: not run
    assert records["A"]["SelectiveExecutionResult"] == {"SourcePipelineExecutionArn": source}
    assert records["A"]["Properties"] == {"Value": "a1"}


def test_a_selective_run_fails_when_the_source_lacks_what_it_needs(world):
    source = start(world, [step("A", Fail="no"), step("B", depends=["A"])], execution_id="s")
    assert finish(world, source)[0] == "Failed"
    arn = start(world, [step("A"), step("B", depends=["A"])], execution_id="t", selection={
        "SourcePipelineExecutionArn": source, "SelectedSteps": [{"StepName": "B"}]})
    status, reason, records = finish(world, arn)
    assert status == "Failed" and "Step A did not succeed in the source execution" in reason
    assert records == {}


def test_the_schedule_hands_out_ready_steps_in_definition_order():
    steps = flatten({"Steps": [step("Late", depends=["Early"]), step("Early"), step("Other")]})
    plan = Schedule(steps, dependencies(steps))
    assert plan.ready() == ["Early", "Other"]
    given = []
    for name in plan.take(limit=5):
        given.append(name)
        plan.start(name)
        if name == "Early":
            plan.succeed(name)
    assert given == ["Early", "Late", "Other"]
    assert plan.unfinished() == {"Late", "Other"}


def test_the_schedule_refuses_a_caller_that_neither_starts_nor_settles_a_step():
    steps = flatten({"Steps": [step("A")]})
    with pytest.raises(RuntimeError, match="neither started nor settled"):
        for _ in Schedule(steps, dependencies(steps)).take(limit=1):
            pass


def test_a_cached_step_reuses_an_earlier_executions_run(world):
    cached = dict(step("Prepare", Value="data-1"), CacheConfig={"Enabled": True,
                                                                 "ExpireAfter": "P1D"})
    first = start(world, [cached, step("Use", depends=["Prepare"])], execution_id="one")
    assert finish(world, first)[0] == "Succeeded"
    second = start(world, [cached, step("Use", depends=["Prepare"])], execution_id="two")
    status, _, records = finish(world, second)
    assert status == "Succeeded"
    assert world[3].started == ["Prepare", "Use", "Use"]  # not run again
    assert records["Prepare"]["CacheHitResult"] == {"SourcePipelineExecutionArn": first}
    assert records["Prepare"]["Properties"] == {"Value": "data-1"}
