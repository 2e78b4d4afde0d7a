"""Optional dependencies: the core runs without the server stack, MongoDB or S3 clients."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import `module`, or fail with the install command that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{what} needs {module.split('.')[0]}, which is not installed: pip install 'lm-saes[{extra}]'"
        ) from None
