"""The OpenAI API endpoints the proxy routes by model (and, later, meters).

Every other `/v1/*` path is forwarded as-is to the default upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class BodyFormat(Enum):
    """How the endpoint's body is sent, named by its media type."""

    JSON = "application/json"
    MULTIPART = "multipart/form-data"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A model-routed endpoint: `path` is relative to `/v1/`."""

    path: str
    family: str
    body: BodyFormat
    # Azure OpenAI's classic API puts these under /deployments/{deployment}/.
    deployment_scoped: bool = True
    # Where OpenAI's API reference lets `model` be left out (it has a default, or, for
    # responses, a stored prompt may name it), the call goes to the default upstream.
    model_required: bool = True


_ENDPOINTS = (
    Endpoint("chat/completions", "chat", BodyFormat.JSON),
    Endpoint("completions", "completions", BodyFormat.JSON),
    Endpoint("embeddings", "embeddings", BodyFormat.JSON),
    Endpoint("images/generations", "images", BodyFormat.JSON, model_required=False),
    Endpoint("images/edits", "images", BodyFormat.MULTIPART, model_required=False),
    Endpoint("images/variations", "images", BodyFormat.MULTIPART, model_required=False),
    Endpoint("audio/speech", "audio", BodyFormat.JSON),
    Endpoint("audio/transcriptions", "audio", BodyFormat.MULTIPART),
    Endpoint("audio/translations", "audio", BodyFormat.MULTIPART),
    Endpoint(
        "responses", "responses", BodyFormat.JSON, deployment_scoped=False, model_required=False
    ),
    Endpoint(
        "moderations", "moderations", BodyFormat.JSON, deployment_scoped=False, model_required=False
    ),
)

MODEL_ROUTED_ENDPOINTS: dict[str, Endpoint] = {endpoint.path: endpoint for endpoint in _ENDPOINTS}


def model_routed_endpoint(method: str, path: str) -> Endpoint | None:
    """The endpoint a `POST /v1/{path}` call goes to, or None for a pass-through path."""
    if method != "POST":
        return None
    return MODEL_ROUTED_ENDPOINTS.get(path)


# The pass-through paths whose answers batch metering reads: a batch, and a file's content.
BATCH_PATH = re.compile(r"batches(?:/[A-Za-z0-9_\-]+)?")
FILE_CONTENT_PATH = re.compile(r"files/([A-Za-z0-9_\-]+)/content")


# Families of the paths forwarded as-is, named in records and metrics (a bounded set).
_PASS_THROUGH_FAMILIES = frozenset(
    {
        "assistants",
        "batches",
        "chatkit",
        "containers",
        "conversations",
        "evals",
        "files",
        "fine_tuning",
        "models",
        "realtime",
        "threads",
        "uploads",
        "vector_stores",
    }
)


def family_of(endpoint: Endpoint | None, path: str) -> str:
    """The endpoint family of a call: a metered family, a known API area, or `other`."""
    if endpoint is not None:
        return endpoint.family
    area = path.split("/", 1)[0]
    return area if area in _PASS_THROUGH_FAMILIES else "other"
