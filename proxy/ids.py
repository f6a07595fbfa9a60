"""Request ids: UUIDv7 (time-ordered, so ledger indexes stay append-mostly), as 32 hex digits."""

from __future__ import annotations

import os
import time


def new_request_id() -> str:
    """A fresh UUIDv7 in hex: 48 bits of Unix milliseconds, version and variant, 74 random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return f"{value:032x}"
