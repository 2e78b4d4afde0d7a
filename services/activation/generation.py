"""Concurrent Generate requests decoded together (continuous batching, `lm_saes.steering.batch`).

Each steerer (model + SAE set) gets a thread that owns one `Batch`. A request's continuations
(steered, and default when compared) join it between steps, so a request never waits for
another to finish; every step decodes one token of each continuation in one forward, holding
the model's lock only for that forward (live feature activations interleave). Each caller
reads its own steps from a queue; a caller that goes away (cancelled RPC) is dropped from the
batch at the next step. At most `max_rows` continuations run at once; more wait their turn.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

from prometheus_client import Histogram

from lm_saes.steering import Steerer, SteerRequest, Step

BATCH_ROWS = Histogram(
    "lm_saes_generate_batch_rows",
    "Continuations decoded together per Generate step",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
_DONE = object()


class GenerationClosed(RuntimeError):
    """The batcher's steerer left the cache; build a new one."""


@dataclass
class _Job:
    rows: list[tuple[str, SteerRequest, bool]]  # (run name, request, steered)
    number: int
    events: queue.Queue = field(default_factory=queue.Queue)  # (run, Step) | BaseException | _DONE
    cancelled: threading.Event = field(default_factory=threading.Event)
    left: int = 0


class GenerationBatcher:
    def __init__(self, steerer: Steerer, lock: threading.Lock, max_rows: int, name: str):
        self.steerer = steerer
        self.lock = lock
        self.max_rows = max_rows
        self._waiting: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._numbers = itertools.count()
        self._thread = threading.Thread(target=self._loop, name=f"generate-{name}", daemon=True)

    def submit(self, rows: list[tuple[str, SteerRequest, bool]]) -> Iterator[tuple[str, Step]]:
        """Queue one request's continuations; yields (run, Step) as they are decoded. Closing the
        iterator early (the client went away) drops them from the batch."""
        job = _Job(rows, next(self._numbers), left=len(rows))
        with self._wake:
            if self._closed:
                raise GenerationClosed()
            self._waiting.append(job)
            self._wake.notify()
            if not self._thread.is_alive() and self._thread.ident is None:  # started by the first request
                self._thread.start()
        return self._read(job)

    @staticmethod
    def _read(job: _Job) -> Iterator[tuple[str, Step]]:
        try:
            while True:
                item = job.events.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()

    def close(self) -> None:
        """Finish the requests already taken, then stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _admit(self, running: dict[int, _Job], rows: int) -> list[_Job]:
        """Waiting jobs that fit beside `rows` running continuations (block while idle)."""
        with self._wake:
            while not running and not self._waiting and not self._closed:
                self._wake.wait()
            taken: list[_Job] = []
            while self._waiting and (rows == 0 or rows + len(self._waiting[0].rows) <= self.max_rows):
                job = self._waiting.popleft()
                taken.append(job)
                rows += len(job.rows)
            return taken

    def _loop(self) -> None:
        batch = self.steerer.batch()
        running: dict[int, _Job] = {}
        while True:
            for job in self._admit(running, len(batch)):
                try:
                    for run, request, steered in job.rows:
                        self.steerer.add_to(batch, (job.number, run), request, steered)
                except Exception as error:  # checked by the caller first; a late failure still reaches it
                    batch.drop({(job.number, run) for run, _, _ in job.rows})
                    job.events.put(error)
                    continue
                running[job.number] = job
            gone = [job for job in running.values() if job.cancelled.is_set()]
            if gone:
                batch.drop({(job.number, run) for job in gone for run, _, _ in job.rows})
                for job in gone:
                    del running[job.number]
            if not len(batch):
                with self._wake:
                    if self._closed and not self._waiting:
                        return
                continue
            BATCH_ROWS.observe(len(batch))
            try:
                with self.lock:
                    steps = batch.step()
            except Exception as error:  # every caller in the batch learns why; the batch starts afresh
                for job in running.values():
                    job.events.put(error)
                running.clear()
                batch = self.steerer.batch()
                continue
            for key, step in steps:
                number, run = cast(tuple[int, str], key)
                job = running[number]
                job.events.put((run, step))
                if step.finish_reason:
                    job.left -= 1
                    if job.left == 0:
                        job.events.put(_DONE)
                        del running[number]
