"""Audio: speech by input characters; transcriptions and translations by tokens or duration."""

from __future__ import annotations

from proxy.metering.extractors.base import MeteredCall, number, reported_usage_object
from proxy.metering.plausibility import seconds
from proxy.metering.tap import ResponseTap
from proxy.metering.usage import Usage


def _characters(call: MeteredCall) -> int:
    text = call.request.get("input")
    return len(text) if isinstance(text, str) else 0


class AudioExtractor:
    def reported(self, call: MeteredCall, tap: ResponseTap) -> Usage | None:
        found = reported_usage_object(tap)
        if call.path == "audio/speech":
            characters = _characters(call)
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
                return Usage(audio_seconds=seconds(usage.get("seconds"), "seconds"))
            return Usage(
                input_tokens=number(usage, "input_tokens"),
                audio_input_tokens=number(usage, "input_token_details", "audio_tokens"),
                output_tokens=number(usage, "output_tokens"),
            )
        body = tap.json_body()
        if isinstance(body, dict) and "duration" in body:
            return Usage(audio_seconds=seconds(body["duration"], "duration"))
        return None  # text, srt and vtt answers say nothing of the audio's length

    def estimated(self, call: MeteredCall, tap: ResponseTap) -> Usage:
        """Speech by the characters of its input; nothing tells a transcription's length."""
        if call.path == "audio/speech":
            return Usage(input_characters=_characters(call), estimated=True)
        return Usage()
