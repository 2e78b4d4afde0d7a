"""Liveness, readiness and Prometheus metrics (unauthenticated, for orchestrators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.backends import Backends, backends
from gateway.errors import PROBLEM_JSON
from gateway.schemas import Health, Problem

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up (no dependency checked)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Problem}})
def readyz(store: Annotated[Backends, Depends(backends)]) -> Health | JSONResponse:
    """The document store answers and every service reports SERVING; else 503 naming which not."""
    checks = store.check()
    failed = sorted(name for name, state in checks.items() if state != "ok")
    if failed:
        body = {
            "type": "about:blank",
            "title": "Service unavailable",
            "status": 503,
            "detail": "not ready: " + "; ".join(f"{n}: {checks[n]}" for n in failed),
            "failed": failed,
            "checks": checks,
        }
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
    return Health(status="ok", checks=checks)


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
