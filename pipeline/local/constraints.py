"""Server-side request checks against the constraints in botocore's service model.

botocore's client-side ParamValidator checks types and minimums; AWS also enforces each member's
pattern, maximum length, enum and numeric range before an operation runs. So does this service,
answering as AWS does: ``ValidationException`` "1 validation error detected: Value '../x' at
'endpointName' failed to satisfy constraint: Member must satisfy regular expression pattern:
^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}". Patterns are Java regular expressions matched against the
whole value; the ``regex`` module reads their Unicode classes (``\\p{L}``) as Java does.
"""
import functools
import json
from typing import List, Optional

import regex

from pipeline.local.errors import ServiceError


@functools.lru_cache(maxsize=None)
def _pattern(text: str) -> Optional["regex.Pattern"]:
    try:
        return regex.compile(text)
    except regex.error:  # a handful of Java-only UTF-16 surrogate ranges: left unchecked
        return None


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def violations(value, shape, path: str) -> List[str]:
    """Every constraint ``value`` breaks, as AWS words them, depth first."""
    found: List[str] = []
    meta, kind = shape.metadata, shape.type_name

    def fail(rule):
        found.append(f"Value '{_shown(value)}' at '{path}' failed to satisfy constraint: "
                     f"Member must {rule}")

    if kind == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            fail(f"satisfy enum value set: [{', '.join(shape.enum)}]")
        if "max" in meta and len(value) > meta["max"]:
            fail(f"have length less than or equal to {meta['max']}")
        if "min" in meta and len(value) < meta["min"]:
            fail(f"have length greater than or equal to {meta['min']}")
        pattern = _pattern(meta["pattern"]) if "pattern" in meta else None
        if pattern is not None and pattern.fullmatch(value) is None:
            fail(f"satisfy regular expression pattern: {meta['pattern']}")
    elif kind in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "max" in meta and value > meta["max"]:
            fail(f"have value less than or equal to {meta['max']}")
        if "min" in meta and value < meta["min"]:
            fail(f"have value greater than or equal to {meta['min']}")
    elif kind == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            fail(f"have length less than or equal to {meta['max']}")
        for index, item in enumerate(value):
            found += violations(item, shape.member, f"{path}.{index + 1}.member")
    elif kind == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            fail(f"have length less than or equal to {meta['max']}")
        for key, item in value.items():
            found += violations(key, shape.key, f"{path}.key")
            found += violations(item, shape.value, f"{path}.{key}.member")
    elif kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                inner = f"{path}.{_camel(name)}" if path else _camel(name)
                found += violations(value[name], member, inner)
    return found


def check(params: dict, input_shape) -> None:
    """Raise AWS's ValidationException when a member breaks its model's constraints."""
    found = violations(params, input_shape, "")
    if found:
        count = f"{len(found)} validation error{'s' if len(found) > 1 else ''} detected: "
        raise ServiceError("ValidationException", count + "; ".join(found))
