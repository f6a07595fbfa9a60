"""A `UsageRecord` as a ledger row, and as the JSON line the journal keeps of it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import BigInteger, ColumnElement, Integer, Numeric, String

from proxy.ledger.models import LARGEST_MONEY, Money, UsageRow
from proxy.metering.usage import UsageRecord

# The price entry of a call whose GPU hour is not split yet (see proxy/ledger/gpu_hours.py).
PENDING = "gpu-hour:pending"

Row = dict[str, Any]

_USAGE_COLUMNS = (
    "input_tokens",
    "cached_input_tokens",
    "audio_input_tokens",
    "image_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "audio_output_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
    "images",
    "image_size",
    "image_quality",
    "input_characters",
    "audio_seconds",
)
_DATETIME_COLUMNS = ("created_at", "price_effective_from")
# What the `usage_records` columns hold. Strings come from clients and upstreams: one Postgres
# refuses (too long, or with a NUL) would fail its whole batch, and every batch after it.
_TEXT_LIMITS = tuple(
    (column.name, column.type.length)
    for column in UsageRow.__table__.columns
    if isinstance(column.type, String) and column.type.length
)
_INTEGER_LIMITS = tuple(
    (column.name, (1 << 63) - 1 if isinstance(column.type, BigInteger) else (1 << 31) - 1)
    for column in UsageRow.__table__.columns
    if isinstance(column.type, Integer)  # BigInteger is an Integer too
)
_DECIMAL_COLUMNS = ("cost_usd", "audio_seconds")


def _largest_decimal(column: ColumnElement[Any]) -> Decimal:
    """The largest value a decimal column holds on every engine."""
    if isinstance(column.type, Money):
        return LARGEST_MONEY
    numeric = column.type
    assert isinstance(numeric, Numeric) and numeric.precision and numeric.scale is not None
    return Decimal(10) ** (numeric.precision - numeric.scale) - Decimal(1).scaleb(-numeric.scale)


# The largest number each numeric column holds: a value past it fails its batch too.
_RANGES: tuple[tuple[str, int | Decimal], ...] = (
    *_INTEGER_LIMITS,
    *((name, _largest_decimal(UsageRow.__table__.columns[name])) for name in _DECIMAL_COLUMNS),
)


def row_of(record: UsageRecord) -> Row:
    """The `usage_records` row of a settled record."""
    usage, price, split = record.usage, record.price, record.prompt_split
    row: Row = {
        "request_id": record.request_id,  # first: `request_id_of` reads it from there
        "created_at": record.created_at,
        "team": record.team,
        "key_id": record.key_id,
        "end_user": record.user,
        "tags": record.tags,
        "trace_id": record.trace_id,
        "parent_id": record.parent_id,
        "upstream": record.upstream,
        "model": record.model,
        "endpoint": record.endpoint,
        "status": record.status,
        "prompt_system_tokens": split.system if split else None,
        "prompt_tools_tokens": split.tools if split else None,
        "prompt_history_tokens": split.history if split else None,
        "prompt_latest_tokens": split.latest if split else None,
        "cost_usd": price.cost_usd if price else None,
        "price_entry": price.entry if price else (PENDING if record.gpu_hours_pending else None),
        "price_effective_from": price.effective_from if price else None,
        "estimated": usage.estimated,
        "service_tier": record.service_tier,
        "batch": record.batch,
        "latency_seconds": record.latency_seconds,
        "time_to_first_token_seconds": record.time_to_first_token_seconds,
        "overhead_seconds": record.overhead_seconds,
    }
    for column in _USAGE_COLUMNS:
        row[column] = getattr(usage, column)
    _fit_to_columns(row)
    return row


def _fit_to_columns(row: Row) -> None:
    """Cut what the columns cannot hold: long text to its column's length (NULs out), counts
    and amounts to the column's range. A record of an absurd call (an upstream reporting 2^62
    tokens, say) is kept, not refused by the database."""
    for column, length in _TEXT_LIMITS:
        value = row[column]
        if value is not None and (len(value) > length or "\0" in value):
            row[column] = value.replace("\0", "")[:length]
    for column, largest in _RANGES:
        value = row[column]
        if value is not None and not -largest <= value <= largest:
            row[column] = largest if value > 0 else -largest
    if any("\0" in key or "\0" in value for key, value in row["tags"].items()):
        row["tags"] = {
            key.replace("\0", ""): value.replace("\0", "") for key, value in row["tags"].items()
        }


def decimal_as_text(value: Any) -> str:
    """orjson's `default` for Decimals: exact text."""
    if isinstance(value, Decimal):
        return str(value)  # exact: a float would round money
    raise TypeError(f"cannot journal {type(value).__name__}")


def encode(row: Row) -> bytes:
    """One journal line (newline included)."""
    return orjson.dumps(row, default=decimal_as_text, option=orjson.OPT_APPEND_NEWLINE)


_REQUEST_ID_START = b'{"request_id":"'


def request_id_of(line: bytes) -> str:
    """The request id of a journal line, read without decoding the rest of it (`encode` writes
    it first; an id it had to escape is decoded)."""
    start = len(_REQUEST_ID_START)
    end = line.find(b'"', start)
    found = line[start:end]
    if line.startswith(_REQUEST_ID_START) and end > 0 and b"\\" not in found:
        return found.decode()
    request_id: str = decode(line)["request_id"]
    return request_id


def decode(line: bytes) -> Row:
    """A row back from its journal line; `ValueError` if the line is not one (a torn write)."""
    try:
        row: Row = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise ValueError("not a journal line") from error
    if not isinstance(row, dict) or "request_id" not in row:
        raise ValueError("not a journal line")
    for column in _DATETIME_COLUMNS:
        if row.get(column) is not None:
            row[column] = datetime.fromisoformat(row[column])
    for column in _DECIMAL_COLUMNS:
        if row.get(column) is not None:
            row[column] = Decimal(row[column])
    return row
