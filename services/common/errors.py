"""RPC error mapping shared by every servicer: field-naming INVALID_ARGUMENT / NOT_FOUND from
RequestError, UNAVAILABLE after bounded retries when a store is unreachable, INTERNAL (logged)
for anything else. Never a crash, never a stack trace to the client."""

from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

log = logging.getLogger(__name__)
STORE_ATTEMPTS = 3
STORE_BACKOFF_S = 0.25


class RequestError(Exception):
    """A bad request: carries its status code; the message starts with the field it names."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def invalid(field: str, problem: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}")


def _store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'a store did not answer' (not 'the request is wrong')."""
    errors: list[type[BaseException]] = [sqlite3.OperationalError, ConnectionError, TimeoutError]
    try:
        from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError

        errors += [AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError]
    except ImportError:
        pass
    try:
        from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

        errors += [MaxRetryError, NewConnectionError, ProtocolError]
    except ImportError:
        pass
    return tuple(errors)


STORE_ERRORS = _store_errors()


def _fail(method: Callable, context: grpc.ServicerContext, error: Exception) -> None:
    if context.code() not in (None, grpc.StatusCode.OK):  # the handler already aborted
        raise error
    if isinstance(error, RequestError):
        context.abort(error.code, str(error))
    if isinstance(error, STORE_ERRORS):
        context.abort(grpc.StatusCode.UNAVAILABLE,
                      f"a store is unreachable after {STORE_ATTEMPTS} tries: {type(error).__name__}: {error}")
    log.exception("%s failed", method.__name__)
    context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


def rpc(method: Callable) -> Callable:
    """Decorate a servicer method: unary calls retry store errors with backoff, then map errors."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator:
            try:
                yield from method(self, request, context)
            except Exception as error:
                _fail(method, context, error)

        return stream

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        for attempt in range(STORE_ATTEMPTS):
            try:
                return method(self, request, context)
            except STORE_ERRORS as error:
                if attempt + 1 == STORE_ATTEMPTS or context.code() not in (None, grpc.StatusCode.OK):
                    _fail(method, context, error)
                log.warning("%s: store error (%s), retry %d", method.__name__, error, attempt + 1)
                time.sleep(STORE_BACKOFF_S * 2**attempt)
            except Exception as error:
                _fail(method, context, error)
        return None

    return unary
