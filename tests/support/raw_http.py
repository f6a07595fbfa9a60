"""HTTP/1.1 over a plain socket, for what no HTTP client sends: requests cut short, pipelined."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def read_answer(reader: BinaryIO) -> RawAnswer:
    """The next answer from `connection.makefile("rb")`, its body sized by content-length."""
    status_line = reader.readline()
    assert status_line, "the connection was closed without an answer"
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", 0)))
    return RawAnswer(int(status_line.split()[1]), headers, body)


def answer_then_close(connection: socket.socket, seconds: float) -> RawAnswer:
    """The one answer on the connection, which the server must close after it, all within
    `seconds` (else `TimeoutError`)."""
    connection.settimeout(seconds)
    with connection.makefile("rb") as reader:
        answer = read_answer(reader)
        assert reader.read(1) == b"", "the connection stayed open after the answer"
    return answer
