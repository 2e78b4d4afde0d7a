"""Prometheus metrics: per-RPC request counts and latencies, recorded by a server interceptor.

Metrics live in the default registry (one service per process); `start_metrics_server`
serves them at http://HOST:PORT/metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram, start_http_server

REQUESTS = Counter(
    "lm_saes_grpc_requests_total", "RPCs handled, by method and status code", ["service", "method", "code"]
)
LATENCY = Histogram(
    "lm_saes_grpc_request_seconds",
    "RPC handling time (streams: until the last message)",
    ["service", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def start_metrics_server(host: str, port: int) -> None:
    start_http_server(port, addr=host)


def _split(full_method: str) -> tuple[str, str]:
    """`/lm_saes.v1.ActivationService/Tokenize` -> ("lm_saes.v1.ActivationService", "Tokenize")."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method


def _code(context: grpc.ServicerContext, error: BaseException | None) -> str:
    code = context.code()  # set by abort()/set_code(); None means the handler left it OK
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if error is not None and not isinstance(error, GeneratorExit) else "OK"


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every RPC by final status code and times it, for unary and streaming responses."""

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split(handler_call_details.method)

        def record(context: grpc.ServicerContext, started: float, error: BaseException | None) -> None:
            REQUESTS.labels(service, method, _code(context, error)).inc()
            LATENCY.labels(service, method).observe(time.perf_counter() - started)

        def unary(behavior: Callable) -> Callable:
            def wrapped(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                started, error = time.perf_counter(), None
                try:
                    return behavior(request_or_iterator, context)
                except BaseException as caught:
                    error = caught
                    raise
                finally:
                    record(context, started, error)

            return wrapped

        def streaming(behavior: Callable) -> Callable:
            def wrapped(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator:
                started, error = time.perf_counter(), None
                try:
                    yield from behavior(request_or_iterator, context)
                except BaseException as caught:
                    error = caught
                    raise
                finally:
                    record(context, started, error)

            return wrapped

        if handler.unary_unary:
            return handler._replace(unary_unary=unary(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=unary(handler.stream_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=streaming(handler.unary_stream))
        return handler._replace(stream_stream=streaming(handler.stream_stream))
