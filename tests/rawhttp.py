"""Requests as raw bytes, framed well or badly on purpose, for the servers' robustness tests
(both test environments import it)."""
import socket

FRAMINGS = ["length", "chunked", "both", "short", "negative", "folded", "bad-chunk", "none"]


def frame(method, path, headers, body, framing):
    """A request with ``framing``: a right Content-Length, chunked, both at once, a length
    longer than the body, a negative one, a folded header line, a bad chunk size, or none."""
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + list(headers)
    if framing in ("length", "both"):
        head.append(f"Content-Length: {len(body)}")
    if framing == "short":
        head.append(f"Content-Length: {len(body) + 10}")
    if framing == "negative":
        head.append("Content-Length: -1")
    if framing in ("chunked", "both", "bad-chunk"):
        head.append("Transfer-Encoding: chunked")
    if framing == "folded":
        head.append(" Transfer-Encoding: chunked")
    payload = body
    if framing in ("chunked", "both"):
        payload = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    if framing == "bad-chunk":
        payload = b"zz\r\n" + body
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def exchange(port, request, timeout=30) -> bytes:
    """Send it all, close our side, and read everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # it answered and closed before reading it all: read that answer
            pass
        answer = b""
        try:
            while piece := sock.recv(65536):
                answer += piece
        except ConnectionResetError:  # closed with our unread bytes pending: keep the answer
            pass
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])
