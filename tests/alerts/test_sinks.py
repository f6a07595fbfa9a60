"""What sinks are sent: signed webhook bodies and readable Slack messages."""

from __future__ import annotations

import orjson

from proxy.alerts.sinks import slack_request, verify_signature, webhook_request
from tests.alerts.conftest import make_alert


def test_webhook_body_is_signed_exactly() -> None:
    payload = make_alert(1).document()
    body, headers = webhook_request(payload, "secret")
    assert orjson.loads(body) == orjson.loads(orjson.dumps(payload))
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Metering-Alert-Id"] == payload["id"]
    signature = headers["X-Metering-Signature"]
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    assert verify_signature(body, "secret", signature)
    assert not verify_signature(body, "other secret", signature)
    assert not verify_signature(body + b" ", "secret", signature)
    assert not verify_signature(body, "secret", None)


def test_a_webhook_without_secret_is_not_signed() -> None:
    _, headers = webhook_request(make_alert(1).document(), None)
    assert "X-Metering-Signature" not in headers


def test_slack_threshold_text() -> None:
    body, headers = slack_request(make_alert(1, threshold="0.8").document())
    assert headers == {"Content-Type": "application/json"}
    (text,) = orjson.loads(body).values()
    assert "team *search*" in text
    assert "80% of the monthly budget's limit" in text
    assert "$8.03 of $10.00" in text
    assert "2026-11-01 00:00 UTC" in text
    assert "3 calls have no known price" in text
    assert "Top models: gpt-4o $6.50 (120 calls), gpt-4o-mini $1.53 (1 call)" in text
    assert "Top users: alice@example.com $5.00 (80 calls)" in text


def test_slack_forecast_text_escapes_markup() -> None:
    payload = make_alert(1, kind="forecast", threshold="1", team="<!channel> & co").document()
    (text,) = orjson.loads(slack_request(payload)[0]).values()
    assert "Budget forecast" in text
    assert "reached on 2026-11-27 14:00 UTC" in text
    assert "&lt;!channel&gt; &amp; co" in text
    assert "<!channel>" not in text
