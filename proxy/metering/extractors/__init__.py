"""One usage extractor per endpoint family, chosen by table."""

from __future__ import annotations

from proxy.metering.extractors.audio import AudioExtractor
from proxy.metering.extractors.base import Extractor, MeteredCall
from proxy.metering.extractors.chat import ChatExtractor
from proxy.metering.extractors.completions import CompletionsExtractor
from proxy.metering.extractors.embeddings import EmbeddingsExtractor
from proxy.metering.extractors.images import ImagesExtractor
from proxy.metering.extractors.moderations import ModerationsExtractor
from proxy.metering.extractors.responses import ResponsesExtractor

EXTRACTORS: dict[str, Extractor] = {
    "chat": ChatExtractor(),
    "completions": CompletionsExtractor(),
    "responses": ResponsesExtractor(),
    "embeddings": EmbeddingsExtractor(),
    "images": ImagesExtractor(),
    "audio": AudioExtractor(),
    "moderations": ModerationsExtractor(),
}

__all__ = ["EXTRACTORS", "Extractor", "MeteredCall"]
