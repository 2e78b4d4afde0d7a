"""Prometheus metrics of the HTTP API, labelled by route template (not raw path) to stay bounded."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import Counter, Histogram

REQUESTS = Counter("lm_saes_http_requests_total", "HTTP requests handled", ["method", "route", "status"])
LATENCY = Histogram(
    "lm_saes_http_request_seconds",
    "HTTP handling time (streams: until headers)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = _template(request)
        REQUESTS.labels(request.method, route, str(status)).inc()
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)


def _template(request: Request) -> str:
    """The matched route's full path template; newer FastAPI keeps an included router's routes
    without their prefix, so the prefix is taken back from the request path."""
    template = getattr(request.scope.get("route"), "path", None)
    if template is None:
        return "unmatched"
    path = request.url.path
    head = template.split("{", 1)[0]
    at = path.find(head) if "{" in template else (len(path) - len(template) if path.endswith(template) else -1)
    return path[:at] + template if at > 0 else template
