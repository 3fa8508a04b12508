"""Connections changing hands between the local servers: a connection's socket and the bytes
already read from it are passed over an abstract Unix socket (SCM_RIGHTS) to the server
listening there, which adopts it as one of its own. The local service passes a client's runtime
connection to the endpoint's model server this way; the model server passes it back for any
request not its own; a model server with several workers deals its connections out so.
"""
import array
import asyncio
import socket
import struct

PASS_LIMIT = 1024 * 1024  # first bytes passed with a connection, at most
_LENGTH = struct.Struct("!I")


async def send_connection(where, fd, data, timeout=2.0) -> bool:
    """Pass a connection (its descriptor) and the bytes already read from it to the server
    listening on ``where``, without blocking the event loop: True once that server has taken
    it, False if it did not (then it is still ours alone). Once the descriptor is sent the
    receiver decides: it takes the connection or closes the channel, never both, so a slow
    receiver is waited for rather than given up on (two owners would split its requests)."""
    if len(data) > PASS_LIMIT:
        return False
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(channel, where), timeout)
            # a few bytes into an empty socket buffer: never blocks
            channel.sendmsg([_LENGTH.pack(len(data))], [
                (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            if data:  # (sending nothing to a receiver already done would fail: EPIPE)
                await loop.sock_sendall(channel, data)
        except OSError:
            pass  # whether it took the connection all the same, it tells below
        try:
            return await loop.sock_recv(channel, 1) == b"1"
        except OSError:
            return False


async def receive_connection(channel):
    """(the passed socket, its first bytes), from a channel connection ``send_connection``
    made; the sender is told it was taken. On any failure the socket is closed, not taken."""
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    ready = loop.create_future()
    loop.add_reader(channel.fileno(), ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_reader(channel.fileno())
    fds = array.array("i")
    head, ancillary, _, _ = channel.recvmsg(_LENGTH.size, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if len(fds) != 1 or len(head) != _LENGTH.size:
        for fd in fds:
            socket.close(fd)
        raise ValueError("not a passed connection")
    sock = socket.socket(fileno=fds[0])
    try:
        size, data = _LENGTH.unpack(head)[0], bytearray()
        while len(data) < size:
            chunk = await loop.sock_recv(channel, min(65536, size - len(data)))
            if not chunk:
                raise ValueError("the passed bytes were cut short")
            data += chunk
        await loop.sock_sendall(channel, b"1")
    except BaseException:  # errors, and a timeout's cancellation: not taken
        sock.close()
        raise
    return sock, bytes(data)


TAKE_SECONDS = 10.0  # a sender has this long to send what it passes


def adopt(loop, listener, make_protocol):
    """Take connections other servers pass on ``listener`` (a listening Unix socket): each
    becomes a connection of ``make_protocol()`` (a Protocol), its first bytes read first."""
    listener.setblocking(False)

    def accept():
        try:
            channel, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        loop.create_task(_take(loop, channel, make_protocol))

    loop.add_reader(listener.fileno(), accept)


def stop_adopting(loop, listener):
    """Take no more connections on ``listener``: a sender finds no one there, and keeps its
    connection."""
    loop.remove_reader(listener.fileno())
    listener.close()


async def _take(loop, channel, make_protocol):
    with channel:
        try:
            sock, data = await asyncio.wait_for(receive_connection(channel), TAKE_SECONDS)
        except (OSError, ValueError, asyncio.TimeoutError):
            return
    protocol = make_protocol()
    protocol.first_bytes = data
    await loop.connect_accepted_socket(lambda: protocol, sock)


def listener(name):
    """A listening abstract Unix socket (Linux: no file, no path length limit)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0" + name)
    sock.listen(128)
    return sock
