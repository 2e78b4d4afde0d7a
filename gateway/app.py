"""The FastAPI application: `create_app(settings)` wires routers, errors, auth, CORS, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import errors, metrics
from gateway.backends import Backends
from gateway.routers import catalog, circuits, compute, jobs, ops
from gateway.settings import GatewaySettings
from lm_saes.stores.documents import DocumentStore

API_PREFIX = "/api/v1"


class SinglePageApp(StaticFiles):
    """The built frontend; a path that is no file (a deep link like /saes/x/features/3) gets
    index.html so the app's router renders it. API paths keep their 404 problem."""

    async def get_response(self, path: str, scope):
        try:
            response = await super().get_response(path, scope)
        except StarletteHTTPException as error:
            if error.status_code != 404 or path.startswith("api/"):
                raise
            return await super().get_response("index.html", scope)
        if response.status_code == 404 and not path.startswith("api/"):
            return await super().get_response("index.html", scope)
        return response


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
        app.mount("/", SinglePageApp(directory=static, html=True), name="frontend")
    return app
