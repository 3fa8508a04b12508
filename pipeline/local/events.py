"""The subset of Amazon EventBridge that approve -> deploy needs: rules with event patterns on
the default bus, SageMaker pipeline targets, and the events the local SageMaker emits.

As on AWS, the model registry emits "SageMaker Model Package State Change" when a package's
approval changes; every enabled rule whose pattern matches starts its pipeline targets with their
``SageMakerPipelineParameters``. Keyword-argument operations, as the SageMaker backend's.
"""
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, List

from pipeline.local import patterns
from pipeline.local.errors import ServiceError, validation
from pipeline.local.resources import ACCOUNT

RULE_KIND = "EventRule"
BUS = "default"


class Outbox:
    """Where the SageMaker registry puts its events, for the EventBridge subset to deliver.

    It breaks a cycle that is real: a rule's target starts a pipeline whose steps register
    models whose events go to the rules. The registry is built with the outbox; the
    EventBridge subset, built after the pipelines it starts, listens to it from its own
    construction. An event put while nothing listens goes nowhere, as on a bus with no rules.
    """

    def __init__(self):
        self._listeners: List[Callable[..., object]] = []

    def listen(self, listener: Callable[..., object]):
        self._listeners.append(listener)

    def put(self, source: str, detail_type: str, resources: List[str], detail: dict):
        """Hand an event to every listener. The write that caused it is committed: a fault in
        delivery is logged, never raised into (and never repeats) that write."""
        for listener in self._listeners:
            try:
                listener(source, detail_type, resources, detail)
            except Exception as err:  # noqa: BLE001 - see the docstring
                print(f"event {detail_type} from {source} not delivered: {err!r}", flush=True)


class EventsBackend:
    """Rules and targets, kept in the service's store; ``start_pipeline(name, parameters)``
    starts a SageMaker pipeline execution. It delivers what the ``outbox`` receives."""

    def __init__(self, store, region: str, start_pipeline: Callable[[str, list], dict],
                 outbox: Outbox):
        self.store, self.region, self.start_pipeline = store, region, start_pipeline
        outbox.listen(self.emit)

    def _arn(self, name):
        return f"arn:aws:events:{self.region}:{ACCOUNT}:rule/{name}"

    def _rule(self, name) -> dict:
        doc = self.store.get(RULE_KIND, name)
        if doc is None:
            raise ServiceError("ResourceNotFoundException", f"Rule {name} does not exist on "
                               f"EventBus {BUS}.")
        return doc

    @staticmethod
    def _bus(event_bus_name):
        if event_bus_name not in (None, BUS) and not str(event_bus_name).endswith("/" + BUS):
            raise validation("the local service has only the default event bus")

    def put_rule(self, name, event_pattern=None, schedule_expression=None, state="ENABLED",
                 description=None, role_arn=None, tags=None, event_bus_name=None):
        self._bus(event_bus_name)
        if schedule_expression or not event_pattern:
            raise validation("the local service supports rules with an EventPattern only")
        try:
            patterns.parse(event_pattern)
        except patterns.InvalidPattern as err:
            raise ServiceError("InvalidEventPatternException", f"Event pattern is not valid. "
                               f"Reason: {err}")
        except patterns.UnsupportedPattern as err:
            raise validation(str(err))
        doc = self.store.get(RULE_KIND, name) or {"Targets": []}
        doc.update({"Name": name, "Arn": self._arn(name), "EventPattern": event_pattern,
                    "State": state or "ENABLED", "EventBusName": BUS})
        for key, value in (("Description", description), ("RoleArn", role_arn)):
            if value is not None:
                doc[key] = value
        self.store.put(RULE_KIND, name, doc)
        return {"RuleArn": doc["Arn"]}

    def describe_rule(self, name, event_bus_name=None):
        self._bus(event_bus_name)
        doc = self._rule(name)
        return {k: v for k, v in doc.items() if k != "Targets"} | {"CreatedBy": ACCOUNT}

    def list_rules(self, name_prefix="", event_bus_name=None, next_token=None, limit=None):
        self._bus(event_bus_name)
        rules = [{k: v for k, v in r.items() if k != "Targets"}
                 for r in self.store.list(RULE_KIND) if r["Name"].startswith(name_prefix or "")]
        rules.sort(key=lambda r: r["Name"])
        return {"Rules": rules}

    def delete_rule(self, name, event_bus_name=None, force=None):
        self._bus(event_bus_name)
        if self._rule(name)["Targets"]:
            raise validation("Rule can't be deleted since it has targets.")
        self.store.delete(RULE_KIND, name)
        return {}

    def enable_rule(self, name, event_bus_name=None):
        self.store.update(RULE_KIND, self._rule(name)["Name"], State="ENABLED")
        return {}

    def disable_rule(self, name, event_bus_name=None):
        self.store.update(RULE_KIND, self._rule(name)["Name"], State="DISABLED")
        return {}

    def put_targets(self, rule, targets, event_bus_name=None):
        self._bus(event_bus_name)
        doc = self._rule(rule)
        failed = []
        kept = {t["Id"]: t for t in doc["Targets"]}
        for target in targets:
            if ":sagemaker:" not in target["Arn"] or ":pipeline/" not in target["Arn"]:
                failed.append({"TargetId": target["Id"], "ErrorCode": "ValidationException",
                               "ErrorMessage": "the local service delivers only to SageMaker "
                                               "pipelines"})
                continue
            kept[target["Id"]] = target
        self.store.update(RULE_KIND, rule, Targets=list(kept.values()))
        return {"FailedEntryCount": len(failed), "FailedEntries": failed}

    def list_targets_by_rule(self, rule, event_bus_name=None, next_token=None, limit=None):
        self._bus(event_bus_name)
        return {"Targets": self._rule(rule)["Targets"]}

    def remove_targets(self, rule, ids, event_bus_name=None, force=None):
        self._bus(event_bus_name)
        doc = self._rule(rule)
        self.store.update(RULE_KIND, rule,
                          Targets=[t for t in doc["Targets"] if t["Id"] not in ids])
        return {"FailedEntryCount": 0, "FailedEntries": []}

    # ------------------------------------------------------------ delivery
    def emit(self, source: str, detail_type: str, resources: List[str], detail: dict) -> list:
        """Deliver one event: start each matching rule's pipeline targets. Returns what was
        started, as (rule, pipeline execution ARN or the error)."""
        event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type,
                 "source": source, "account": ACCOUNT,
                 "time": datetime.fromtimestamp(time.time(), timezone.utc).strftime(
                     "%Y-%m-%dT%H:%M:%SZ"),
                 "region": self.region, "resources": resources, "detail": detail}
        delivered = []
        for rule in self.store.list(RULE_KIND):
            try:
                if rule["State"] != "ENABLED" or not patterns.matches(
                        patterns.parse(rule["EventPattern"]), event):
                    continue
            except ValueError as err:  # a rule stored before its pattern was checked
                print(f"rule {rule['Name']}: pattern not usable ({err}): skipped", flush=True)
                continue
            for target in rule["Targets"]:
                parameters = target.get("SageMakerPipelineParameters", {}).get(
                    "PipelineParameterList", [])
                try:
                    arn = self.start_pipeline(target["Arn"].split("/")[-1], parameters)[
                        "PipelineExecutionArn"]
                except ServiceError as err:  # AWS would retry, then drop the event
                    arn = f"not started: {err.message}"
                    print(f"rule {rule['Name']}: {target['Arn']} {arn}", flush=True)
                delivered.append((rule["Name"], arn))
        return delivered
