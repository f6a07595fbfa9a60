"""What a sink is sent: a signed JSON webhook, or a Slack incoming-webhook message.

Pure formatting: the body bytes and headers of the POST, from the alert's stored document.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

SIGNATURE_HEADER = "X-Metering-Signature"
ALERT_ID_HEADER = "X-Metering-Alert-Id"
_SIGNATURE_PREFIX = "sha256="
_JSON = "application/json"
_TOP_LINES = 5


def webhook_request(payload: dict[str, Any], secret: str | None) -> tuple[bytes, dict[str, str]]:
    """The alert document as compact JSON, signed with the sink's secret when it has one."""
    body = orjson.dumps(payload)
    headers = {"Content-Type": _JSON, ALERT_ID_HEADER: str(payload.get("id", ""))}
    if secret is not None:
        headers[SIGNATURE_HEADER] = signature(body, secret)
    return body, headers


def signature(body: bytes, secret: str) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of the body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"{_SIGNATURE_PREFIX}{digest}"


def verify_signature(body: bytes, secret: str, header: str | None) -> bool:
    """Whether `header` signs exactly `body` with `secret` (for receivers; constant time)."""
    if header is None:
        return False
    return hmac.compare_digest(signature(body, secret).encode(), header.strip().encode())


def slack_request(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A Slack incoming-webhook message: the alert as readable text."""
    return orjson.dumps({"text": slack_text(payload)}), {"Content-Type": _JSON}


def slack_text(payload: dict[str, Any]) -> str:
    owner = f"team *{_escape(payload.get('team'))}*"
    if payload.get("key_id"):
        owner += f" (key `{_escape(payload['key_id'])}`)"
    budget = _budget_name(str(payload.get("period", "")))
    spend = _usd(payload.get("spend_usd"))
    limit = _usd(payload.get("limit_usd"))
    since = _when(payload.get("period_start"))
    if payload.get("kind") == "forecast":
        lines = [
            f":crystal_ball: Budget forecast for {owner}: at the current rate the {budget} "
            f"limit of {limit} is reached on {_when(payload.get('forecast_at'))}.",
            f"Spent so far: {spend} of {limit} in the period starting {since}.",
        ]
    else:
        lines = [
            f":warning: Budget alert for {owner}: {_share(payload.get('threshold'))} of the "
            f"{budget} limit reached.",
            f"Spent: {spend} of {limit} in the period starting {since}.",
        ]
    unpriced = int(payload.get("unpriced_calls") or 0)
    if unpriced:
        calls = "call has" if unpriced == 1 else "calls have"
        lines.append(f"{unpriced} {calls} no known price and are not counted in the spend.")
    lines.extend(_top("Top models", payload.get("top_models"), "model"))
    lines.extend(_top("Top users", payload.get("top_users"), "user"))
    return "\n".join(lines)


def _top(title: str, ranked: Any, name: str) -> list[str]:
    if not ranked:
        return []
    entries = [
        f"{_escape(entry.get(name))} {_usd(entry.get('cost_usd'))} "
        f"({entry.get('calls', 0)} call{'' if entry.get('calls') == 1 else 's'})"
        for entry in ranked[:_TOP_LINES]
    ]
    return [f"{title}: " + ", ".join(entries)]


def _budget_name(period: str) -> str:
    return "window budget's" if period == "window" else f"{period} budget's"


def _share(threshold: Any) -> str:
    try:
        return f"{Decimal(str(threshold)) * 100:f}".rstrip("0").rstrip(".") + "%"
    except (InvalidOperation, ValueError):
        return str(threshold)


def _usd(amount: Any) -> str:
    """Dollars to the cent, or to four significant digits when below a cent."""
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return "an unknown amount"
    if value == 0 or abs(value) >= Decimal("0.01"):
        return f"${value:,.2f}"
    return f"${value:.4g}" if "e" not in f"{value:.4g}" else f"${value:f}"


def _when(at: Any) -> str:
    if not at:
        return "an unknown date"
    try:
        moment = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    except ValueError:
        return str(at)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _escape(text: Any) -> str:
    # Slack reads &, < and > as markup (links, mentions) in message text.
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
