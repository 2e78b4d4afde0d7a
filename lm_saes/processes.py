"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """Linux: when the parent dies, even by SIGKILL, the kernel kills this process too (no orphan
    keeps writing or serving). Call it first thing in a child, or as a Popen `preexec_fn`."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
