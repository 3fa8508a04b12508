"""The List* operations' engine: documented filters, summary shapes, sorting, one page."""
from datetime import datetime
from typing import List, Optional

import botocore

from pipeline.local.errors import validation
from pipeline.local.paging import page

_TIME_FILTERS = {"creation_time_after": ("CreationTime", 1), "created_after": ("CreationTime", 1),
                 "creation_time_before": ("CreationTime", -1),
                 "created_before": ("CreationTime", -1),
                 "last_modified_time_after": ("LastModifiedTime", 1),
                 "last_modified_time_before": ("LastModifiedTime", -1)}
_PAGING = {"sort_by", "sort_order", "next_token", "max_results"}


def _epoch(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _filtered(resource, docs: List[dict], name_field: str, query: dict) -> List[dict]:
    """Every filter the query sets; one this service cannot apply is refused, not ignored."""
    for key, value in query.items():
        if value is None or key in _PAGING:
            continue
        if key == "name_contains":
            docs = [d for d in docs if value.lower() in d[name_field].lower()]
        elif key in _TIME_FILTERS:
            field, sign = _TIME_FILTERS[key]  # compared in milliseconds, as clients send them
            bound = round(_epoch(value), 3)
            docs = [d for d in docs if d.get(field) is not None
                    and (round(d[field], 3) - bound) * sign > 0]
        elif key == "status_equals" and resource.status_field:
            docs = [d for d in docs if d.get(resource.status_field) == value]
        else:
            raise validation(f"{botocore.xform_name(key)} is not supported by the local "
                             "service's " + resource.list_operation[0])
    return docs


def list_answer(resource, docs: List[dict], name_field: Optional[str] = None, **query) -> dict:
    """A List* answer: every filter the operation documents (NameContains, the creation and
    modification time bounds, StatusEquals), the summary shape, SortBy / SortOrder with the
    operation's documented defaults, then one page of the documented default size."""
    name_field = name_field or resource.name_field
    items = [resource.summary(d) for d in _filtered(resource, docs, name_field, query)]
    sort_fields = {"CreationTime": "CreationTime", "Name": name_field,
                   "Status": resource.status_field, **resource.sort_fields}
    key = sort_fields.get(query.get("sort_by")) or sort_fields["CreationTime"]
    order = query.get("sort_order") or resource.sort_order
    items.sort(key=lambda i: (i.get(key) is None, i.get(key) or 0),
               reverse=order == "Descending")
    return page(items, resource.list_operation[1], query.get("next_token"),
                query.get("max_results") or resource.page_size)
