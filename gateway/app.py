"""The FastAPI application: `create_app(settings)` wires routers, errors, auth, CORS, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from gateway import errors, metrics
from gateway.backends import Backends
from gateway.routers import catalog, circuits, compute, jobs, ops
from gateway.settings import GatewaySettings
from lm_saes.stores.documents import DocumentStore

API_PREFIX = "/api/v1"


def create_app(settings: GatewaySettings | None = None, documents: DocumentStore | None = None) -> FastAPI:
    """An app over `settings` (default: the environment); `documents` overrides the store."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.backends.close()

    app = FastAPI(title="lm-saes gateway", version="1", lifespan=lifespan,
                  description="Browse SAEs and features, run SAEs on new text, submit and follow jobs.")
    app.state.settings = settings
    app.state.backends = Backends.open(settings, documents)
    errors.install(app)
    app.middleware("http")(metrics.record)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    for router in (catalog.router, compute.router, jobs.router, circuits.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(ops.router)
    static = Path(settings.static_dir)
    if static.is_dir():  # the built frontend; absent until it is built
        app.mount("/", StaticFiles(directory=static, html=True), name="frontend")
    return app
