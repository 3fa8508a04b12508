"""EventBridge event patterns: checked at PutRule as EventBridge checks them, then matched.

A pattern is a JSON object whose leaves are arrays; an array holds plain values (strings,
numbers, booleans, null) or one-key operator objects. EventBridge refuses anything else with
InvalidEventPatternException, and so does this. Of the operators, ``prefix`` and ``exists`` are
matched here (what rules on the model registry's events use); a valid pattern using another
(``suffix``, ``anything-but``, ``numeric``, ...) is refused with a plain reason rather than
accepted and then never matched.
"""
import json

MAX_DEPTH = 32  # levels of objects and arrays; deeper patterns are refused before any use
OPERATORS = {"prefix", "suffix", "anything-but", "numeric", "exists", "cidr",
             "equals-ignore-case", "wildcard"}
MATCHED_HERE = {"prefix", "exists"}


class InvalidPattern(ValueError):
    """EventBridge would refuse this pattern."""


class UnsupportedPattern(ValueError):
    """EventBridge takes this pattern; the local service does not match it."""


def parse(text) -> dict:
    """The pattern in ``text``, checked (InvalidPattern, UnsupportedPattern)."""
    if not isinstance(text, str):
        raise InvalidPattern("the pattern must be a JSON string")
    try:
        pattern = json.loads(text)
    except RecursionError:
        raise InvalidPattern(f"nested deeper than {MAX_DEPTH} levels")
    except ValueError as err:
        raise InvalidPattern(f"not JSON: {err}")
    check(pattern)
    return pattern


def check(pattern, depth=1) -> None:
    if not isinstance(pattern, dict) or not pattern:
        raise InvalidPattern("a pattern is a non-empty JSON object")
    if depth > MAX_DEPTH:
        raise InvalidPattern(f"nested deeper than {MAX_DEPTH} levels")
    for key, value in pattern.items():
        if isinstance(value, dict):
            check(value, depth + 1)
        elif isinstance(value, list):
            _check_leaf(key, value)
        else:
            raise InvalidPattern(f"match value of {key!r} must be an array or an object")


def _check_leaf(key, options) -> None:
    if not options:
        raise InvalidPattern(f"empty array for {key!r}")
    for option in options:
        if isinstance(option, (list, dict)) and not _operator(option):
            raise InvalidPattern(f"array of {key!r} may hold only values and operator objects")
        if isinstance(option, dict):
            _check_operator(key, option)


def _operator(option) -> bool:
    return isinstance(option, dict) and len(option) == 1 and next(iter(option)) in OPERATORS


def _check_operator(key, option) -> None:
    (name, argument), = option.items()
    if name in ("prefix", "suffix", "equals-ignore-case", "wildcard", "cidr") and \
            not isinstance(argument, str):
        raise InvalidPattern(f"{name} match pattern of {key!r} must be a string")
    if name == "exists" and not isinstance(argument, bool):
        raise InvalidPattern(f"exists match pattern of {key!r} must be true or false")
    if name == "numeric" and not (isinstance(argument, list) and argument):
        raise InvalidPattern(f"numeric match pattern of {key!r} must be a non-empty array")
    if name == "anything-but" and isinstance(argument, dict) and not (
            len(argument) == 1 and next(iter(argument)) in ("prefix", "suffix")):
        raise InvalidPattern(f"anything-but of {key!r} takes values or one prefix/suffix")
    if name not in MATCHED_HERE:
        raise UnsupportedPattern(f"the {name!r} operator (on {key!r}) is not matched by the "
                                 f"local service; it matches {' and '.join(sorted(MATCHED_HERE))}")


def matches(pattern, event) -> bool:
    """Whether ``event`` matches a checked pattern: nested objects, arrays of allowed values (a
    list-valued field matches when any item does), ``prefix`` and ``exists``."""
    for key, wanted in pattern.items():
        present = isinstance(event, dict) and key in event
        value = event.get(key) if present else None
        if isinstance(wanted, dict):
            if not present or not matches(wanted, value):
                return False
            continue
        values = value if isinstance(value, list) else [value]
        if not any(_allowed(option, v, present) for option in wanted for v in values):
            return False
    return True


def _allowed(option, value, present) -> bool:
    if isinstance(option, dict):
        (name, argument), = option.items()
        if name == "prefix":
            return isinstance(value, str) and value.startswith(argument)
        return present == bool(argument)  # exists: the only other operator a check lets by
    return present and option == value
