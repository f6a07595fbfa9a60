"""The raw records, newest first, a page at a time (keyset pagination)."""

from __future__ import annotations

import base64
from datetime import datetime

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from proxy.ledger.models import UsageRow
from proxy.ledger.reports.documents import RequestPage, UsageRecordDocument
from proxy.ledger.reports.filters import ReportError, UsageFilter, text_value
from proxy.ledger.reports.sql import utc
from proxy.ledger.reports.summary import record_conditions

MAX_PAGE_SIZE = 1000

Position = tuple[datetime, str]


async def list_records(
    engine: AsyncEngine, usage: UsageFilter, limit: int, cursor: str | None = None
) -> RequestPage:
    """Up to `limit` records after `cursor` (from the newest), and the cursor of the next page."""
    row = UsageRow
    statement = (
        select(row)
        .where(
            row.created_at >= usage.window.since,
            row.created_at < usage.window.until,
            *record_conditions(usage),
        )
        .order_by(row.created_at.desc(), row.request_id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        at, request_id = decode_cursor(cursor)
        statement = statement.where(
            or_(row.created_at < at, and_(row.created_at == at, row.request_id < request_id))
        )
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(statement)).all()
    records = [_document(found) for found in rows[:limit]]
    has_more = len(rows) > limit
    last = records[-1] if records else None
    next_cursor = encode_cursor((last.created_at, last.request_id)) if has_more and last else None
    return RequestPage(data=records, has_more=has_more, next_cursor=next_cursor)


def encode_cursor(position: Position) -> str:
    """An opaque token for the position of a record in the newest-first order."""
    at, request_id = position
    raw = orjson.dumps([at.isoformat(), request_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a token names; `ReportError` for anything `encode_cursor` did not make."""
    try:
        at, request_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(at, str) and isinstance(request_id, str) and text_value(request_id, "cursor"):
            return utc(datetime.fromisoformat(at)), request_id
    except (ValueError, TypeError, OverflowError, ReportError):
        pass
    raise ReportError("`cursor` is not a cursor this API gave.", param="cursor")


def _document(row: UsageRow) -> UsageRecordDocument:
    return UsageRecordDocument(
        request_id=row.request_id,
        created_at=utc(row.created_at),
        team=row.team,
        key_id=row.key_id,
        user=row.end_user,
        tags=row.tags or {},
        trace_id=row.trace_id,
        parent_id=row.parent_id,
        upstream=row.upstream,
        model=row.model,
        endpoint=row.endpoint,
        status=row.status,
        input_tokens=row.input_tokens,
        cached_input_tokens=row.cached_input_tokens,
        audio_input_tokens=row.audio_input_tokens,
        output_tokens=row.output_tokens,
        reasoning_tokens=row.reasoning_tokens,
        audio_output_tokens=row.audio_output_tokens,
        images=row.images,
        prompt_system_tokens=row.prompt_system_tokens,
        prompt_tools_tokens=row.prompt_tools_tokens,
        prompt_history_tokens=row.prompt_history_tokens,
        prompt_latest_tokens=row.prompt_latest_tokens,
        cost_usd=row.cost_usd,
        price_entry=row.price_entry,
        estimated=row.estimated,
        service_tier=row.service_tier,
        batch=row.batch,
        latency_seconds=row.latency_seconds,
        time_to_first_token_seconds=row.time_to_first_token_seconds,
    )
