"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    description="Prometheus text format: lifecycles by kind and status, queue lengths, projects by status, "
    "API latency. The worker serves Temporal's own metrics (activity failures, retries, latencies) at "
    "MLCP_WORKER_METRICS_ADDRESS.",
)
async def metrics(request: Request) -> Response:
    body, content_type = await asyncio.to_thread(request.app.state.metrics.exposition)
    return Response(body, media_type=content_type)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    engine = request.app.state.engine

    def ping_database() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await asyncio.to_thread(ping_database)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    client = await request.app.state.temporal.get()
    if client is None:
        checks["temporal"] = "unreachable: " + request.app.state.temporal.last_error
    else:
        try:
            await asyncio.wait_for(client.service_client.check_health(), timeout=3)
            checks["temporal"] = "ok"
        except Exception as exc:
            checks["temporal"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503
    )
