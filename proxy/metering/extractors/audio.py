"""Audio: speech by input characters; transcriptions and translations by tokens or duration."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from proxy.metering.extractors.base import MeteredCall, NoEstimate, number, reported_usage_object
from proxy.metering.tap import ResponseTap
from proxy.metering.usage import Usage


def _seconds(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


class AudioExtractor(NoEstimate):
    def reported(self, call: MeteredCall, tap: ResponseTap) -> Usage | None:
        found = reported_usage_object(tap)
        if call.path == "audio/speech":
            text = call.request.get("input")
            characters = len(text) if isinstance(text, str) else 0
            if found is None:
                return Usage(input_characters=characters)
            usage = found[0]
            return Usage(
                input_characters=characters,
                input_tokens=number(usage, "input_tokens"),
                output_tokens=number(usage, "output_tokens"),
                audio_output_tokens=number(usage, "output_tokens"),
            )
        if found is not None:
            usage, _ = found
            if usage.get("type") == "duration":
                return Usage(audio_seconds=_seconds(usage.get("seconds")))
            return Usage(
                input_tokens=number(usage, "input_tokens"),
                audio_input_tokens=number(usage, "input_token_details", "audio_tokens"),
                output_tokens=number(usage, "output_tokens"),
            )
        body = tap.json_body()
        if isinstance(body, dict) and "duration" in body:
            return Usage(audio_seconds=_seconds(body["duration"]))
        return None  # text, srt and vtt answers say nothing of the audio's length
