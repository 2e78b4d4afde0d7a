"""A job's life in the document store: created (idempotently per request id), cancelled,
and updated by its worker through a `JobReporter`.

A job is one `JobRecord`. Workers write it; services and clients only read it, so a restarted
service learns everything from the store.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from lm_saes.records import JobRecord
from lm_saes.stores.documents import DocumentStore

JOB_NAMESPACE = uuid.UUID("8e5d1a52-2c39-4e06-9b55-5f1f2c7a9d10")


def now() -> str:
    return datetime.now(UTC).isoformat()


def job_id_for(kind: str, request_id: str | None, owner: str = "") -> str:
    """A stable id for an owner's request id (so a duplicate submit finds the same job, and one
    caller's request id never finds another's job), else a fresh one."""
    if request_id:
        name = f"{kind}:{request_id}" if not owner else f"{kind}:{owner}:{request_id}"
        return f"{kind}-{uuid.uuid5(JOB_NAMESPACE, name).hex[:16]}"
    return f"{kind}-{uuid.uuid4().hex[:16]}"


def new_job(kind: str, config: dict[str, Any], request_id: str | None = None, owner: str = "") -> JobRecord:
    """`owner`: the principal that submitted it (empty for the local CLI)."""
    stamp = now()
    return JobRecord(
        id=job_id_for(kind, request_id, owner),
        kind=kind,
        state="queued",
        request_id=request_id or "",
        owner=owner,
        config=config,
        created=stamp,
        updated=stamp,
    )


def create_job(
    documents: DocumentStore, lock, kind: str, config: dict[str, Any], request_id: str | None, owner: str = ""
) -> tuple[JobRecord, bool]:
    """(the job, whether it is new): a request id seen before returns its existing job."""
    job = new_job(kind, config, request_id, owner)
    with lock:
        existing = documents.get_job(job.id)
        if existing is not None:
            return existing, False
        documents.put_job(job)
    return job, True


def mark_cancelled(documents: DocumentStore, job_id: str) -> tuple[JobRecord | None, bool]:
    """(the job, whether this call cancelled it); finished jobs stay as they are."""
    job = documents.get_job(job_id)
    if job is None or job.finished:
        return job, False
    job = job.model_copy(update={"state": "cancelled", "updated": now()})
    documents.put_job(job)
    return job, True


def progress_of(job: JobRecord) -> dict[str, Any]:
    """A job's progress as an event: what Watch streams and the gateway's /events sends."""
    metrics = job.metrics
    return {
        "job_id": job.id,
        "state": job.state,
        "step": int(metrics.get("step", 0)),
        "total_steps": int(metrics.get("total_steps", 0)),
        "tokens": int(metrics.get("tokens", 0)),
        "loss": metrics.get("loss", 0.0),
        "l0": metrics.get("l0", 0.0),
        "explained_variance": metrics.get("explained_variance", 0.0),
        "message": job.error,
        "progress": job.progress,
        "metrics": dict(metrics),
        "time": job.updated,
    }


class JobReporter:
    """Updates one job's record from inside its worker; never overwrites a cancellation."""

    def __init__(self, documents: DocumentStore, job_id: str, min_interval_s: float = 0.5):
        self.documents = documents
        self.job_id = job_id
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def _update(self, **fields: Any) -> JobRecord:
        job = self.documents.get_job(self.job_id)
        if job is None:
            raise KeyError(f"job {self.job_id} vanished from the store")
        if job.state == "cancelled":
            return job
        job = JobRecord.model_validate({**job.doc(), **fields, "updated": now()})
        self.documents.put_job(job)
        return job

    def state(self) -> str:
        job = self.documents.get_job(self.job_id)
        return job.state if job else "cancelled"

    def running(self) -> None:
        self._update(state="running", error="")

    def progress(self, progress: float, metrics: dict[str, float] | None = None, force: bool = False) -> None:
        """Throttled: at most one write per `min_interval_s` unless forced."""
        if not force and time.monotonic() - self._last < self.min_interval_s:
            return
        self._last = time.monotonic()
        fields: dict[str, Any] = {"progress": max(0.0, min(1.0, progress))}
        if metrics is not None:
            fields["metrics"] = metrics
        self._update(**fields)

    def requeued(self) -> None:
        """Stopped by a shutdown with its work checkpointed: the next service start resumes it."""
        self._update(state="queued")

    def succeeded(self, result: dict[str, Any]) -> None:
        self._update(state="succeeded", progress=1.0, result=result)

    def failed(self, error: str) -> None:
        self._update(state="failed", error=error)
