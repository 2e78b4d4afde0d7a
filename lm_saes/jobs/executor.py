"""Run jobs in worker processes, outside any RPC thread; resume unfinished ones on start.

Each job runs in its own spawned process (a clean CUDA/torch state, and a crash or a kill
cannot take the service down). A worker handles SIGTERM by checkpointing and marking its job
`queued`, so a service stopping gracefully loses nothing and the next start picks it up.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable
from typing import Any

from lm_saes.jobs.records import TERMINAL, JobReporter, create_job, mark_cancelled, now
from lm_saes.stores.documents import open_document_store

log = logging.getLogger(__name__)
JobFunction = Callable[[dict[str, Any], JobReporter, Callable[[], bool]], dict[str, Any] | None]


def _job_functions() -> dict[str, JobFunction]:
    from lm_saes.jobs.kinds import JOB_KINDS

    return JOB_KINDS


def _die_with_parent() -> None:
    """Linux: a hard-killed service takes its workers with it (no orphan keeps writing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(documents_uri: str, job_id: str) -> None:
    """Local worker process: dies with its service, then runs the job."""
    _die_with_parent()
    run_job(documents_uri, job_id)


def run_job(documents_uri: str, job_id: str) -> int:
    """Run one job to an end state (or back to `queued` on SIGTERM). Under torchrun only
    rank 0 writes the record; the other ranks just train."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {job_id} %(levelname)s %(name)s: %(message)s")
    reporting = int(os.environ.get("RANK", "0")) == 0
    with open_document_store(documents_uri) as documents:
        reporter = JobReporter(documents, job_id)
        job = documents.get_job(job_id)
        if job is None or job["state"] in TERMINAL:
            return 0
        if not reporting:
            _job_functions()[job["kind"]](job, reporter, lambda: False)
            return 0
        reporter.running()

        def should_stop() -> bool:
            return stop.is_set() or reporter.state() == "cancelled"

        try:
            result = _job_functions()[job["kind"]](job, reporter, should_stop)
        except InterruptedError:
            result = None
        except Exception as error:  # the job failed, not the worker: record why
            log.error("job failed: %s", traceback.format_exc())
            reporter.failed(f"{type(error).__name__}: {error}")
            return 1
        if result is None:  # stopped early with a checkpoint
            if reporter.state() != "cancelled":
                reporter.requeued()
            return 0
        reporter.succeeded(result)
        return 0


class LocalExecutor:
    """Jobs as local worker processes; their state lives in the document store."""

    def __init__(self, documents_uri: str, max_workers: int = 1, kinds: tuple[str, ...] | None = None):
        """`kinds`: the job kinds this executor runs (a service runs its own; default: all)."""
        self.documents_uri = documents_uri
        self.kinds = kinds
        self.documents = open_document_store(documents_uri)
        self.max_workers = max_workers
        self.context = multiprocessing.get_context("spawn")
        self.processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self.lock = threading.Lock()
        self.closed = False

    def submit(self, kind: str, config: dict[str, Any], request_id: str | None = None,
               owner: str = "") -> dict[str, Any]:
        """Queue a job owned by `owner`; the same owner's request id returns the existing job."""
        if kind not in _job_functions() or (self.kinds and kind not in self.kinds):
            raise ValueError(f"unknown job kind {kind!r}")
        job, created = create_job(self.documents, self.lock, kind, config, request_id, owner)
        if created:
            self.schedule()
        return job

    def schedule(self) -> None:
        """Start queued jobs while there are free worker slots."""
        with self.lock:
            if self.closed:
                return
            for job_id in [j for j, p in self.processes.items() if not p.is_alive()]:
                self.processes.pop(job_id).join()
            queued = sorted((j for j in self._jobs() if j["state"] == "queued"), key=lambda j: j["created"])
            for job in queued:
                if len(self.processes) >= self.max_workers:
                    break
                if job["id"] in self.processes:
                    continue
                process = self.context.Process(target=_worker, args=(self.documents_uri, job["id"]),
                                               name=f"job-{job['id']}", daemon=False)
                process.start()
                self.processes[job["id"]] = process
                log.info("started job %s (%s) in pid %s", job["id"], job["kind"], process.pid)

    def _jobs(self) -> list[dict[str, Any]]:
        if self.kinds is None:
            return self.documents.list_jobs()
        return [job for kind in self.kinds for job in self.documents.list_jobs(kind)]

    def resume_unfinished(self) -> list[str]:
        """After a restart: jobs left `running` by a dead worker go back to the queue."""
        resumed = []
        for job in self._jobs():
            if job["state"] == "running" and job["id"] not in self.processes:
                job.update(state="queued", updated=now())
                self.documents.put_job(job)
                resumed.append(job["id"])
        self.schedule()
        return resumed

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        job, cancelled = mark_cancelled(self.documents, job_id)
        if not cancelled:
            return job
        with self.lock:
            process = self.processes.get(job_id)
        if process is not None and process.is_alive():
            process.terminate()  # the worker checkpoints on SIGTERM and leaves `cancelled` as is
        return job

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop accepting, ask workers to checkpoint (SIGTERM), wait, then kill stragglers."""
        with self.lock:
            self.closed = True
            processes = list(self.processes.values())
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
        self.documents.close()

    def poll(self, interval: float = 1.0) -> threading.Thread:
        """A daemon thread that keeps scheduling queued jobs as workers finish."""

        def loop() -> None:
            while not self.closed:
                self.schedule()
                threading.Event().wait(interval)

        thread = threading.Thread(target=loop, name="job-scheduler", daemon=True)
        thread.start()
        return thread
