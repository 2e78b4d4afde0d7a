"""Jobs: submitted to the training/analysis services (scope `submit`), read from the document
store, and followed as server-sent events from the owning service's Watch stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from gateway import auth
from gateway.backends import Backends, backends
from gateway.errors import from_service, not_found
from gateway.schemas import AnalysisJobRequest, Job, JobKind, Problem, TrainingJobRequest
from lm_saes.client import ServiceError

router = APIRouter(tags=["jobs"])
Store = Annotated[Backends, Depends(backends)]


def _job_or_404(store: Backends, job_id: str) -> dict[str, Any]:
    job = store.documents.get_job(job_id)
    if job is None:
        raise not_found(f"no job {job_id!r}")
    return job


@router.post("/jobs/training", response_model=Job, status_code=201, dependencies=[auth.submit])
def submit_training(store: Store, body: TrainingJobRequest) -> dict[str, Any]:
    """Queue a training run; a repeated `request_id` returns the job it made first."""
    try:
        return store.training.submit(body.config, request_id=body.request_id or "")
    except ServiceError as error:
        raise from_service(error, "training", field_prefix="config.",
                           rename={"config": "config", "config_json": "config", "config_toml": "config"}) from None


@router.post("/jobs/analysis", response_model=Job, status_code=201, dependencies=[auth.submit])
def submit_analysis(store: Store, body: AnalysisJobRequest) -> dict[str, Any]:
    try:
        return store.analysis.submit(body.sae_uri, sae_id=body.sae_id or "", config=body.config,
                                     request_id=body.request_id or "")
    except ServiceError as error:
        rename = {"sae_uri": "sae_uri", "config_json": "config"}
        raise from_service(error, "analysis", field_prefix="config.", rename=rename) from None


@router.post("/jobs/{job_id}/cancel", response_model=Job, dependencies=[auth.submit])
def cancel_job(store: Store, job_id: str) -> dict[str, Any]:
    job = _job_or_404(store, job_id)
    client = store.job_client(job["kind"])
    if client is None:
        raise not_found(f"job {job_id!r} is a {job['kind']} job, which cannot be cancelled here")
    try:
        return client.cancel(job_id)
    except ServiceError as error:
        raise from_service(error, job["kind"]) from None


@router.get("/jobs", response_model=list[Job], dependencies=[auth.read])
def list_jobs(store: Store, kind: Annotated[JobKind | None, Query()] = None) -> list[dict[str, Any]]:
    """Jobs, newest first."""
    return sorted(store.documents.list_jobs(kind), key=lambda j: j.get("created") or "", reverse=True)


@router.get("/jobs/{job_id}", response_model=Job, dependencies=[auth.read])
def get_job(store: Store, job_id: str) -> dict[str, Any]:
    return _job_or_404(store, job_id)


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


@router.get("/jobs/{job_id}/events", dependencies=[auth.read], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`progress` events, then one `end` (the final job) or `error`"},
                       404: {"model": Problem}})
def job_events(store: Store, job_id: str) -> StreamingResponse:
    """Progress of a job as server-sent events until it succeeds, fails or is cancelled."""
    job = _job_or_404(store, job_id)
    timeout = store.settings.watch_timeout_s
    if job["kind"] == "activations":
        watch = store.activation.watch_job(job_id, timeout=timeout)
    else:
        client = store.job_client(job["kind"])
        if client is None:
            raise not_found(f"job {job_id!r} is a {job['kind']} job, which no service here follows")
        watch = client.watch(job_id, timeout=timeout)

    def stream() -> Iterator[str]:
        count = 0
        try:
            for count, event in enumerate(watch, start=1):
                yield _sse("progress", event, count)
        except ServiceError as error:
            problem = from_service(error, job["kind"])
            yield _sse("error", {"status": problem.status, "title": problem.title, "detail": problem.detail})
            return
        final = store.documents.get_job(job_id) or job
        yield _sse("end", Job.model_validate(final).model_dump(mode="json"), count + 1)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
