"""What one call consumed (`Usage`) and the settled record of the call (`UsageRecord`).

Token counts follow OpenAI's convention: `input_tokens` includes `cached_input_tokens` and
`audio_input_tokens`; `output_tokens` includes `reasoning_tokens` and `audio_output_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    audio_input_tokens: int = 0
    # Image tokens among the input (gpt-image models price them apart from text).
    image_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    audio_output_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    # Images generated; size and quality as asked (DALL-E prices per image by both).
    images: int = 0
    image_size: str | None = None
    image_quality: str | None = None
    # Text-to-speech input, priced per character.
    input_characters: int = 0
    # Transcribed or translated audio, priced per second (minute) when no tokens are reported.
    audio_seconds: Decimal = Decimal(0)
    # True when any count comes from tiktoken rather than from the upstream's own report.
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class PromptSplit:
    """Input tokens by where they come from, scaled so that they sum to the call's input tokens."""

    system: int = 0  # system and developer instructions
    tools: int = 0  # tool and function definitions
    history: int = 0  # earlier turns of the conversation
    latest: int = 0  # the newest user turn


@dataclass(frozen=True, slots=True)
class Price:
    """What a call cost, and which price entry said so."""

    cost_usd: Decimal
    entry: str  # e.g. "genai-prices:openai/gpt-4o", "config:gpt-4o", "builtin:dall-e-3"
    effective_from: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One settled call: the unit every sink (metrics, ledger, budgets) receives."""

    request_id: str
    created_at: datetime
    team: str
    upstream: str
    endpoint: str  # the endpoint family: chat, completions, responses, embeddings, ...
    model: str
    status: str  # the upstream's HTTP status as a string, or "client_closed"
    usage: Usage
    price: Price | None  # None: no known price for this model (never recorded as $0)
    latency_seconds: float
    time_to_first_token_seconds: float | None = None
    # What the proxy itself added before the call went upstream.
    overhead_seconds: float | None = None
    key_id: str | None = None
    user: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    trace_id: str | None = None
    parent_id: str | None = None
    prompt_split: PromptSplit | None = None
    service_tier: str | None = None
    batch: bool = False
    # A self-hosted upstream priced by GPU time: the cost comes once the call's hour is split.
    gpu_hours_pending: bool = False

    @property
    def cost_usd(self) -> Decimal | None:
        return None if self.price is None else self.price.cost_usd
