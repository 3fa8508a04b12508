"""Where a request ends in a connection's bytes, as llhttp reads it.

The HTTP parser reads every byte it is given, requests after the current one included; a server
that may pass the next request to another server (the local service and its model servers pass
connections to each other) must give its parser one request at a time. ``RequestEnds`` is a
second llhttp parser fed the same bytes, with only the callback that marks a message's end, so
the two never disagree on framing.
"""
import httptools


class RequestEnds:
    """The end of the current request in the pieces of a connection's bytes. The usual piece,
    which ends where its request does, costs two calls into the parser; a piece holding more
    is bisected from the request's start, kept for that while the request is incomplete (up to
    ``limit`` bytes; past it, ``unsplittable``: the rest goes to the protocol's parser whole)."""

    def __init__(self, limit):
        self.limit = limit
        self.unsplittable = False
        self._fresh()

    def _fresh(self):
        self._parser = _parser(self)
        self._started = bytearray()  # the current request's bytes before the piece at hand
        self._ends = 0

    def on_message_complete(self):
        self._ends += 1

    def end(self, data):
        """How many bytes of ``data`` finish the current request; None if all of it belongs
        to the request and more is to come (or the parser refuses it: the protocol's parser
        will refuse it too, and say why)."""
        if self.unsplittable or not data:
            return None
        self._ends, before_last = 0, None
        try:
            self._parser.feed_data(data[:-1])
            before_last = self._ends
            self._parser.feed_data(data[-1:])
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            pass
        if self._ends == 0:
            self._keep(data)
            return None
        if before_last == 0:  # the request ends with the piece: the usual case
            self._fresh()
            return len(data)
        end = self._bisect(data)
        self._fresh()
        return end

    def _keep(self, data):
        if len(self._started) + len(data) > self.limit:
            self.unsplittable, self._started = True, bytearray()
        else:
            self._started += data

    def _bisect(self, data) -> int:
        """The fewest bytes of ``data`` that finish the request (it ends within ``data``)."""
        low, high = 1, len(data)
        while low < high:
            middle = (low + high) // 2
            if _whole(bytes(self._started) + data[:middle]):
                high = middle
            else:
                low = middle + 1
        return low


class _Count:
    ends = 0

    def on_message_complete(self):
        self.ends += 1


def _whole(data) -> bool:
    """Whether ``data`` holds at least one whole request."""
    count = _Count()
    try:
        _parser(count).feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        pass
    return count.ends > 0


def _parser(callbacks):
    """A request parser as uvicorn makes its own (the same leniency: requests after one that
    asked to close are still read), calling back only ``on_message_complete``."""
    parser = httptools.HttpRequestParser(callbacks)
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser
