"""What a report covers: its time window, the calls it keeps and how it groups them.

Every check of a caller's input lives here, so the HTTP API and the CLI refuse the same things
with the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from proxy.clock import as_utc
from proxy.errors import InvalidRequest

DEFAULT_WINDOW = timedelta(days=30)
MAX_TEXT_LENGTH = 256
MAX_TAG_FILTERS = 16
MAX_DIMENSIONS = 8
PLAIN_DIMENSIONS = ("team", "model", "upstream", "user", "endpoint", "day", "hour")
TIME_DIMENSIONS = frozenset({"day", "hour"})
# As X-Metering-Tags accepts keys, which also keeps them safe inside a JSON path.
_TAG_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_AGO = re.compile(r"(\d{1,6})([mhdw])")
_AGO_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ReportError(InvalidRequest):
    """A report parameter that cannot be used; `param` names it."""

    code = "invalid_parameter"


@dataclass(frozen=True, slots=True)
class Window:
    """Calls with `since <= created_at < until`, both aware UTC datetimes."""

    since: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class Dimension:
    """One way to group calls: a column, a time bucket, or the value of one tag key."""

    name: str
    tag_key: str | None = None

    @property
    def label(self) -> str:
        return f"tag:{self.tag_key}" if self.tag_key is not None else self.name


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """The calls a report counts: a window, and columns or tags that must match."""

    window: Window
    team: str | None = None
    model: str | None = None
    upstream: str | None = None
    endpoint: str | None = None
    user: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


def window(since: datetime | None, until: datetime | None, now: datetime) -> Window:
    """The window asked for; by default the 30 days up to now. Naive times are UTC."""
    end = now if until is None else _utc(until, "until")
    if since is None:
        try:
            start = end - DEFAULT_WINDOW
        except OverflowError:
            raise ReportError("`until` is too early.", param="until") from None
    else:
        start = _utc(since, "since")
    if start >= end:
        raise ReportError("`since` must be before `until`.", param="since")
    return Window(start, end)


def instant(text: str | None, now: datetime, param: str) -> datetime | None:
    """An ISO 8601 time, or a time ago: `30m`, `24h`, `7d`, `2w`."""
    if text is None:
        return None
    text = text.strip()
    if match := _AGO.fullmatch(text):
        amount, unit = match.groups()
        try:
            return now - timedelta(**{_AGO_UNITS[unit]: int(amount)})
        except OverflowError:
            raise ReportError(f"`{param}` is too far back.", param=param) from None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(
            f"`{param}` must be an ISO 8601 time (2026-11-24T10:00:00Z) or a time ago "
            "(30m, 24h, 7d, 2w).",
            param=param,
        ) from None


def usage_filter(
    window: Window,
    *,
    team: str | None = None,
    model: str | None = None,
    upstream: str | None = None,
    endpoint: str | None = None,
    user: str | None = None,
    tags: Sequence[str] = (),
) -> UsageFilter:
    """Check the filters a caller gave; an empty value means no filter."""
    return UsageFilter(
        window,
        team=text_value(team, "team"),
        model=text_value(model, "model"),
        upstream=text_value(upstream, "upstream"),
        endpoint=text_value(endpoint, "endpoint"),
        user=text_value(user, "user"),
        tags=_tag_filters(tags),
    )


def text_value(value: str | None, param: str) -> str | None:
    """A filter value as the database can compare it; `None` for an absent or empty one."""
    if not value:
        return None
    if len(value) > MAX_TEXT_LENGTH or "\x00" in value or not _encodable(value):
        raise ReportError(
            f"`{param}` must be at most {MAX_TEXT_LENGTH} characters of valid text.", param=param
        )
    return value


def group_by(text: str | None) -> tuple[Dimension, ...]:
    """The dimensions of a comma-separated `group_by`, e.g. `team,tag:feature,day`."""
    if not text:
        return ()
    dimensions: list[Dimension] = []
    for part in (part.strip() for part in text.split(",")):
        if part in PLAIN_DIMENSIONS:
            dimension = Dimension(part)
        elif part.startswith("tag:") and _TAG_KEY.fullmatch(part[4:]):
            dimension = Dimension("tag", part[4:])
        else:
            raise ReportError(
                "`group_by` takes a comma-separated list of "
                f"{', '.join(PLAIN_DIMENSIONS)} and tag:KEY.",
                param="group_by",
            )
        if dimension in dimensions:
            raise ReportError(f"`group_by` names {dimension.label} twice.", param="group_by")
        dimensions.append(dimension)
    if len(dimensions) > MAX_DIMENSIONS:
        raise ReportError(
            f"`group_by` takes at most {MAX_DIMENSIONS} dimensions.", param="group_by"
        )
    return tuple(dimensions)


def _tag_filters(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    if len(values) > MAX_TAG_FILTERS:
        raise ReportError(f"At most {MAX_TAG_FILTERS} `tag` filters are allowed.", param="tag")
    filters = []
    for item in values:
        key, colon, value = item.partition(":")
        if not colon or not _TAG_KEY.fullmatch(key):
            raise ReportError(
                "`tag` must be KEY:VALUE, the key up to 64 letters, digits, '_', '.' or '-'.",
                param="tag",
            )
        filters.append((key, text_value(value, "tag") or ""))
    return tuple(filters)


def _utc(value: datetime, param: str) -> datetime:
    try:
        return as_utc(value)
    except OverflowError:
        raise ReportError(f"`{param}` is out of range.", param=param) from None


def _encodable(value: str) -> bool:
    # A lone surrogate would make the database driver fail instead of answering 400.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
