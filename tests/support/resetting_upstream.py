"""An upstream that resets its connection mid-stream with a TCP RST, which ASGI cannot express.

Each connection gets a streamed chat answer's headers and first chunk; once the test calls
`reset()` the socket is closed with `SO_LINGER` 0, so the kernel sends RST rather than FIN. The
reset waits for the test because an RST discards what the peer has not read yet: sent at once,
it could overtake the chunk.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from tests.support.fake_upstream import STREAM_CHUNKS

_FIRST_CHUNK = {
    "id": "chatcmpl-reset",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "delta": {"content": STREAM_CHUNKS[0]},
            "logprobs": None,
            "finish_reason": None,
        }
    ],
}
_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


class ResettingUpstream:
    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self._reset = threading.Event()

    def reset(self) -> None:
        """Let every open connection end with an RST."""
        self._reset.set()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # the listener was closed: the test is over
                return
            with connection:
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        if not _read_request(connection):
            return
        event = b"data: " + orjson.dumps(_FIRST_CHUNK) + b"\n\n"
        connection.sendall(_HEAD + b"%x\r\n" % len(event) + event + b"\r\n")
        self._reset.wait(timeout=10)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _read_request(connection: socket.socket) -> bool:
    """Read the request's head and its `Content-Length` body; False if the peer left first."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            return False
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


@contextmanager
def resetting_upstream() -> Iterator[tuple[ResettingUpstream, str]]:
    """A resetting upstream for the block; yields it and its base URL (with `/v1`)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    upstream = ResettingUpstream(listener)
    thread = threading.Thread(target=upstream.serve, daemon=True)
    thread.start()
    try:
        yield upstream, f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        upstream.reset()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=10)
