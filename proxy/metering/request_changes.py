"""The only changes metering makes to a request before it goes upstream.

1. A streamed chat or completions call whose client did not ask for usage is sent with
   `stream_options.include_usage`, and the tap takes the extra usage out of the answer again.
2. A metered call asks the upstream only for content encodings the tap can read (the client
   still gets one it accepted); a stream the tap rewrites is asked for unencoded.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.metering.inflate import READABLE_ENCODINGS
from proxy.request_fields import RequestFields

RawHeaders = list[tuple[bytes, bytes]]
_STREAM_USAGE_FAMILIES = frozenset({"chat", "completions"})


def body_asking_for_stream_usage(family: str, fields: RequestFields) -> bytes | None:
    """The request body with `include_usage` set, or None when no change is needed."""
    if family not in _STREAM_USAGE_FAMILIES or not fields.stream:
        return None
    options: Any = fields.document.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    asked = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps({**fields.document, "stream_options": asked})


def readable_accept_encoding(headers: RawHeaders, identity_only: bool) -> RawHeaders:
    """The client's headers with `Accept-Encoding` narrowed to what the tap can decode."""
    narrowed: RawHeaders = []
    for name, value in headers:
        if name != b"accept-encoding":
            narrowed.append((name, value))
            continue
        if identity_only:
            continue
        accepted = [
            coding
            for coding in (part.strip() for part in value.split(b","))
            if coding.split(b";", 1)[0].strip().lower() in READABLE_ENCODINGS
        ]
        if accepted:
            narrowed.append((name, b", ".join(accepted)))
    return narrowed
