"""The job RPCs every job-running service shares: Get, List, Watch, Cancel over the job records.

Servicers only read job records (workers write them), so Watch polls the record and streams a
ProgressEvent whenever it changes, ending with the terminal state.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from lm_saes.jobs import TERMINAL, LocalExecutor, progress_of
from lm_saes.proto.lm_saes.v1 import common_pb2
from lm_saes.wire import JOB_STATES, job_to_proto
from services.common.auth import caller, may_see
from services.common.errors import invalid, rpc, short

DEFAULT_PAGE = 50
MAX_PAGE = 1000
MAX_OFFSET = 10**6


def progress_event(job: dict[str, Any]) -> common_pb2.ProgressEvent:
    event = progress_of(job)
    return common_pb2.ProgressEvent(**{**event, "state": JOB_STATES[event["state"]], "time": job_to_proto(job).updated})


class JobRPCs:
    """Mixin for a servicer whose jobs are of one `kind`, run by `self.executor`."""

    kind: str
    executor: LocalExecutor
    watch_poll_s: float = 0.3

    def _job(self, job_id: str, context: grpc.ServicerContext) -> dict[str, Any]:
        job = self.executor.documents.get_job(job_id) if job_id and len(job_id) <= 100 else None
        if job is None or job["kind"] != self.kind:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no {self.kind} job with id {short(job_id)}")
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
        token = request.page_token or "0"
        if not (token.isdigit() and int(token) <= MAX_OFFSET):
            raise invalid("page_token", f"{short(request.page_token)} is not one we issued")
        offset = int(token)
        principal = caller()
        jobs = [j for j in self.executor.documents.list_jobs(self.kind)
                if (request.state == common_pb2.JOB_STATE_UNSPECIFIED or JOB_STATES[j["state"]] == request.state)
                and may_see(principal, j.get("owner"))]
        jobs.sort(key=lambda j: j["created"], reverse=True)
        size = request.page_size or DEFAULT_PAGE
        page = jobs[offset : offset + size]
        more = offset + size < len(jobs)
        return common_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in page],
                                           next_page_token=str(offset + size) if more else "")

    @rpc
    def Watch(self, request, context):
        job = self._job(request.id, context)
        last = None
        while context.is_active():
            if job["updated"] != last:
                last = job["updated"]
                yield progress_event(job)
            if job["state"] in TERMINAL:
                return
            time.sleep(self.watch_poll_s)
            job = self._job(request.id, context)

    @rpc
    def Cancel(self, request, context):
        job = self._job(request.id, context)
        principal = caller()
        if not may_see(principal, job.get("owner")):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"job {short(request.id)} belongs to another caller; only it or an admin may cancel it")
        return job_to_proto(self.executor.cancel(request.id))

    def _submit(self, config: dict[str, Any], request_id: str) -> common_pb2.Job:
        """Queue a job owned by the caller (its request id is its own idempotency key)."""
        if len(request_id) > 200:
            raise invalid("request_id", "at most 200 characters")
        return job_to_proto(self.executor.submit(self.kind, config, request_id or None, owner=caller().name))

    # services whose main RPCs are not about jobs expose these under job-specific names
    GetJob = Get
    WatchJob = Watch
