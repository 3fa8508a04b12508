"""One page of a listing, as every List* and Search answer pages: NextToken is the index of
the next item, as a string, and a token this service never gave is refused."""
import re
from typing import Optional

from pipeline.local.errors import validation

INDEX = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() takes "²", int() does not


def index_of(token) -> Optional[int]:
    """The index a token of this service's stands for; None for any other text."""
    return int(token) if isinstance(token, str) and INDEX.fullmatch(token) else None


def page(items: list, out_key: str, next_token=None, max_results=None) -> dict:
    """One page; NextToken is the index of the next item, as a string."""
    start = index_of(next_token) if next_token else 0
    if start is None or start > len(items):
        raise validation("Invalid pagination token")  # one this service never gave
    limit = int(max_results or 100)
    response: dict = {out_key: items[start:start + limit]}
    if start + limit < len(items):
        response["NextToken"] = str(start + limit)
    return response
