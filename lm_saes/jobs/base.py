"""What every executor does, whether jobs run as local processes or as Kubernetes Jobs.

The services only talk to this protocol: they submit and cancel jobs, and call `schedule`
periodically (start queued work, follow running work into its record). Job state itself
lives in the document store, so any replica of a service can answer for any job.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from lm_saes.records import JobRecord
from lm_saes.stores.documents import DocumentStore


@runtime_checkable
class Executor(Protocol):
    # read-only in the protocol: implementations hold plain attributes
    @property
    def documents_uri(self) -> str: ...

    @property
    def documents(self) -> DocumentStore: ...

    @property
    def kinds(self) -> tuple[str, ...] | None:
        """The job kinds it runs (None: every kind)."""
        ...

    def submit(self, kind: str, config: dict[str, Any], request_id: str | None = None, owner: str = "") -> JobRecord:
        """Queue a job owned by `owner`; the same owner's request id returns the existing job."""
        ...

    def schedule(self) -> None:
        """Start queued jobs where there is room and bring running ones' records up to date."""
        ...

    def resume_unfinished(self) -> list[str]:
        """After a restart: requeue (and return) the jobs this replica left unfinished."""
        ...

    def cancel(self, job_id: str) -> JobRecord | None:
        """Mark the job cancelled and stop its work (a running worker checkpoints first)."""
        ...

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop accepting work and let running workers checkpoint."""
        ...
