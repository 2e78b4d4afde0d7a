"""The JobService (common.proto) every job-running server exposes: Get, List, Watch, Cancel.

One implementation for the four services: each server runs one kind of job, so a JobServicer
is bound to that kind and its executor. Servicers only read job records (workers write them),
so Watch polls the record and streams a ProgressEvent whenever it changes, ending with the
terminal state. `submit_job` is the one way a service's own Submit RPC queues a job.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from lm_saes.config import ConfigError
from lm_saes.jobs import Executor, progress_of
from lm_saes.records import JobRecord
from lm_saes.rpc.v1 import common_pb2, common_pb2_grpc
from lm_saes.rpc.wire import JOB_STATES, job_to_proto
from services.common.auth import caller, may_see
from services.common.errors import RequestError, invalid, rpc, short

SERVICE_NAME = common_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
DEFAULT_PAGE = 50
MAX_PAGE = 1000
MAX_OFFSET = 10**6
MAX_REQUEST_ID = 200


def progress_event(job: JobRecord) -> common_pb2.ProgressEvent:
    event = progress_of(job)
    return common_pb2.ProgressEvent(**{**event, "state": JOB_STATES[event["state"]], "time": job_to_proto(job).updated})


def submit_job(executor: Executor, kind: str, config: dict[str, Any], request_id: str) -> common_pb2.Job:
    """Queue a job owned by the caller (its request id is its own idempotency key)."""
    if len(request_id) > MAX_REQUEST_ID:
        raise invalid("request_id", f"at most {MAX_REQUEST_ID} characters")
    try:
        job = executor.submit(kind, config, request_id or None, owner=caller().name)
    except ConfigError as error:  # the executor's own checks (e.g. feature shards against its ranks)
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
    return job_to_proto(job)


def page_offset(page_token: str) -> int:
    """The offset a page token we issued stands for (tokens are plain offsets)."""
    token = page_token or "0"
    if not (token.isdigit() and int(token) <= MAX_OFFSET):
        raise invalid("page_token", f"{short(page_token)} is not one we issued")
    return int(token)


class JobServicer(common_pb2_grpc.JobServiceServicer):
    """The jobs of one `kind`, run by `executor`."""

    def __init__(self, kind: str, executor: Executor, watch_poll_s: float = 0.3):
        self.kind, self.executor, self.watch_poll_s = kind, executor, watch_poll_s

    def register(self, server: grpc.Server) -> str:
        common_pb2_grpc.add_JobServiceServicer_to_server(self, server)
        return SERVICE_NAME

    def _job(self, job_id: str, context: grpc.ServicerContext) -> JobRecord:
        job = self.executor.documents.get_job(job_id) if job_id and len(job_id) <= 100 else None
        if job is None or job.kind != self.kind:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no {self.kind} job with id {short(job_id)}")
        return job

    @rpc
    def Get(self, request, context):
        return job_to_proto(self._job(request.id, context))

    @rpc
    def List(self, request, context):
        """The caller's jobs (everyone's for an admin), newest first."""
        if not 0 <= request.page_size <= MAX_PAGE:
            raise invalid("page_size", f"must be in [0, {MAX_PAGE}] (0: {DEFAULT_PAGE})")
        if request.state not in JOB_STATES.values() and request.state != common_pb2.JOB_STATE_UNSPECIFIED:
            raise invalid("state", f"unknown job state {request.state}")
        if request.kind and request.kind != self.kind:
            raise invalid(
                "kind",
                f"this server runs {self.kind} jobs only; leave kind empty or ask the "
                f"server that runs {short(request.kind)} jobs",
            )
        offset = page_offset(request.page_token)
        principal = caller()
        jobs = [
            j
            for j in self.executor.documents.list_jobs(self.kind)
            if (request.state == common_pb2.JOB_STATE_UNSPECIFIED or JOB_STATES[j.state] == request.state)
            and may_see(principal, j.owner)
        ]
        jobs.sort(key=lambda j: j.created, reverse=True)
        size = request.page_size or DEFAULT_PAGE
        page = jobs[offset : offset + size]
        more = offset + size < len(jobs)
        return common_pb2.ListJobsResponse(
            jobs=[job_to_proto(j) for j in page], next_page_token=str(offset + size) if more else ""
        )

    @rpc
    def Watch(self, request, context):
        job = self._job(request.id, context)
        last = None
        while context.is_active():
            if job.updated != last:
                last = job.updated
                yield progress_event(job)
            if job.finished:
                return
            time.sleep(self.watch_poll_s)
            job = self._job(request.id, context)

    @rpc
    def Cancel(self, request, context):
        job = self._job(request.id, context)
        if not may_see(caller(), job.owner):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"job {short(request.id)} belongs to another caller; only it or an admin may cancel it",
            )
        cancelled = self.executor.cancel(request.id)
        if cancelled is None:  # deleted since _job read it
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no {self.kind} job with id {short(request.id)}")
        return job_to_proto(cancelled)
