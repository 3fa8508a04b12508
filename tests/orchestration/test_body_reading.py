"""Reading request bodies (src/inference/protocol.py, both servers' one place): limits at their
exact boundary, from the declared length and from what arrives; a client that leaves."""
import asyncio

import pytest

from pipeline.local import framing
from pipeline.local.shared import protocol


def receiver(*pieces, gone=False):
    """An ASGI receive() handing over ``pieces`` (the last without more_body)."""
    messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
                for i, p in enumerate(pieces)]
    if gone:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive():
        return messages.pop(0)
    return receive


def run(coroutine):
    return asyncio.run(coroutine)


async def pieces(receive, limit):
    return b"".join([p async for p in protocol.body_pieces(receive, limit)])


@pytest.mark.parametrize("read", [
    lambda receive, declared, limit: protocol.read_body(receive, declared, limit),
    lambda receive, declared, limit: (protocol.check_declared(declared, limit),
                                      pieces(receive, limit))[1]])
def test_a_body_of_exactly_the_limit_passes_and_one_byte_more_does_not(read):
    assert run(read(receiver(b"12345", b"67890"), "10", 10)) == b"1234567890"
    assert run(read(receiver(b"12345", b"67890"), None, 10)) == b"1234567890"
    with pytest.raises(protocol.BodyTooLarge) as err:  # refused before anything is read
        run(read(receiver(b"x" * 11), "11", 10))
    assert (err.value.size, err.value.read, err.value.more) == (11, 0, True)
    with pytest.raises(protocol.BodyTooLarge) as err:  # undeclared: once it passes the limit
        run(read(receiver(b"123456", b"78901", b"more"), None, 10))
    assert (err.value.size, err.value.read, err.value.more) == (11, 11, True)
    assert "request body of 11 bytes is over this route's limit of 10 bytes" == str(err.value)
    with pytest.raises(protocol.ClientGone):
        run(read(receiver(b"123", gone=True), None, 10))


def test_the_services_spooled_bodies_keep_the_same_limits(tmp_path):
    spool, md5 = run(framing.spool_body(receiver(b"12345", b"67890"),
                                        {"content-length": "10"}, 10, str(tmp_path)))
    assert spool.read() == b"1234567890" and md5 == "e807f1fcf82d132f9bb018ca6738a19f"
    with pytest.raises(framing.TooLarge):
        run(framing.spool_body(receiver(b"x"), {"content-length": "11"}, 10, str(tmp_path)))
    with pytest.raises(framing.TooLarge):
        run(framing.spool_body(receiver(b"x" * 6, b"y" * 5), {}, 10, str(tmp_path)))
