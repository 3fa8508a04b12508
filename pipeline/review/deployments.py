"""What each endpoint served and when: the deployment log (steps/deployment_log.py) read back,
so a page says what a run deployed and whether it is still live, an endpoint lists its
deployments, and the registry marks the live version. The endpoint's own description is only
its present; this is its past.
"""
import json
from dataclasses import dataclass
from typing import Dict, List, Optional

from botocore.exceptions import ClientError

from pipeline.review.sources import Sources, all_items
from pipeline.review.text import when
from steps import deployment_log
from steps.deployment_log import LOG_TAG, PACKAGE_TAG


@dataclass
class Deployment:
    endpoint: str
    action: str  # deployed, or deleted (the endpoint)
    time: float
    execution: str  # the deploying (or deleting) execution's ARN
    package: str = ""  # the model package ARN deployed
    config: str = ""
    until: Optional[float] = None  # when the next entry replaced it (or deleted the endpoint)
    next: Optional["Deployment"] = None
    outside: str = ""  # the newest entry, when the endpoint changed since without the log

    @property
    def version(self) -> str:
        return _version_of(self.package)

    @property
    def live(self) -> bool:
        return self.action == deployment_log.DEPLOYED and self.next is None and not self.outside

    @property
    def text(self) -> str:
        """"deployed v3 to mnist-mlp at ...; replaced by v4 at ..." (what it did, then)."""
        if self.action == deployment_log.DELETED:
            return f"deleted endpoint {self.endpoint} at {when(self.time)}"
        done = f"deployed {self.version} to {self.endpoint} at {when(self.time)}"
        if self.outside:
            return f"{done}; {self.outside}"
        if self.next is None:
            return f"{done}; still live"
        if self.next.action == deployment_log.DELETED:
            return f"{done}; endpoint deleted at {when(self.next.time)}"
        return f"{done}; replaced by {self.next.version} at {when(self.next.time)}"


def history(sources: Sources, log_uri: str, endpoint: str) -> List[Deployment]:
    """One endpoint's entries, newest first, each knowing what came after it."""
    prefix = deployment_log.endpoint_prefix(log_uri, endpoint)
    entries = []
    for uri in sorted(sources.list_s3(prefix)):
        try:
            doc = json.loads(sources.read_s3(uri))
            entries.append(Deployment(
                endpoint=doc["endpoint"], action=doc["action"], time=float(doc["time"]),
                execution=doc.get("execution", ""), package=doc.get("model_package_arn", ""),
                config=doc.get("endpoint_config", "")))
        except (ValueError, KeyError, TypeError, OSError):
            continue  # an entry that is not ours: not shown
    for older, newer in zip(entries, entries[1:]):
        older.until, older.next = newer.time, newer
    if entries and entries[-1].action == deployment_log.DEPLOYED:
        entries[-1].outside = _changed_outside(sources.sagemaker, endpoint, entries[-1].config)
    return entries[::-1]


def _changed_outside(sm, endpoint: str, config: str) -> str:
    """What became of an endpoint since its last logged deployment, when something other than
    the pipeline changed it (a console or CLI delete, a hand-made update); "" when nothing."""
    try:
        desc = sm.describe_endpoint(EndpointName=endpoint)
    except ClientError as err:
        if "could not find" in err.response["Error"].get("Message", "").lower():
            return "the endpoint has since been deleted"
        return ""  # not known now (throttled, denied): say nothing rather than guess
    if desc.get("EndpointConfigName") not in (config, None):
        return f"no longer live: the endpoint now runs config {desc['EndpointConfigName']}"
    return ""


def of_run(sources: Sources, run) -> List[Deployment]:
    """What this execution did to its endpoint (deployed, deleted), each entry knowing what
    replaced it; [] when it changed nothing."""
    uri, endpoint = run.deployment_log, run.parameters.get("EndpointName")
    if not uri or not endpoint:
        return []
    return [d for d in history(sources, uri, endpoint) if d.execution == run.arn]


DECISIONS = {  # DeployModel's result when it changed nothing, in words
    "already_serving": "changed nothing: the endpoint already served {}",
    "serving_not_approved": "changed nothing: the endpoint serves {}, which is not Approved, "
                            "and no Approved version remains",
    "left_to_its_run": "changed nothing: left {} to the run that registered it",
    "nothing_approved": "changed nothing: no Approved version in {}",
    "approval_status": "did not deploy: the package is {}",
}


def decision_text(result: Optional[dict]) -> str:
    """Why a DeployModel that recorded no deployment changed nothing ("" if unknown)."""
    for key, text in DECISIONS.items():
        if result and key in result:
            return text.format(_version_of(str(result[key])))
    return ""


def run_lines(run) -> List[str]:
    """What a run did to its endpoint, for a page or the CLI."""
    if run.deployments:
        return [d.text for d in reversed(run.deployments)]
    return [decision_text(run.deploy_result)] if decision_text(run.deploy_result) else []


def _version_of(arn: str) -> str:
    tail = arn.rsplit("/", 1)[-1]
    return f"v{tail}" if tail.isdigit() and "model-package/" in arn else arn


def endpoint_log_uri(sm, endpoint: dict) -> Optional[str]:
    try:
        tags = sm.list_tags(ResourceArn=endpoint["EndpointArn"])["Tags"]
    except ClientError:
        return None
    return next((t["Value"] for t in tags if t["Key"] == LOG_TAG), None)


def serving(sm, endpoint_name: str) -> Optional[str]:
    """The model package an endpoint serves now (by its model's tag), or None."""
    try:
        desc = sm.describe_endpoint(EndpointName=endpoint_name)
        config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
        model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        tags = sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]
    except (ClientError, KeyError, IndexError):
        return None
    return next((t["Value"] for t in tags if t["Key"] == PACKAGE_TAG), None)


@dataclass
class Live:
    """An endpoint as the registry sees it: the package it serves, since when, and that
    package's approval status now."""

    endpoint: str
    package: Optional[str]
    since: Optional[float]
    status: Optional[str]
    deployments: List[Deployment]

    @property
    def warning(self) -> str:
        if self.package and self.status != "Approved":
            return (f"serving a {self.status or 'deleted'} model ({_version_of(self.package)}): "
                    "approve a version to deploy it, or delete the endpoint")
        return ""


def live_endpoints(sources: Sources) -> Dict[str, Live]:
    """Every endpoint with what it serves and its deployment history."""
    sm, found = sources.sagemaker, {}
    for summary in all_items(sm.list_endpoints, "Endpoints"):
        name = summary["EndpointName"]
        package = serving(sm, name)
        uri = endpoint_log_uri(sm, summary)
        past = history(sources, uri, name) if uri else []
        since = next((d.time for d in past if d.live and d.package == package), None)
        found[name] = Live(name, package, since, package_status(sm, package), past)
    return found


def package_status(sm, package) -> Optional[str]:
    if not package:
        return None
    try:
        return sm.describe_model_package(ModelPackageName=package).get("ModelApprovalStatus")
    except ClientError:
        return None
