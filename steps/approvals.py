"""Which version of a model package group an endpoint should serve: the rule reviewers rely on.

The most recently approved version wins, by approval time: approving an older version rolls
back to it on purpose, and rejecting the live version falls back to the most recently approved
one that remains. A package's approval time is its ``ApprovedAt`` metadata (written by
``run_pipeline.py approve`` and the local run browser in the same UpdateModelPackage call that
approves it, so it is there when the state-change event starts the deploy pipeline). A package
approved elsewhere (Studio, the console) has no stamp: its LastModifiedTime stands in, and a
package registered Approved counts from its creation. boto3 only: AWS or the local service.
"""
from datetime import datetime, timezone

from botocore.exceptions import ClientError

APPROVED_AT = "ApprovedAt"  # CustomerMetadataProperties: when it was last approved (ISO 8601)
HISTORY_PREFIX = "Approval."  # ... and "Approval.<time>": "<status> by <who>[ - comment]"
HISTORY_KEEP = 10  # entries kept (a package holds at most 50 metadata properties)
RUNNING = ("Executing", "Stopping")


def iso(seconds: float) -> str:
    """A time as ApprovedAt writes it: UTC, milliseconds, sortable, within metadata's pattern."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


def _seconds(value) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value or 0)


def approval_time(package: dict) -> float:
    """When the package was (last) approved, in seconds."""
    stamp = package.get("CustomerMetadataProperties", {}).get(APPROVED_AT)
    if stamp:
        try:
            return parse_iso(stamp)
        except ValueError:
            pass  # written by hand: fall back to the registry's own times
    return _seconds(package.get("LastModifiedTime") or package.get("CreationTime"))


def approved_packages(sm, group: str) -> list:
    """The group's Approved packages, described (their metadata), newest approval first."""
    arns, token = [], None
    while True:
        page = sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus="Approved",
                                      MaxResults=100, **({"NextToken": token} if token else {}))
        arns += [p["ModelPackageArn"] for p in page["ModelPackageSummaryList"]]
        token = page.get("NextToken")
        if not token:
            break
    packages = [sm.describe_model_package(ModelPackageName=arn) for arn in arns]
    return sorted(packages, key=lambda p: (approval_time(p), p.get("ModelPackageVersion", 0)),
                  reverse=True)


def to_serve(sm, group: str):
    """The package the group's endpoint should serve (its description), or None."""
    packages = approved_packages(sm, group)
    return packages[0] if packages else None


def registering_run_active(sm, package: dict) -> bool:
    """Whether the pipeline run that registered this package (Approved) is still running: it
    deploys the package itself, and an event-started deploy must not race it. A package that
    was approved again later is no longer that run's to deploy."""
    meta = package.get("CustomerMetadataProperties", {})
    if meta.get("RegisteredApproval") != "Approved" or APPROVED_AT in meta:
        return False
    arn = meta.get("PipelineExecutionArn")
    if not arn:
        return False
    try:
        status = sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
            "PipelineExecutionStatus"]
    except ClientError:
        return False
    return status in RUNNING


def approval_update(arn: str, status: str, who: str, comment: str, package: dict,
                    now: float) -> dict:
    """The UpdateModelPackage request that approves or rejects ``arn``: the status, the
    reviewer's comment, the ApprovedAt stamp (set on approval, removed on rejection) and one
    history entry (the oldest dropped past HISTORY_KEEP)."""
    meta = package.get("CustomerMetadataProperties", {})
    stamp = iso(now)
    entry = f"{status} by {who}" + (f" - {comment}" if comment else "")
    add = {f"{HISTORY_PREFIX}{stamp}": metadata_text(entry)}
    remove = []
    if status == "Approved":
        add[APPROVED_AT] = stamp
    elif APPROVED_AT in meta:
        remove.append(APPROVED_AT)
    history = sorted(k for k in meta if k.startswith(HISTORY_PREFIX))
    remove += history[:max(0, len(history) + 1 - HISTORY_KEEP)]
    # every kept key is sent, not only the new ones: AWS merges, some emulations replace
    kept = {k: v for k, v in {**meta, **add}.items() if k not in remove}
    request = {"ModelPackageArn": arn, "ModelApprovalStatus": status,
               "CustomerMetadataProperties": kept}
    if comment:
        request["ApprovalDescription"] = comment[:1024]
    if remove:
        request["CustomerMetadataPropertiesToRemove"] = remove
    return request


def metadata_text(text: str, limit: int = 256) -> str:
    """Text as a metadata value may hold it: letters, digits, spaces and ``_.:/=+-@`` (other
    characters become spaces), at most ``limit`` characters."""
    kept = "".join(c if c.isalnum() or c.isspace() or c in "_.:/=+-@" else " " for c in text)
    return " ".join(kept.split())[:limit] or "-"


def history(package: dict) -> list:
    """The approval history the metadata keeps: (time, text), newest first."""
    meta = package.get("CustomerMetadataProperties", {})
    rows = []
    for key in sorted((k for k in meta if k.startswith(HISTORY_PREFIX)), reverse=True):
        try:
            rows.append((parse_iso(key[len(HISTORY_PREFIX):]), meta[key]))
        except ValueError:
            continue
    return rows
