"""Bootstrap for a service whose work runs as jobs: executor, resume, metrics, shutdown."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Literal

import grpc
from prometheus_client import Gauge

from lm_saes.jobs import LocalExecutor
from lm_saes.jobs.kubernetes import KubernetesSettings
from services.common.errors import STORE_ERRORS
from services.common.server import serve
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)
JOBS = Gauge("lm_saes_jobs", "Jobs in the document store, by kind and state", ["kind", "state"])
JOB_TOKENS = Gauge("lm_saes_job_tokens", "Tokens processed by the jobs in the store, by kind", ["kind"])
STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class JobServiceSettings(ServiceSettings):
    max_jobs: int = 1  # concurrent local worker processes (each holds a model)
    executor: Literal["local", "kubernetes"] = "local"  # kubernetes: each job a batch/v1 Job
    kubernetes: KubernetesSettings = KubernetesSettings()  # LM_SAES_KUBERNETES='{"image": ...}'


def make_executor(settings: JobServiceSettings, kind: str):
    if settings.executor == "kubernetes":
        from lm_saes.jobs.kubernetes import KubernetesExecutor

        return KubernetesExecutor(settings.documents, settings.kubernetes, kinds=(kind,))
    return LocalExecutor(settings.documents, max_workers=settings.max_jobs, kinds=(kind,))


def export_job_gauges(executor: LocalExecutor, kind: str, stop: threading.Event, interval: float = 2.0) -> None:
    """Keep `lm_saes_jobs{kind,state}` current and start queued jobs as workers free up."""

    def loop() -> None:
        while not stop.wait(interval):
            try:
                executor.schedule()
                jobs = executor.documents.list_jobs(kind)
            except STORE_ERRORS as error:  # keep going: the store may come back
                log.warning("job scheduler: store unreachable (%s); retrying in %.0f s", error, interval)
                continue
            for state in STATES:
                JOBS.labels(kind, state).set(sum(j["state"] == state for j in jobs))
            JOB_TOKENS.labels(kind).set(sum(float((j.get("metrics") or {}).get("tokens", 0)) for j in jobs))

    threading.Thread(target=loop, name=f"{kind}-jobs", daemon=True).start()


def run_job_service(settings: JobServiceSettings, kind: str,
                    make_servicer: Callable[[LocalExecutor], tuple[object, Callable[[object, grpc.Server], None], str]]) -> int:
    """Resume unfinished jobs, serve until SIGTERM, then checkpoint running workers and stop."""
    executor = make_executor(settings, kind)
    executor.resume_unfinished()
    stop = threading.Event()
    export_job_gauges(executor, kind, stop)
    servicer, add_to_server, name = make_servicer(executor)

    def register(server: grpc.Server) -> list[str]:
        add_to_server(servicer, server)
        return [name]

    def on_stop() -> None:
        stop.set()
        executor.shutdown()

    return serve(settings, register, on_stop)
