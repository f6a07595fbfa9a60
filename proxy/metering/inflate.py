"""Inflating an answer's gzip or deflate body as it arrives, never past a bound.

A few hundred KiB of gzip can inflate to gigabytes, so every call to zlib is told how much it may
produce (`max_length`), and the bytes produced are counted against the body's bound. Past it, or
on bytes that are not in the encoding the header named, the inflater stops for good; the answer
is still relayed as the upstream sent it, only no longer read.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

_WBITS = {
    b"gzip": 16 + zlib.MAX_WBITS,
    b"x-gzip": 16 + zlib.MAX_WBITS,
    b"deflate": zlib.MAX_WBITS,
}
# The most one call to zlib may produce.
PIECE_BYTES = 1024 * 1024
# The encodings the tap can read; the others are not asked of upstreams on metered calls.
READABLE_ENCODINGS = frozenset(_WBITS) | {b"identity"}


class Inflater:
    """One encoded body, inflated chunk by chunk: to at most `limit` bytes in all (None: no
    limit), in pieces of at most `PIECE_BYTES` each, so that no chunk needs much memory at once."""

    __slots__ = ("_decompressor", "_left")

    def __init__(self, wbits: int, limit: int | None) -> None:
        self._decompressor: zlib._Decompress | None = zlib.decompressobj(wbits)
        self._left = limit

    @property
    def stopped(self) -> bool:
        """Past the limit, or not what the header said: nothing more will be inflated."""
        return self._decompressor is None

    def inflate(self, chunk: bytes) -> Iterator[bytes]:
        """What `chunk` inflates to, piece by piece; nothing once the inflater has stopped."""
        data = chunk
        while self._decompressor is not None:
            # One byte more than is left tells "exactly the limit" from "past it".
            most = PIECE_BYTES if self._left is None else min(PIECE_BYTES, self._left + 1)
            try:
                piece = self._decompressor.decompress(data, most)
            except zlib.error:
                self._decompressor = None
                return
            if self._left is not None:
                if len(piece) > self._left:
                    self._decompressor = None  # its window and unread input are let go at once
                    return
                self._left -= len(piece)
            if piece:
                yield piece
            data = self._decompressor.unconsumed_tail
            # A full piece may leave output inside zlib even when all input was taken.
            if not data and len(piece) < most:
                return


def content_inflater(headers: list[tuple[bytes, bytes]], limit: int | None) -> Inflater | None:
    """An inflater for the answer's `Content-Encoding`, or None (identity, or unknown)."""
    encoding = next((value for name, value in headers if name.lower() == b"content-encoding"), b"")
    wbits = _WBITS.get(encoding.strip().lower())
    return None if wbits is None else Inflater(wbits, limit)
