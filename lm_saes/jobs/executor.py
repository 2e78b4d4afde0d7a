"""Run jobs in worker processes, outside any RPC thread; resume unfinished ones on start.

Each job runs in its own spawned process (a clean CUDA/torch state, and a crash or a kill
cannot take the service down). A worker handles SIGTERM by checkpointing and marking its job
`queued`, so a service stopping gracefully loses nothing and the next start picks it up.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from lm_saes.jobs.lifecycle import JobReporter, create_job, mark_cancelled, now
from lm_saes.processes import die_with_parent
from lm_saes.records import JobRecord
from lm_saes.stores.documents import open_document_store

log = logging.getLogger(__name__)
JobFunction = Callable[[JobRecord, JobReporter, Callable[[], bool]], dict[str, Any] | None]


def _job_functions() -> dict[str, JobFunction]:
    from lm_saes.jobs.kinds import JOB_KINDS

    return JOB_KINDS


def _worker(documents_uri: str, job_id: str) -> None:
    """Local worker process: dies with its service, then runs the job."""
    die_with_parent()
    run_job(documents_uri, job_id)


def run_job(documents_uri: str, job_id: str) -> int:
    """Run one job to an end state (or back to `queued` on SIGTERM). Under torchrun only
    rank 0 writes the record; the other ranks train and stop at the step every rank agrees on
    (the trainer all-reduces each rank's stop flag)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {job_id} %(levelname)s %(name)s: %(message)s")
    reporting = int(os.environ.get("RANK", "0")) == 0
    with open_document_store(documents_uri) as documents:
        reporter = JobReporter(documents, job_id)
        job = documents.get_job(job_id)
        if job is None or job.finished:
            return 0
        if not reporting:
            with contextlib.suppress(InterruptedError):  # stopped with the others at an agreed step
                _job_functions()[job.kind](job, reporter, stop.is_set)
            return 0
        reporter.running()

        def should_stop() -> bool:
            return stop.is_set() or reporter.state() == "cancelled"

        try:
            result = _job_functions()[job.kind](job, reporter, should_stop)
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


def replica_name() -> str:
    """This service replica's stable name (LM_SAES_REPLICA, else the host name): jobs it claims
    carry it, so a restarted replica requeues only its own."""
    return os.environ.get("LM_SAES_REPLICA") or socket.gethostname()


LEASE_S = 30.0  # a claimed job's lease; its replica renews it on every schedule pass (~2 s)


class LocalExecutor:
    """Jobs as local worker processes; their state lives in the document store. Several
    replicas may share one store: each queued job is claimed atomically by exactly one, which
    holds a lease on it while its worker runs; a job whose replica vanished (its lease ran
    out) goes back to the queue for any replica to take."""

    def __init__(
        self, documents_uri: str, max_workers: int = 1, kinds: tuple[str, ...] | None = None, replica: str | None = None
    ):
        """`kinds`: the job kinds this executor runs (a service runs its own; default: all)."""
        self.documents_uri = documents_uri
        self.kinds = kinds
        self.replica = replica or replica_name()
        self.documents = open_document_store(documents_uri)
        self.max_workers = max_workers
        self.context = multiprocessing.get_context("spawn")
        self.processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self.lock = threading.Lock()
        self.closed = False

    def submit(self, kind: str, config: dict[str, Any], request_id: str | None = None, owner: str = "") -> JobRecord:
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
            jobs = self._jobs()
            self._keep_leases(jobs)
            queued = sorted((j for j in jobs if j.state == "queued"), key=lambda j: j.created)
            for job in queued:
                if len(self.processes) >= self.max_workers:
                    break
                if job.id in self.processes:
                    continue
                claimed = self.documents.claim_job(
                    job.id,
                    {
                        "state": "running",
                        "claimed_by": self.replica,
                        "lease_until": time.time() + LEASE_S,
                        "updated": now(),
                    },
                )
                if claimed is None:  # another replica took it (or it was cancelled) meanwhile
                    continue
                self.processes[job.id] = self._start(claimed)

    def _keep_leases(self, jobs: list[JobRecord]) -> None:
        """Renew the leases of this replica's running workers; requeue (in place, in `jobs`)
        running jobs whose replica let its lease run out."""
        for number, job in enumerate(jobs):
            if job.state != "running" or job.lease_until is None:
                continue
            expected = {"state": "running", "claimed_by": job.claimed_by, "lease_until": job.lease_until}
            if job.claimed_by == self.replica:
                process = self.processes.get(job.id)
                if process is not None and process.is_alive():
                    self.documents.update_job_if(job.id, expected, {"lease_until": time.time() + LEASE_S})
            elif job.lease_until < time.time():
                requeued = self.documents.update_job_if(job.id, expected, {"state": "queued", "updated": now()})
                if requeued is not None:
                    log.warning("job %s: replica %s let its lease run out; requeued", job.id, job.claimed_by)
                    jobs[number] = requeued

    def _start(self, job: JobRecord) -> multiprocessing.process.BaseProcess:
        """A worker process for a job this replica has claimed."""
        process = self.context.Process(
            target=_worker, args=(self.documents_uri, job.id), name=f"job-{job.id}", daemon=False
        )
        process.start()
        log.info("started job %s (%s) in pid %s", job.id, job.kind, process.pid)
        return process

    def _jobs(self) -> list[JobRecord]:
        if self.kinds is None:
            return self.documents.list_jobs()
        return [job for kind in self.kinds for job in self.documents.list_jobs(kind)]

    def resume_unfinished(self) -> list[str]:
        """After a restart: jobs this replica left `running` (its worker died with it) go back
        to the queue; other replicas' running jobs are theirs."""
        resumed = []
        for job in self._jobs():
            mine = job.claimed_by in (None, "", self.replica)
            if job.state == "running" and mine and job.id not in self.processes:
                self.documents.put_job(job.model_copy(update={"state": "queued", "updated": now()}))
                resumed.append(job.id)
        self.schedule()
        return resumed

    def cancel(self, job_id: str) -> JobRecord | None:
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
