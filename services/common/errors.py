"""RPC error mapping shared by every servicer: field-naming INVALID_ARGUMENT / NOT_FOUND from
RequestError, UNAVAILABLE within a bounded wait when a store is unreachable, INTERNAL (logged)
only for our own bugs. Never a crash, never a stack trace to the client, and messages are cut
to `MAX_MESSAGE` characters (input echoed in them is cut far shorter by `short`)."""

from __future__ import annotations

import functools
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from lm_saes.stores.errors import STORE_ERRORS

log = logging.getLogger(__name__)
STORE_BACKOFF_S = 0.25
STORE_WAIT_S = 2.0  # services set it from LM_SAES_STORE_WAIT_S
MAX_MESSAGE = 2000


def short(value: object, limit: int = 80) -> str:
    """`value` for an error message: repr'd and cut, so echoed input stays small."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class RequestError(Exception):
    """A bad request: carries its status code; the message starts with the field it names."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def invalid(field: str, problem: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}")


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    context.abort(code, message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + " [cut]")


def _fail(method: Callable, context: grpc.ServicerContext, error: BaseException) -> None:
    if context.code() not in (None, grpc.StatusCode.OK):  # the handler already aborted
        raise error
    if isinstance(error, RequestError):
        _abort(context, error.code, str(error))
    if isinstance(error, STORE_ERRORS):
        _abort(
            context,
            grpc.StatusCode.UNAVAILABLE,
            f"a store is unreachable (waited up to {STORE_WAIT_S:g} s): {type(error).__name__}",
        )
    if isinstance(error, RecursionError):  # a deeply nested request body
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request: nested too deeply")
    log.error("%s failed: %s", method.__name__, traceback.format_exc())
    _abort(context, grpc.StatusCode.INTERNAL, f"{method.__name__} failed ({type(error).__name__}); see the server log")


def rpc(method: Callable) -> Callable:
    """Decorate a servicer method: unary calls retry store errors with backoff for up to
    `STORE_WAIT_S`, then map errors."""
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
        deadline = time.monotonic() + STORE_WAIT_S
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                return method(self, request, context)
            except STORE_ERRORS as error:
                backoff = STORE_BACKOFF_S * 2**attempt
                took = time.monotonic() - started  # another try would likely take as long
                if time.monotonic() + backoff + took > deadline or context.code() not in (None, grpc.StatusCode.OK):
                    _fail(method, context, error)
                attempt += 1
                log.warning("%s: store error (%s), retry %d", method.__name__, type(error).__name__, attempt)
                time.sleep(backoff)
            except Exception as error:
                _fail(method, context, error)

    return unary
