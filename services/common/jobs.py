"""The job RPCs every job-running service shares: Get, List, Watch, Cancel over the job records.

Servicers only read job records (workers write them), so Watch polls the record and streams a
ProgressEvent whenever it changes, ending with the terminal state.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from lm_saes.jobs import TERMINAL, LocalExecutor
from lm_saes.proto.lm_saes.v1 import common_pb2
from lm_saes.wire import JOB_STATES, job_to_proto
from services.common.errors import rpc

DEFAULT_PAGE = 50


def progress_event(job: dict[str, Any]) -> common_pb2.ProgressEvent:
    metrics = job.get("metrics") or {}
    return common_pb2.ProgressEvent(
        job_id=job["id"], state=JOB_STATES[job["state"]], step=int(metrics.get("step", 0)),
        total_steps=int(metrics.get("total_steps", 0)), tokens=int(metrics.get("tokens", 0)),
        loss=float(metrics.get("loss", 0.0)), l0=float(metrics.get("l0", 0.0)),
        explained_variance=float(metrics.get("explained_variance", 0.0)), message=job.get("error", ""),
        time=job_to_proto(job).updated, progress=float(job.get("progress", 0.0)),
        metrics={k: float(v) for k, v in metrics.items()},
    )


class JobRPCs:
    """Mixin for a servicer whose jobs are of one `kind`, run by `self.executor`."""

    kind: str
    executor: LocalExecutor
    watch_poll_s: float = 0.3

    def _job(self, job_id: str, context: grpc.ServicerContext) -> dict[str, Any]:
        job = self.executor.documents.get_job(job_id) if job_id else None
        if job is None or job["kind"] != self.kind:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no {self.kind} job with id {job_id!r}")
        return job

    @rpc
    def Get(self, request, context):
        return job_to_proto(self._job(request.id, context))

    @rpc
    def List(self, request, context):
        if request.page_size < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must be >= 0")
        try:
            offset = int(request.page_token or 0)
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_token {request.page_token!r} is not one we issued")
        jobs = [j for j in self.executor.documents.list_jobs(self.kind)
                if request.state == common_pb2.JOB_STATE_UNSPECIFIED or JOB_STATES[j["state"]] == request.state]
        jobs.sort(key=lambda j: j["created"], reverse=True)
        size = min(request.page_size or DEFAULT_PAGE, 1000)
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
        self._job(request.id, context)
        return job_to_proto(self.executor.cancel(request.id))

    # services whose main RPCs are not about jobs expose these under job-specific names
    GetJob = Get
    WatchJob = Watch
