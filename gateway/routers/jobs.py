"""Jobs: submitted to the services (scope `submit`, owned by the caller), read from the
document store, and followed as server-sent events.

An /events stream reads the job record from the document store itself (no service thread is
held for it) and stops as soon as the browser goes away; streams are capped in total and per
caller, past which the answer is 429.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from gateway import auth
from gateway.backends import Backends, backends
from gateway.errors import PROBLEMS, ApiProblem, from_service, not_found
from gateway.schemas import AnalysisJobRequest, AutointerpJobRequest, Job, JobKind, TrainingJobRequest
from lm_saes.auth import Principal
from lm_saes.jobs import progress_of
from lm_saes.records import JobRecord
from lm_saes.rpc.client import ServiceError

router = APIRouter(tags=["jobs"], responses=PROBLEMS)
Store = Annotated[Backends, Depends(backends)]
JobId = Annotated[str, Path(min_length=1, max_length=100)]


def _job_or_404(store: Backends, job_id: str) -> JobRecord:
    job = store.documents.get_job(job_id)
    if job is None:
        raise not_found(f"no job {job_id!r}")
    return job


def _mine(principal: Principal, job: JobRecord) -> bool:
    return principal.has("admin") or job.owner == principal.name


@router.post("/jobs/training", response_model=Job, status_code=201)
def submit_training(store: Store, body: TrainingJobRequest, user: auth.Submitter) -> dict[str, Any]:
    """Queue a training run; a repeated `request_id` returns the job it made first."""
    try:
        with store.as_user(user):
            return store.training.submit(body.config, request_id=body.request_id or "")
    except ServiceError as error:
        raise from_service(
            error,
            "training",
            field_prefix="config.",
            rename={"config": "config", "config_json": "config", "config_toml": "config"},
        ) from None


@router.post("/jobs/analysis", response_model=Job, status_code=201)
def submit_analysis(store: Store, body: AnalysisJobRequest, user: auth.Submitter) -> dict[str, Any]:
    try:
        with store.as_user(user):
            return store.analysis.submit(
                body.sae_uri, sae_id=body.sae_id or "", config=body.config, request_id=body.request_id or ""
            )
    except ServiceError as error:
        rename = {"sae_uri": "sae_uri", "config_json": "config", "sae_id": "sae_id", "output": "config.output"}
        raise from_service(error, "analysis", field_prefix="config.", rename=rename) from None


@router.post("/jobs/autointerp", response_model=Job, status_code=201)
def submit_autointerp(store: Store, body: AutointerpJobRequest, user: auth.Submitter) -> dict[str, Any]:
    """Queue explanations and scores for an analyzed SAE's features (a resumable analysis job)."""
    try:
        with store.as_user(user):
            return store.analysis.submit_autointerp(body.sae_id, config=body.config, request_id=body.request_id or "")
    except ServiceError as error:
        raise from_service(
            error, "analysis", field_prefix="config.", rename={"config_json": "config", "sae_id": "sae_id"}
        ) from None


@router.post("/jobs/{job_id}/cancel", response_model=Job)
def cancel_job(store: Store, job_id: JobId, user: auth.Submitter) -> dict[str, Any]:
    """Cancel one of your jobs (any job, with the `admin` scope)."""
    job = _job_or_404(store, job_id)
    if not _mine(user, job):
        raise ApiProblem(403, f"job {job_id!r} belongs to another user; only they or an admin may cancel it")
    try:
        with store.as_user(user):
            return store.job_client(job.kind).cancel(job_id)
    except ServiceError as error:
        raise from_service(error, job.kind) from None


@router.get("/jobs", response_model=list[Job])
def list_jobs(
    store: Store, user: auth.IdentifiedReader, kind: Annotated[JobKind | None, Query()] = None
) -> list[JobRecord]:
    """Your jobs (everyone's with the `admin` scope), newest first: needs a token even when
    reads are public, since the answer depends on who asks."""
    jobs = [j for j in store.documents.list_jobs(kind) if _mine(user, j)]
    return sorted(jobs, key=lambda j: j.created, reverse=True)


@router.get("/jobs/{job_id}", response_model=Job, dependencies=[auth.read])
def get_job(store: Store, job_id: JobId) -> JobRecord:
    return _job_or_404(store, job_id)


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


class StreamSlots:
    """Open /events streams, in total and per caller (token name, or client address)."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()

    def acquire(self, caller: str, total: int, per_caller: int) -> None:
        if sum(self.open.values()) >= total:
            raise ApiProblem(
                429, f"{total} event streams are open on this gateway; retry later", headers={"Retry-After": "5"}
            )
        if self.open[caller] >= per_caller:
            raise ApiProblem(
                429,
                f"{per_caller} event streams are already open for you; close one first",
                headers={"Retry-After": "5"},
            )
        self.open[caller] += 1

    def release(self, caller: str) -> None:
        self.open[caller] -= 1
        if self.open[caller] <= 0:
            del self.open[caller]


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`progress` events, then one `end` (the final job) or `error`",
        },
        429: PROBLEMS[429],
    },
)
async def job_events(request: Request, store: Store, job_id: JobId, user: auth.Reader) -> StreamingResponse:
    """Progress of a job as server-sent events until it succeeds, fails or is cancelled."""
    job = await run_in_threadpool(_job_or_404, store, job_id)
    settings = store.settings
    slots: StreamSlots = request.app.state.event_streams
    caller = user.name if user is not auth.ANONYMOUS else f"address:{request.client.host if request.client else '?'}"
    slots.acquire(caller, settings.max_streams, settings.max_streams_per_caller)

    async def stream() -> AsyncIterator[str]:
        count, last, current = 0, None, job
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.watch_timeout_s
        try:
            while True:
                if current.updated != last:
                    last = current.updated
                    count += 1
                    yield _sse("progress", progress_of(current), count)
                if current.finished:
                    yield _sse("end", Job.model_validate(current.doc()).model_dump(mode="json"), count + 1)
                    return
                if loop.time() > deadline or await request.is_disconnected():
                    return
                await asyncio.sleep(settings.watch_poll_s)
                try:
                    latest = await run_in_threadpool(store.documents.get_job, job_id)
                    current = latest or current
                except Exception as error:  # the store went away: say so and end the stream
                    yield _sse(
                        "error",
                        {
                            "status": 503,
                            "title": "Service unavailable",
                            "detail": f"document store: {type(error).__name__}",
                        },
                    )
                    return
        finally:
            slots.release(caller)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
