"""The paths the proxy sends upstream, judged before anything is decided on them.

The proxy decides what a call is (a metered endpoint, a batch, a pass-through) on the path as the
client sent it, and forwards that same path. A server in front of the upstream may read a path
more leniently: nginx merges slashes, a CDN decodes escapes and resolves dot segments, a router
ignores case, a trailing slash or `;parameters`, a gateway serves the API under `v1/` or
`deployments/{name}/` too. A path it would serve as a metered endpoint the proxy did not see as
one would skip metering, budgets and allow-lists; one that leads above the upstream's base path
would reach what lies there with the managed key. So a path is forwarded only in its one
canonical spelling, and only if, read leniently, it names neither a metered path it is not nor a
place above `/v1/`.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote

from proxy.endpoints import BATCH_PATH, FILE_CONTENT_PATH, MODEL_ROUTED_ENDPOINTS
from proxy.errors import InvalidPath, InvalidValue

_PREFIX = b"/v1/"
# RFC 3986 `pchar` and the separator `/`, less `;`: servers such as Tomcat drop `;parameters`.
_CANONICAL_CHARACTERS = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,=:@/%]*")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})?")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Decoded, these are worse than what they encode: a second round of decoding (`%252e` is `%2e`),
# a separator (Windows servers read `\` as `/`), or a cut (C servers stop at NUL).
_UNSAFE_ESCAPES = frozenset(["%", "\\", "\x7f", *map(chr, range(0x20))])
_DOT_SEGMENTS = frozenset({".", ".."})
# Where gateways and Azure serve the same API again, below the upstream's own base path.
_MOUNTS = frozenset({"v1", "openai"})
# A server that decodes before it parses would end the path at a decoded `?` or `#`.
_QUERY_OR_FRAGMENT = re.compile(r"[?#]")

_NOT_UNDER_V1 = "it must start with `/v1/` spelled out, not percent-encoded"
_CHARACTER = (
    "it has a character that must be percent-encoded (a space, control character, backslash, "
    'non-ASCII byte or one of `"<>[]^`{|}`)'
)
_PARAMETER = "it has a `;`, which starts a path parameter that some servers drop before routing"
_MALFORMED_ESCAPE = "it has a `%` not followed by two hexadecimal digits"
_EMPTY_SEGMENT = "it has an empty segment (`//`)"
_DOT_SEGMENT = "it has a dot segment (`.` or `..`, perhaps percent-encoded), which servers resolve"
_NOT_UTF8 = "its percent-encoded bytes are not UTF-8 text"
_ABOVE_BASE = "read with its percent-encoded slashes decoded, it leads above `/v1/`"


def judge_path(raw_path: bytes) -> str:
    """The client's path relative to `/v1/`, exactly as sent; `InvalidPath` if it may not go on."""
    if raw_path == _PREFIX[:-1]:
        return ""
    if not raw_path.startswith(_PREFIX):
        raise InvalidPath(_NOT_UNDER_V1)
    sent = raw_path[len(_PREFIX) :]
    path = sent.decode("latin-1")
    if path in MODEL_ROUTED_ENDPOINTS:
        return path  # the calls that matter most, spelled as they should be
    if _CANONICAL_CHARACTERS.fullmatch(sent) is None:
        raise InvalidPath(_PARAMETER if b";" in sent else _CHARACTER)
    _check_spelling(path)
    reading = _lenient_reading(path)
    if reading is None:
        raise InvalidPath(_ABOVE_BASE)
    metered = _metered_path_read_as(reading)
    if metered is not None and not _metered_as_sent(path):
        raise InvalidPath(
            "a lenient server (one that decodes escapes, ignores case, path parameters or a "
            f"trailing slash, or serves the API under a prefix) would read it as `/v1/{metered}`, "
            "which the proxy meters only when it is spelled so"
        )
    return path


def model_as_segment(model: str) -> str:
    """A model name percent-encoded as one path segment (Azure's deployment named after it);
    `InvalidValue` if a lenient server could read it as several segments or as a dot segment."""
    segment = quote(model, safe="")
    reading = _lenient_reading(segment)
    if reading is None or len(reading) != 1 or "%25" in segment:
        raise InvalidValue(
            f"The model name `{model}` cannot be one segment of the upstream's path: it is a dot "
            "segment or holds a `/`, `\\` or `%`.",
            param="model",
        )
    return segment


def _check_spelling(path: str) -> None:
    """Refuse a path that has a spelling other than the one a server routes on."""
    # A trailing slash leaves the last segment empty: refused only where it makes an alias.
    if path.startswith("/") or "//" in path:
        raise InvalidPath(_EMPTY_SEGMENT)
    if "." in path or "%" in path:
        for segment in path.split("/"):
            if segment in _DOT_SEGMENTS or unquote(segment) in _DOT_SEGMENTS:
                raise InvalidPath(_DOT_SEGMENT)
    for escape in _ESCAPE.finditer(path):
        code = escape.group(1)
        if code is None:
            raise InvalidPath(_MALFORMED_ESCAPE)
        character = chr(int(code, 16))
        if character in _UNRESERVED:
            raise InvalidPath(f"it percent-encodes `{character}` as `%{code}`: send it as it is")
        if character in _UNSAFE_ESCAPES:
            raise InvalidPath(
                f"it percent-encodes `%{code}` (a percent sign, backslash or control character), "
                "which servers may decode again, read as a separator or cut the path at"
            )


def _lenient_reading(path: str) -> list[str] | None:
    """The segments the most lenient server could route `path` on; None if they lead above it.

    One round of decoding is enough: `%25` is refused, so no escape hides another.
    """
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        # Broken decoders read overlong forms (`%C0%AE` as `.`): no server can be trusted here.
        raise InvalidPath(_NOT_UTF8) from None
    if not decoded.isascii():
        # Full-width and compatibility forms (U+FF0E for `.`, U+FF0F for `/`) a server may fold.
        decoded = unicodedata.normalize("NFKC", decoded)
    decoded = _QUERY_OR_FRAGMENT.split(decoded.replace("\\", "/"), maxsplit=1)[0]
    segments: list[str] = []
    for segment in decoded.split("/"):
        segment = segment.split(";", 1)[0].strip()
        if segment == "..":
            if not segments:
                return None
            segments.pop()
        elif segment != ".":
            # Windows servers drop trailing dots and spaces; empty segments are merged away.
            folded = segment.rstrip(". ").casefold()
            if folded:
                segments.append(folded)
    return segments


def _metered_path_read_as(segments: list[str]) -> str | None:
    """The metered path a lenient server could serve these segments as, if any."""
    # No other OpenAI path ends in a model-routed endpoint, so any prefix is an alias.
    for tail in ("/".join(segments[-2:]), "/".join(segments[-1:])):
        if tail in MODEL_ROUTED_ENDPOINTS:
            return tail
    if segments[-1:] == ["batches"]:
        return "batches"
    if segments[-2:-1] == ["batches"]:
        return f"batches/{segments[-1]}"
    # Files are read below other areas too (`containers/{id}/files/{id}/content`): only at the
    # API's root, or under a mount of it, is a file's content a batch output.
    unmounted = segments
    while unmounted and unmounted[0] in _MOUNTS:
        unmounted = unmounted[1:]
    if len(unmounted) == 3 and unmounted[0] == "files" and unmounted[2] == "content":
        return "/".join(unmounted)
    return None


def _metered_as_sent(path: str) -> bool:
    """Whether the proxy meters calls on `path` as it is spelled (for their method)."""
    return (
        path in MODEL_ROUTED_ENDPOINTS
        or BATCH_PATH.fullmatch(path) is not None
        or FILE_CONTENT_PATH.fullmatch(path) is not None
    )
