"""Files a user sends to an endpoint (``predict``): their content type, from the extension,
as the model's ``input_fn`` accepts them."""
import os
from typing import List, Tuple

from pipeline.errors import UsageError

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                 ".npy": "application/x-npy", ".json": "application/json", ".csv": "text/csv"}


def read_payloads(paths) -> List[Tuple[str, str, bytes]]:
    """(path, content type, bytes) per file; UsageError naming the file that cannot be sent."""
    payloads = []
    for path in paths:
        content_type = CONTENT_TYPES.get(os.path.splitext(path)[1].lower())
        if content_type is None:
            raise UsageError(f"{path}: unsupported file type; use "
                             f"{', '.join(sorted(CONTENT_TYPES))}")
        try:
            with open(path, "rb") as handle:
                payloads.append((path, content_type, handle.read()))
        except OSError as err:
            raise UsageError(f"{path}: {err.strerror}")
    return payloads
