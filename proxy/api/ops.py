"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready to forward calls and keep their records: started, and records reach the journal.

    A database that is down does not make the proxy unready: records wait in the journal.
    """
    state = request.app.state
    if not getattr(state, "ready", False):
        return JSONResponse({"status": "starting"}, status_code=503)
    trouble = state.ledger.journal_trouble
    if trouble is not None:
        return JSONResponse({"status": "journal_unwritable", "detail": trouble}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text exposition; never touches the database."""
    exposition = request.app.state.metrics.exposition()
    return PlainTextResponse(exposition, media_type=CONTENT_TYPE_LATEST)
