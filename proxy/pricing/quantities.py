"""A call's usage split into disjoint billable quantities, each priced at one rate.

`Usage` counts as OpenAI does: `input_tokens` includes cached, audio and image tokens and
`output_tokens` includes reasoning and audio tokens. Prices differ per part, so the parts are
separated here once, and every price source multiplies the same disjoint counts: no token can be
charged twice. Usage does not say which modality the cached tokens are, so cached tokens are taken
as text first, then audio, then image (text is the usual cached prefix; this errs towards the
dearer uncached audio and image rates). When a call generated images, its output tokens that are
neither reasoning nor audio are image tokens: that is what the Images API reports them as.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from proxy.metering.usage import Usage


@dataclass(frozen=True, slots=True)
class Quantities:
    text_input: int = 0  # uncached
    cached_text_input: int = 0
    audio_input: int = 0  # uncached
    cached_audio_input: int = 0
    image_input: int = 0  # uncached
    cached_image_input: int = 0
    text_output: int = 0
    reasoning_output: int = 0
    audio_output: int = 0
    image_output: int = 0
    characters: int = 0
    images: int = 0
    audio_seconds: Decimal = Decimal(0)

    @property
    def input_tokens(self) -> int:
        return self.text_input + self.audio_input + self.image_input + self.cached_input

    @property
    def cached_input(self) -> int:
        return self.cached_text_input + self.cached_audio_input + self.cached_image_input

    @property
    def output_tokens(self) -> int:
        return self.text_output + self.reasoning_output + self.audio_output + self.image_output

    @classmethod
    def of(cls, usage: Usage) -> Quantities:
        """Split `usage`; parts reported larger than their whole are capped at the whole."""
        total_input = usage.input_tokens
        audio = min(usage.audio_input_tokens, total_input)
        image = min(usage.image_input_tokens, total_input - audio)
        text = total_input - audio - image
        cached = min(usage.cached_input_tokens, total_input)
        cached_text = min(cached, text)
        cached_audio = min(cached - cached_text, audio)
        cached_image = cached - cached_text - cached_audio

        total_output = usage.output_tokens
        audio_output = min(usage.audio_output_tokens, total_output)
        reasoning = min(usage.reasoning_tokens, total_output - audio_output)
        rest = total_output - audio_output - reasoning
        image_output = rest if usage.images > 0 else 0
        return cls(
            text_input=text - cached_text,
            cached_text_input=cached_text,
            audio_input=audio - cached_audio,
            cached_audio_input=cached_audio,
            image_input=image - cached_image,
            cached_image_input=cached_image,
            text_output=rest - image_output,
            reasoning_output=reasoning,
            audio_output=audio_output,
            image_output=image_output,
            characters=usage.input_characters,
            images=usage.images,
            audio_seconds=usage.audio_seconds,
        )
