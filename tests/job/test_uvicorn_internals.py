"""The uvicorn internals src/inference/protocol.py relies on exist in the pinned uvicorn (the
model server's environment); a version that removes one fails here, naming it."""
import protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def test_every_uvicorn_internal_the_protocol_uses_exists():
    missing = protocol.missing_uvicorn_internals()
    assert not missing, ("uvicorn no longer has what src/inference/protocol.py uses: "
                         + ", ".join(missing) + " (see UVICORN_INTERNALS)")


def test_the_check_names_an_internal_that_is_gone(monkeypatch):
    monkeypatch.delattr(HttpToolsProtocol, "_unset_keepalive_if_required")
    assert protocol.missing_uvicorn_internals() == [
        "HttpToolsProtocol methods: _unset_keepalive_if_required"]
