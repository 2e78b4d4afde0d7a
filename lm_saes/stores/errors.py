"""The exceptions that mean "a store did not answer" (not "the request is wrong"), for every
backend we use; callers map them to UNAVAILABLE / 503."""

from __future__ import annotations

import sqlite3


def _store_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [sqlite3.OperationalError, ConnectionError, TimeoutError]
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
