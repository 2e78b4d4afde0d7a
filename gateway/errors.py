"""Every error leaves as RFC 7807 problem details, including gRPC failures of the services.

gRPC INVALID_ARGUMENT messages start with the field they blame ("text: ..." or, for configs,
"invalid config ...:\n  train.lr: ..."); that field is passed on so clients can point at it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lm_saes.rpc.client import ServiceError
from lm_saes.stores.errors import STORE_ERRORS

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    422: "Invalid request",
    429: "Too many requests",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
    500: "Internal error",
}
GRPC_STATUS = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.PERMISSION_DENIED: 403,
}
MAX_DETAIL = 2000


def _problem_doc(status: int, description: str) -> dict[str, Any]:
    from gateway.schemas import Problem

    return {
        "description": description,
        "model": Problem,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


# The statuses every API route may answer, declared in the OpenAPI document.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: _problem_doc(401, "No or unknown bearer token (WWW-Authenticate says which scope)"),
    403: _problem_doc(403, "The token lacks the route's scope, or the object is another user's"),
    404: _problem_doc(404, "No such object"),
    409: _problem_doc(409, "The request conflicts with the stored state"),
    413: _problem_doc(413, "The body is larger than max_body_bytes"),
    422: _problem_doc(422, "Invalid input; `field` names the culprit"),
    429: _problem_doc(429, "Too many open streams or requests; retry after Retry-After seconds"),
    503: _problem_doc(503, "A store or service is unreachable"),
}
_FIELD = re.compile(r"^\s*([A-Za-z_][\w.\[\]]*):\s")


class ApiProblem(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str = "",
        field: str | None = None,
        headers: dict[str, str] | None = None,
        title: str | None = None,
    ):
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers = status, detail, field, headers
        self.title = title or TITLES.get(status, "Error")


def not_found(detail: str) -> ApiProblem:
    return ApiProblem(404, detail)


def invalid(field: str, detail: str) -> ApiProblem:
    return ApiProblem(422, f"{field}: {detail}", field=field)


def blamed_field(message: str) -> str | None:
    """The field a service's INVALID_ARGUMENT message names, if any."""
    for line in message.splitlines()[1:] if message.startswith("invalid config") else [message]:
        match = _FIELD.match(line)
        if match:
            return match.group(1)
    return None


def from_service(
    error: ServiceError, service: str, field_prefix: str = "", rename: dict[str, str] | None = None
) -> ApiProblem:
    """Map a failed RPC; `field_prefix`/`rename` turn the service's field into the request's."""
    status = GRPC_STATUS.get(error.code, 502)
    field = blamed_field(error.details) if status == 422 else None
    if field:
        field = (rename or {}).get(field, f"{field_prefix}{field}")
    if status == 502:  # our fault, not the client's: the detail stays in our log
        log.warning("%s service failed: %s", service, error)
        if error.code == grpc.StatusCode.UNAUTHENTICATED:
            return ApiProblem(502, f"the {service} service refused the gateway's service token (LM_SAES_SERVICE_TOKEN)")
        return ApiProblem(502, f"the {service} service failed ({error.code.name}); see its log")
    detail = f"{service} service: {error.details}" if status == 503 else error.details
    return ApiProblem(status, detail[:MAX_DETAIL], field=field)


def problem_response(
    status: int,
    detail: str = "",
    field: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _location_field(loc: tuple[Any, ...]) -> str:
    """("body", "config", "train") -> "config.train"; ("query", "limit") -> "limit"."""
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path", "header") else list(map(str, loc))
    return ".".join(parts) or str(loc[0] if loc else "")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _problem(_: Request, error: ApiProblem) -> JSONResponse:
        return problem_response(error.status, error.detail, error.field, error.title, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        field = _location_field(tuple(first.get("loc", ())))[:200]
        return problem_response(422, f"{field}: {str(first.get('msg', 'invalid'))[:500]}", field=field)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, error: HTTPException) -> JSONResponse:
        return problem_response(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(RecursionError)
    async def _nested(_: Request, error: RecursionError) -> JSONResponse:
        return problem_response(422, "body: nested too deeply", field="body")

    async def _store_down(_: Request, error: Exception) -> JSONResponse:
        log.warning("document store unreachable: %s", type(error).__name__)
        return problem_response(503, f"the document store is unreachable ({type(error).__name__})")

    for store_error in STORE_ERRORS:
        app.add_exception_handler(store_error, _store_down)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem_response(500, f"{type(error).__name__}")
