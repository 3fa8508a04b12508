"""What every API family of the backend shares: the store, the region, resource lookups,
create-only records, status transitions, tags, and the spelling of members."""
from typing import Optional

import botocore

from pipeline.local.errors import ServiceError, validation
from pipeline.local.paging import page
from pipeline.local.resources import SERVICE_MODEL
from pipeline.local.store import AlreadyExists, Store

MAX_TAGS = 50  # per resource, as AWS allows


def as_kwargs(request: dict) -> dict:
    """A request's top-level members as the backend's keyword arguments."""
    return {botocore.xform_name(key): value for key, value in request.items()}


def aws_names(operation: str, kwargs: dict) -> dict:
    """Keyword arguments back in AWS's spelling, as the operation's input shape names them."""
    names = {botocore.xform_name(m): m
             for m in SERVICE_MODEL.operation_model(operation).input_shape.members}
    return {names[key]: value for key, value in kwargs.items()}


def given(**members) -> dict:
    """The members a request set (None: left as they are)."""
    return {name: value for name, value in members.items() if value is not None}


class Tags:
    """Tags by resource ARN (AddTags, ListTags, DeleteTags, and the Tags of every Create*)."""

    def __init__(self, store: Store):
        self.store = store

    def of(self, arn) -> list:
        return (self.store.get("tags", arn) or {"Tags": []})["Tags"]

    def add(self, arn, tags):
        if not tags:
            return
        with self.store.lock:
            current = {t["Key"]: t["Value"] for t in self.of(arn)}
            current.update({t["Key"]: t.get("Value", "") for t in tags})
            if len(current) > MAX_TAGS:
                raise validation(f"A resource can have at most {MAX_TAGS} tags; this request "
                                 f"would give {arn} {len(current)}.")
            self.store.put("tags", arn, {"Tags": [{"Key": k, "Value": v}
                                                  for k, v in current.items()]})

    # the API's operations
    def add_tags(self, resource_arn, tags):
        self.add(resource_arn, tags)
        return {"Tags": tags}

    def list_tags(self, resource_arn, next_token=None, max_results=None):
        return page(self.of(resource_arn), "Tags", next_token, max_results)

    def delete_tags(self, resource_arn, tag_keys):
        with self.store.lock:
            keep = [t for t in self.of(resource_arn) if t["Key"] not in set(tag_keys)]
            self.store.put("tags", resource_arn, {"Tags": keep})
        return {}


class Family:
    """One API family's base: lookups and writes over the shared store."""

    def __init__(self, store: Store, region: str, tags: Tags):
        self.store, self.region, self.tags = store, region, tags

    def _get(self, resource, name: str) -> dict:
        doc = self.store.get(resource.kind, name)
        if doc is None:
            raise resource.not_found(name, self.region)
        return doc

    def _delete(self, resource, name: str) -> dict:
        """Delete a resource that exists (not found otherwise); what it was."""
        with self.store.lock:
            doc = self._get(resource, name)
            self.store.delete(resource.kind, name)
        return doc

    def _create(self, resource, name: str, doc: dict, exists: ServiceError, tags=None) -> dict:
        """A new resource (never an overwrite: ``exists`` is raised when the name is taken),
        then its tags."""
        try:
            self.store.create(resource.kind, name, doc)
        except AlreadyExists:
            raise exists from None
        self.tags.add(doc[resource.arn_field], tags)
        return doc

    def _transition(self, resource, name: str, status: str, refusal: Optional[str] = None,
                    **changes) -> dict:
        """Move a resource to ``status`` with changes; a move its transitions do not allow is a
        ValidationException, with the API's own ``refusal`` message where it has one
        (``{status}``: the current status, ``{arn}``: the resource's ARN)."""
        with self.store.lock:
            doc = self._get(resource, name)
            current = doc[resource.status_field]
            if not resource.allows(current, status):
                raise validation((refusal or "{kind} is {status}; it cannot become {new}")
                                 .format(status=current, new=status, kind=resource.__name__,
                                         arn=doc.get(resource.arn_field, "")))
            return self.store.update(resource.kind, name, **{resource.status_field: status},
                                     **changes)
