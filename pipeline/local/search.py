"""Search: SageMaker's query over resources, for what a local registry and job history hold
(training jobs, model packages and groups, pipelines and their executions, endpoints, models).

A SearchExpression's Filters, NestedFilters and SubExpressions (And / Or) are evaluated on each
resource's Search record (its describe fields and its Tags, as the SearchRecord shape names
them). A filter's Name is a property path (``HyperParameters.epochs``, ``Tags.project``,
``CustomerMetadataProperties.CodeCommit``); values compare as numbers when both sides are
numbers, as times when the property is a time, else as text.
"""
import operator
from datetime import datetime

from pipeline.local.errors import validation
from pipeline.local.paging import page
from pipeline.local.resources import (SERVICE_MODEL, Endpoint, Model, ModelPackage,
                                      ModelPackageGroup, Pipeline, PipelineExecution,
                                      TrainingJob)

RESOURCES = {"TrainingJob": TrainingJob, "ModelPackage": ModelPackage,
             "ModelPackageGroup": ModelPackageGroup, "Pipeline": Pipeline,
             "PipelineExecution": PipelineExecution, "Endpoint": Endpoint, "Model": Model}
_RECORD = SERVICE_MODEL.operation_model("Search").output_shape.members["Results"].member
_MISSING = object()
_COMPARISONS = {"Equals": operator.eq, "NotEquals": operator.ne, "GreaterThan": operator.gt,
                "GreaterThanOrEqualTo": operator.ge, "LessThan": operator.lt,
                "LessThanOrEqualTo": operator.le}


def search(store, tags, resource, search_expression=None, sort_by=None, sort_order=None,
           next_token=None, max_results=None, cross_account_filter_option=None,
           visibility_conditions=None):
    """The Search answer: matching records, sorted (LastModifiedTime, Descending by
    default), one page (10 by default)."""
    if visibility_conditions:
        raise validation("VisibilityConditions are not supported by the local service")
    kind = RESOURCES.get(resource)
    if kind is None:
        raise validation(f"Search over {resource} is not supported by the local service; it "
                         f"searches {', '.join(sorted(RESOURCES))}")
    if search_expression is not None and _elements(search_expression) > MAX_ELEMENTS:
        raise validation(f"A SearchExpression can contain up to {MAX_ELEMENTS} elements "
                         "(filters, nested filters and sub-expressions, at every level)")
    members = set(_RECORD.members[resource].members)
    records = []
    for doc in store.list(kind.kind):
        record = {k: v for k, v in doc.items() if k in members and v not in (None, "")}
        if "Tags" in members:
            record["Tags"] = tags.of(doc[kind.arn_field])
        if search_expression is None or _matches(record, search_expression):
            records.append(record)
    key = sort_by or "LastModifiedTime"
    records.sort(key=lambda r: _sortable(_lookup(r, key)),
                 reverse=(sort_order or "Descending") == "Descending")
    if cross_account_filter_option == "CrossAccount":
        records = []  # one account here: nothing is shared from another
    return page([{resource: r} for r in records], "Results", next_token, max_results or 10)


class SearchApi:
    """The Search operation over the store's resources and their tags."""

    def __init__(self, store, tags):
        self.store, self.tags = store, tags

    def search(self, resource, **query):
        return search(self.store, self.tags, resource, **query)


MAX_ELEMENTS = 20  # "A SearchExpression can contain up to twenty elements" (AWS's API docs)


def _elements(expression) -> int:
    """Filters, nested filters and sub-expressions in the whole expression, counted without
    recursion."""
    count, pending = 0, [expression]
    while pending:
        current = pending.pop()
        subs = current.get("SubExpressions", [])
        count += len(current.get("Filters", [])) + len(current.get("NestedFilters", [])) + \
            len(subs)
        pending.extend(subs)
    return count


def _matches(record, expression) -> bool:
    tests = [_passes(record, f) for f in expression.get("Filters", [])]
    tests += [_nested(record, n) for n in expression.get("NestedFilters", [])]
    tests += [_matches(record, e) for e in expression.get("SubExpressions", [])]
    return any(tests) if expression.get("Operator") == "Or" else all(tests)


def _nested(record, nested) -> bool:
    """Some element of the list at NestedPropertyName passes every filter (whose names start
    with that property's, as in ``FinalMetricDataList.Value``)."""
    prefix = nested["NestedPropertyName"] + "."
    items = _lookup(record, nested["NestedPropertyName"])
    filters = [{**f, "Name": f["Name"][len(prefix):] if f["Name"].startswith(prefix)
                else f["Name"]} for f in nested["Filters"]]
    return isinstance(items, list) and any(
        all(_passes(item, f) for f in filters) for item in items)


def _passes(record, flt) -> bool:
    op, value = flt.get("Operator", "Equals"), flt.get("Value")
    actual = _lookup(record, flt["Name"])
    if op == "Exists":
        return actual is not _MISSING
    if op == "NotExists":
        return actual is _MISSING
    if actual is _MISSING:
        return op == "NotEquals"
    if value is None:
        raise validation(f"Filter on {flt['Name']} with operator {op} needs a Value")
    if op == "In":
        return str(actual) in [v.strip() for v in value.split(",")]
    if op == "Contains":
        return value.lower() in str(actual).lower()
    return _COMPARISONS[op](*_comparable(actual, value))


def _lookup(record, path):
    """A dotted property path; ``Tags.KEY`` reads the tag KEY (tags are a list of pairs)."""
    value = record
    for part in path.split("."):
        if isinstance(value, list) and all(isinstance(t, dict) and "Key" in t for t in value):
            value = {t["Key"]: t.get("Value") for t in value}
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _comparable(actual, value):
    """Both as numbers when they are (a time, kept as epoch seconds, against an ISO 8601
    value too), else both as text."""
    try:
        return float(actual), float(value)
    except (TypeError, ValueError):
        pass
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        try:
            return float(actual), datetime.fromisoformat(
                value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return str(actual), value


def _sortable(value):
    if value is _MISSING or value is None:
        return (1, 0, "")
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (0, 0, str(value))
