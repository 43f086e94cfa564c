"""The FastAPI application."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy import Engine
from temporalio.client import Client

from api.deps import refuse_control_characters
from api.errors import install_error_handlers
from api.metrics import ApiMetrics, MetricsMiddleware
from api.request_context import RequestIdMiddleware
from api.routers import (
    applications,
    auth,
    catalog,
    health,
    job_templates,
    keys,
    mail,
    projects,
    reports,
    schedules,
    system,
    users,
)
from api.temporal import TemporalConnector
from config import Settings, get_settings
from models.database import make_engine
from services.kinds import api_modules


def workload_routers() -> list[APIRouter]:
    """Each registered kind's routes, from the module its registry entry names."""
    routers = []
    for module in api_modules():
        router = getattr(importlib.import_module(module), "router", None)
        if not isinstance(router, APIRouter):
            raise RuntimeError(f"{module} has no APIRouter named router")
        routers.append(router)
    return routers


ROUTERS = [
    health.router,
    auth.router,
    users.router,
    keys.router,
    catalog.router,
    projects.router,
    *workload_routers(),
    job_templates.router,
    schedules.router,
    applications.router,
    mail.router,
    reports.router,
    system.router,
]


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, temporal: Client | None = None
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if own_engine:
            app.state.engine.dispose()

    own_engine = engine is None
    app = FastAPI(
        title="mlcp",
        version="0.1.0",
        lifespan=lifespan,
        description="Self-service ML collaboration platform API.",
        dependencies=[Depends(refuse_control_characters)],
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.database_url)
    app.state.temporal = TemporalConnector(settings, temporal)
    app.state.metrics = ApiMetrics(app.state.engine)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
