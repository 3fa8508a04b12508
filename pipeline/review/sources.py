"""Where a review reads from, the same on AWS, from the CLI and inside the local service."""
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, List, Optional


def epoch(value) -> Optional[float]:
    """A time as seconds: boto3 gives datetimes, the local backend numbers."""
    if value is None:
        return None
    return value.timestamp() if isinstance(value, datetime) else float(value)


@dataclass
class Sources:
    """Where a review reads from: a boto3-shaped SageMaker client, S3 bytes by URI, job logs by
    job name (CloudWatch on AWS, the service's log files locally), and the URIs of the objects
    under an S3 prefix (the deployment log)."""

    sagemaker: Any  # a boto3 client (or the local backend in its shape)
    read_s3: Callable[[str], bytes]
    job_log: Callable[[str], str]
    list_s3: Callable[[str], List[str]]

    def read_json(self, uri):
        return json.loads(self.read_s3(uri))


def all_items(call, key, **query) -> list:
    items, token = [], None
    while True:
        page = call(**query, **({"NextToken": token} if token else {}))
        items += page[key]
        token = page.get("NextToken")
        if not token:
            return items
