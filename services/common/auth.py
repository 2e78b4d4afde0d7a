"""Authentication, scopes and stream limits for every service, as one server interceptor.

Each RPC of ours needs a bearer token (`authorization: Bearer <token>` metadata) whose scope
covers the method (`METHOD_SCOPES`; a method missing there is refused, so a new RPC cannot be
born open). Health and reflection stay open for probes. The caller's `Principal` is available
to the handler through `caller()`; a `service` caller (the gateway) may name the end user it
acts for, and the scopes that user holds, in metadata.

Server streams (Watch, GetActivations) each hold an RPC thread for as long as they are open,
so they are capped globally and per caller: past the cap a new stream gets RESOURCE_EXHAUSTED
at once, and unary RPCs (health, Get, Cancel) always find a free thread.
"""

from __future__ import annotations

import contextvars
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from lm_saes.auth import MAX_NAME, SCOPES, USER_METADATA, Principal, TokenTable

SCOPES_METADATA = "x-lm-saes-scopes"  # the scopes the gateway granted the user it acts for
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
METHOD_SCOPES: dict[str, str] = {
    **{
        f"lm_saes.v1.JobService/{m}": s
        for m, s in {"Get": "read", "List": "read", "Watch": "read", "Cancel": "submit"}.items()
    },
    **{
        f"lm_saes.v1.ActivationService/{m}": s
        for m, s in {
            "Tokenize": "compute",
            "GetActivations": "compute",
            "GetFeatureActivations": "compute",
            "GenerateActivations": "submit",
            "Generate": "compute",
        }.items()
    },
    "lm_saes.v1.TrainingService/Submit": "submit",
    **{
        f"lm_saes.v1.AnalysisService/{m}": s
        for m, s in {
            "Submit": "submit",
            "GetFeature": "read",
            "ListFeatures": "read",
            "SearchFeatures": "read",
            "SubmitAutointerp": "submit",
        }.items()
    },
    **{
        f"lm_saes.v1.CircuitService/{m}": s
        for m, s in {
            "Submit": "submit",
            "GetGraph": "read",
            "ListGraphs": "read",
            "Intervene": "compute",
            "ExplainAttention": "compute",
        }.items()
    },
}
_USER = re.compile(rf"^[A-Za-z0-9_.@:+-]{{1,{MAX_NAME}}}$")
_CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("caller", default=None)


def caller() -> Principal:
    """The authenticated principal of the RPC being handled (set by `AuthInterceptor`)."""
    principal = _CALLER.get()
    if principal is None:  # only reachable if a servicer runs without the interceptor
        raise RuntimeError("no authenticated caller: the server lacks AuthInterceptor")
    return principal


def may_see(principal: Principal, owner: str | None) -> bool:
    """Jobs belong to their owner; admins see everyone's."""
    return principal.has("admin") or owner == principal.name


class StreamLimits:
    """Counts open server streams, in total and per principal name."""

    def __init__(self, total: int, per_caller: int):
        self.total, self.per_caller = total, per_caller
        self.open: Counter[str] = Counter()
        self.lock = threading.Lock()

    def acquire(self, name: str) -> str | None:
        """None when the stream may open, else why not."""
        with self.lock:
            if sum(self.open.values()) >= self.total:
                return f"{self.total} streams are open on this server (max_streams); retry later"
            if self.open[name] >= self.per_caller:
                return f"{self.per_caller} streams are already open for {name} (max_streams_per_caller)"
            self.open[name] += 1
            return None

    def release(self, name: str) -> None:
        with self.lock:
            self.open[name] -= 1
            if self.open[name] <= 0:
                del self.open[name]

    def count(self) -> int:
        with self.lock:
            return sum(self.open.values())


def _bearer(metadata: dict[str, str]) -> str | None:
    value = metadata.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _delegate(principal: Principal, metadata: dict[str, str]) -> Principal | str:
    """The end user a `service` caller names (with the scopes it grants, within its own), or why not."""
    user = metadata.get(USER_METADATA)
    if user is None:
        return principal
    if not principal.has("service"):
        return f"{USER_METADATA} is only for service tokens"
    if not _USER.match(user):
        return f"{USER_METADATA}: 1 to {MAX_NAME} letters, digits or _.@:+-"
    granted = metadata.get(SCOPES_METADATA)
    scopes = principal.scopes - {"service", "admin"}
    if granted is not None:
        asked = {s for s in granted.split(",") if s}
        if not asked <= set(SCOPES):
            return f"{SCOPES_METADATA}: unknown scopes"
        scopes = frozenset((asked - {"service"}) & principal.scopes)
    return Principal(user, frozenset(scopes))


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens: TokenTable, streams: StreamLimits):
        self.tokens = tokens
        self.streams = streams

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        method = details.method.lstrip("/")
        if handler is None or method.rpartition("/")[0] in OPEN_SERVICES:
            return handler
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        scope = METHOD_SCOPES.get(method)
        token = _bearer(metadata)
        principal = self.tokens.lookup(token) if token else None
        if principal is None:
            why = "unknown bearer token" if token else "a bearer token is required (authorization: Bearer <token>)"
            return _refuse(handler, grpc.StatusCode.UNAUTHENTICATED, why)
        acting = _delegate(principal, metadata)
        if isinstance(acting, str):
            return _refuse(handler, grpc.StatusCode.PERMISSION_DENIED, acting)
        principal = acting
        if scope is None or not principal.has(scope):
            needed = f"the {scope!r} scope" if scope else "a scope no token has (the method is not open to callers)"
            return _refuse(handler, grpc.StatusCode.PERMISSION_DENIED, f"{method} needs {needed}")
        if handler.unary_stream:
            return handler._replace(unary_stream=self._streaming(handler.unary_stream, principal))
        if handler.unary_unary:
            return handler._replace(unary_unary=_as(handler.unary_unary, principal))
        return _refuse(handler, grpc.StatusCode.UNIMPLEMENTED, "client streams are not served")

    def _streaming(self, behavior: Callable, principal: Principal) -> Callable:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator:
            why = self.streams.acquire(principal.name)
            if why is not None:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, why)
            released = threading.Event()

            def release() -> None:  # once: on the stream's end or when the client goes away
                if not released.is_set():
                    released.set()
                    self.streams.release(principal.name)

            context.add_callback(release)
            token = _CALLER.set(principal)
            try:
                yield from behavior(request, context)
            finally:
                _CALLER.reset(token)
                release()

        return wrapped


def _as(behavior: Callable, principal: Principal) -> Callable:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        token = _CALLER.set(principal)
        try:
            return behavior(request, context)
        finally:
            _CALLER.reset(token)

    return wrapped


def _refuse(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape that only aborts (no request is handled)."""

    def abort(_request: Any, context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    def abort_stream(_request: Any, context: grpc.ServicerContext) -> Iterator:
        context.abort(code, message)
        yield  # pragma: no cover - abort raises

    if handler.unary_stream or handler.stream_stream:
        kind = "unary_stream" if handler.unary_stream else "stream_stream"
        return handler._replace(**{kind: abort_stream})
    kind = "unary_unary" if handler.unary_unary else "stream_unary"
    return handler._replace(**{kind: abort})
