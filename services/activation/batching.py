"""Coalesce concurrent requests for one SAE into one model forward.

Each SAE gets a thread that takes the first waiting request, gathers whatever else arrives
within the batching window (up to `max_batch`), runs them as one padded batch, and hands each
caller its own rows. Callers block in their RPC thread until their result is ready. With a
zero window (the default) nothing waits: a lone request runs at once, and requests that arrive
while a forward runs form the next batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from prometheus_client import Counter, Histogram

TOKENS = Counter("lm_saes_activation_tokens_total", "Tokens run through the model and SAE for live requests")
BATCH_SIZE = Histogram(
    "lm_saes_activation_batch_size",
    "Texts per batched forward of GetFeatureActivations",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
# Runs one batch: token lists (BOS first) -> one [len - 1, d_sae] activation tensor each.
BatchFunction = Callable[[list[list[int]]], list[torch.Tensor]]


class BatcherClosed(RuntimeError):
    """The batcher's SAE was evicted from the cache; fetch it again."""


@dataclass
class _Request:
    tokens: list[int]
    future: Future = field(default_factory=Future)


class FeatureBatcher:
    def __init__(self, run: BatchFunction, window_s: float, max_batch: int, name: str):
        self._run = run
        self._window_s = window_s
        self._max_batch = max_batch
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"batch-{name}", daemon=True)
        self._thread.start()

    def submit(self, tokens: list[int]) -> torch.Tensor:
        """Block until this text's [len - 1, d_sae] activations are computed."""
        request = _Request(tokens)
        with self._lock:
            if self._closed:
                raise BatcherClosed()
            self._queue.put(request)
        return request.future.result()

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._lock:
            self._closed = True
            self._queue.put(None)

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, deadline = [first], time.monotonic() + self._window_s
        while len(batch) < self._max_batch:
            try:
                remaining = deadline - time.monotonic()
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = self._gather(first)
            BATCH_SIZE.observe(len(batch))
            TOKENS.inc(sum(len(r.tokens) - 1 for r in batch))
            try:
                results = self._run([r.tokens for r in batch])
            except BaseException as error:  # every waiting caller learns why
                for request in batch:
                    request.future.set_exception(error)
                continue
            for request, result in zip(batch, results, strict=True):
                request.future.set_result(result)
