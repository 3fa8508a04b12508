"""Which steps of an execution may start now: pure bookkeeping over the DAG, no I/O.

A step is ready once each step it depends on is settled (done or skipped); ready steps come
in definition order, as many as the parallelism limit leaves room for. What to do with a ready
step (run it, skip it, reuse a source execution's run) is the orchestrator's decision.
"""
from typing import Dict, Iterator, List, Set

from pipeline.local.workflow.graph import FlatStep, ancestors


class Schedule:
    def __init__(self, steps: Dict[str, FlatStep], deps: Dict[str, Set[str]], done=()):
        self.steps, self.deps = steps, deps
        self.done: Set[str] = set(done)
        self.skipped: Set[str] = set()
        self.running: Set[str] = set()

    def settled(self, name: str) -> bool:
        return name in self.done or name in self.skipped

    def ready(self) -> List[str]:
        """Steps not yet taken whose dependencies are all settled, in definition order."""
        return [name for name in self.steps
                if not self.settled(name) and name not in self.running
                and all(self.settled(dep) for dep in self.deps[name])]

    def take(self, limit: int) -> Iterator[str]:
        """Ready steps, one at a time, while fewer than ``limit`` run. The caller settles or
        starts each one it is given (``skip``, ``succeed``, ``start``); what that makes ready
        comes next, in the same call."""
        while len(self.running) < limit:
            ready = self.ready()
            if not ready:
                return
            name = ready[0]
            yield name
            if not self.settled(name) and name not in self.running:  # it would loop forever
                raise RuntimeError(f"step {name} was given and neither started nor settled")

    def skip(self, name: str):
        self.skipped.add(name)

    def start(self, name: str):
        self.running.add(name)

    def succeed(self, name: str):
        self.running.discard(name)
        self.done.add(name)

    def end(self, name: str):
        """A step that ran and did not succeed (failed or stopped)."""
        self.running.discard(name)

    def dependency_skipped(self, name: str) -> bool:
        return any(dep in self.skipped for dep in self.deps[name])

    def unfinished(self) -> Set[str]:
        return set(self.steps) - self.done - self.skipped

    def needed_by(self, selected: Set[str]) -> Set[str]:
        """The steps the selected ones depend on, directly or not (not the selected)."""
        return ancestors(selected, self.deps) - selected
