"""The FastAPI application: `create_app(settings)` wires routers, errors, auth, CORS, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import errors, metrics
from gateway.backends import Backends
from gateway.routers import catalog, circuits, compute, jobs, ops, search, steer
from gateway.routers.jobs import StreamSlots
from gateway.settings import GatewaySettings
from lm_saes.stores.documents import DocumentStore

API_PREFIX = "/api/v1"


class BodyLimit:
    """ASGI middleware: a request body past `limit` bytes gets 413 before a handler reads it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise errors.ApiProblem(413, f"the body is larger than {self.limit} bytes (max_body_bytes)")
            return message

        try:
            return await self.app(scope, limited, send)
        except errors.ApiProblem:
            return await self._refuse(send)

    async def _refuse(self, send) -> None:
        response = errors.problem_response(413, f"the body is larger than {self.limit} bytes (max_body_bytes)")
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


def _scope_of(dependant) -> tuple[str, bool] | None:
    """(scope, identified) of the auth dependency somewhere in a route's dependency tree."""
    for dep in dependant.dependencies:
        scope = getattr(dep.call, "scope", None)
        if scope is not None:
            return scope, dep.call.identified
        found = _scope_of(dep)
        if found:
            return found
    return None


def _document_security(app: FastAPI, public_reads: bool, routers: list[tuple[str, APIRouter]]) -> None:
    """OpenAPI: each route says the scope it needs (`x-required-scope`), and public routes list
    an empty security requirement (no token needed)."""
    from fastapi.routing import APIRoute

    schema = app.openapi()
    for prefix, router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                _document_route(schema, prefix + route.path_format, route, public_reads)


def _document_route(schema: dict, path: str, route, public_reads: bool) -> None:
    """Mark one route's operations with the scope it needs and whether it is public."""
    found = _scope_of(route.dependant)
    for method in route.methods:
        operation = schema["paths"].get(path, {}).get(method.lower())
        if operation is None:
            continue
        if found is None:
            operation["security"] = []
            operation["x-public"] = True
            continue
        scope, identified = found
        public = scope == "read" and public_reads and not identified
        operation["security"] = [{}, {"HTTPBearer": []}] if public else [{"HTTPBearer": []}]
        operation["x-required-scope"] = scope
        operation["x-public"] = public


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

    app = FastAPI(
        title="lm-saes gateway",
        version="1",
        lifespan=lifespan,
        description="Browse SAEs and features, run SAEs on new text, submit and follow jobs.",
    )
    app.state.settings = settings
    app.state.backends = Backends.open(settings, documents)
    app.state.event_streams = StreamSlots()
    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.middleware("http")(metrics.record)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    api_routers = (catalog.router, search.router, compute.router, steer.router, jobs.router, circuits.router)
    for router in api_routers:
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(ops.router)
    _document_security(app, settings.public_reads, [*((API_PREFIX, r) for r in api_routers), ("", ops.router)])
    static = Path(settings.static_dir)
    if static.is_dir():  # the built frontend; absent until it is built
        app.mount("/", SinglePageApp(directory=static, html=True), name="frontend")
    return app
