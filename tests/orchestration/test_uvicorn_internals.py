"""The uvicorn internals src/inference/protocol.py relies on exist in the orchestration
environment's pinned uvicorn too (the local service serves with the same protocol)."""
from pipeline.local.shared import protocol


def test_every_uvicorn_internal_the_protocol_uses_exists():
    missing = protocol.missing_uvicorn_internals()
    assert not missing, ("uvicorn no longer has what src/inference/protocol.py uses: "
                         + ", ".join(missing) + " (see UVICORN_INTERNALS)")
