"""Hosting a service whose work runs as jobs: the executor, its scheduling loop and job gauges,
the shared JobService next to the service's own, resume on start, checkpoint on stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

import grpc
from prometheus_client import Gauge

from lm_saes.jobs import Executor, LocalExecutor
from lm_saes.jobs.kubernetes import KubernetesSettings
from lm_saes.records import JOB_STATES
from services.common.errors import STORE_ERRORS
from services.common.job_servicer import JobServicer
from services.common.server import serve
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)
JOBS = Gauge("lm_saes_jobs", "Jobs in the document store, by kind and state", ["kind", "state"])
JOB_TOKENS = Gauge("lm_saes_job_tokens", "Tokens processed by the jobs in the store, by kind", ["kind"])


class JobServiceSettings(ServiceSettings):
    max_jobs: int = 1  # concurrent local worker processes (each holds a model)
    executor: Literal["local", "kubernetes"] = "local"  # kubernetes: each job a batch/v1 Job
    kubernetes: KubernetesSettings = KubernetesSettings()  # LM_SAES_KUBERNETES='{"image": ...}'


def make_executor(settings: JobServiceSettings, kind: str) -> Executor:
    if settings.executor == "kubernetes":
        from lm_saes.jobs.kubernetes import KubernetesExecutor

        return KubernetesExecutor(settings.documents, settings.kubernetes, kinds=(kind,))
    return LocalExecutor(settings.documents, max_workers=settings.max_jobs, kinds=(kind,))


def export_job_gauges(executor: Executor, kind: str, stop: threading.Event, interval: float = 2.0) -> None:
    """Keep `lm_saes_jobs{kind,state}` current and start queued jobs as workers free up."""

    def loop() -> None:
        while not stop.wait(interval):
            try:
                executor.schedule()
                jobs = executor.documents.list_jobs(kind)
            except STORE_ERRORS as error:  # keep going: the store may come back
                log.warning("job scheduler: store unreachable (%s); retrying in %.0f s", error, interval)
                continue
            for state in JOB_STATES:
                JOBS.labels(kind, state).set(sum(j.state == state for j in jobs))
            JOB_TOKENS.labels(kind).set(sum(j.metrics.get("tokens", 0.0) for j in jobs))

    threading.Thread(target=loop, name=f"{kind}-jobs", daemon=True).start()


def run_job_service(
    settings: JobServiceSettings,
    kind: str,
    make_servicer: Callable[[Executor], tuple[Any, Callable[[Any, grpc.Server], None], str]],
    executor: Executor | None = None,
    on_stop: Callable[[], None] | None = None,
) -> int:
    """Resume unfinished jobs, serve the service and its JobService until SIGTERM, then
    checkpoint running workers and stop."""
    executor = executor or make_executor(settings, kind)
    executor.resume_unfinished()
    stop = threading.Event()
    export_job_gauges(executor, kind, stop)
    servicer, add_to_server, name = make_servicer(executor)
    jobs = JobServicer(kind, executor)

    def register(server: grpc.Server) -> list[str]:
        add_to_server(servicer, server)
        return [name, jobs.register(server)]

    def stopping() -> None:
        stop.set()
        if on_stop is not None:
            on_stop()
        executor.shutdown()

    return serve(settings, register, stopping)
