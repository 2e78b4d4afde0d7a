"""The training log (`metrics.jsonl`, one JSON record per logged step), written as it grows.

On a local folder each record is appended to the file when it is logged. An object store
cannot append, and rewriting the whole log at every step is quadratic in its length, so there
the records are written in segments (`metrics.d/NNNNNN.jsonl`, one per checkpoint) and joined
into `metrics.jsonl` once when training ends. A resumed run keeps the records up to its
checkpoint's step (the steps after it are trained, and logged, again).
"""

from __future__ import annotations

import json
from typing import Any

from lm_saes.stores import ObjectStore

METRICS_KEY = "metrics.jsonl"
SEGMENTS = "metrics.d"


def _lines(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _parse(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def read_metrics(store: ObjectStore) -> list[dict[str, Any]]:
    """Every record logged so far, in order (the joined log, then unjoined segments)."""
    records = _parse(store.get_bytes(METRICS_KEY)) if store.exists(METRICS_KEY) else []
    for key in store.list(SEGMENTS):
        records += _parse(store.get_bytes(key))
    return records


class MetricsLog:
    """Appends records to a run's log; `flush` at checkpoints, `close` at the end."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.appends = store.can_append
        self.pending: list[dict[str, Any]] = []

    def resume(self, step: int) -> None:
        """Drop records past `step` (the checkpoint a run resumes from): one rewrite, at start."""
        kept = [r for r in read_metrics(self.store) if r["step"] <= step]
        self.store.put_bytes(METRICS_KEY, _lines(kept))
        self.store.delete_prefix(SEGMENTS)

    def start(self) -> None:
        """A fresh run: no log left from an earlier one in the same folder."""
        self.store.delete(METRICS_KEY)
        self.store.delete_prefix(SEGMENTS)

    def append(self, record: dict[str, Any]) -> None:
        if self.appends:
            self.store.append_bytes(METRICS_KEY, _lines([record]))
        else:
            self.pending.append(record)

    def flush(self) -> None:
        """Write what is pending as the next segment (object stores)."""
        if self.pending:
            number = len(self.store.list(SEGMENTS))
            self.store.put_bytes(f"{SEGMENTS}/{number:06d}.jsonl", _lines(self.pending))
            self.pending = []

    def close(self) -> None:
        """Flush, and on object stores join the segments into metrics.jsonl."""
        self.flush()
        if not self.appends and self.store.list(SEGMENTS):
            self.store.put_bytes(METRICS_KEY, _lines(read_metrics(self.store)))
            self.store.delete_prefix(SEGMENTS)
