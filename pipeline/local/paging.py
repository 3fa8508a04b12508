"""One page of a listing, as every List* and Search answer pages: NextToken is the index of
the next item, as a string, and a token this service never gave is refused."""
from pipeline.local.errors import validation


def page(items: list, out_key: str, next_token=None, max_results=None) -> dict:
    """One page; NextToken is the index of the next item, as a string."""
    if next_token and not (str(next_token).isdigit() and int(next_token) <= len(items)):
        raise validation("Invalid pagination token")  # one this service never gave
    start, limit = int(next_token or 0), int(max_results or 100)
    response: dict = {out_key: items[start:start + limit]}
    if start + limit < len(items):
        response["NextToken"] = str(start + limit)
    return response
