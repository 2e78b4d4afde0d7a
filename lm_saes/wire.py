"""Conversions between core values and their protobuf messages (tensors, jobs).

Shared by the services and `lm_saes.client`, so both sides agree on the wire format: tensors
are row-major bytes in the host's order (little-endian everywhere we run) with a dtype name; jobs are document-store records.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import torch
from google.protobuf.timestamp_pb2 import Timestamp

from lm_saes.proto.lm_saes.v1 import common_pb2

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
    "float16": torch.float16, "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
JOB_STATES = {"queued": common_pb2.JOB_STATE_QUEUED, "running": common_pb2.JOB_STATE_RUNNING,
              "succeeded": common_pb2.JOB_STATE_SUCCEEDED, "failed": common_pb2.JOB_STATE_FAILED,
              "cancelled": common_pb2.JOB_STATE_CANCELLED}
JOB_STATE_NAMES = {v: k for k, v in JOB_STATES.items()}


def tensor_to_proto(tensor: torch.Tensor) -> common_pb2.Tensor:
    """Any-dtype tensor -> inline `Tensor` (bytes copied off the device)."""
    if tensor.dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype {tensor.dtype} has no wire name; use one of {sorted(TORCH_DTYPES)}")
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return common_pb2.Tensor(dtype=DTYPE_NAMES[tensor.dtype], shape=list(tensor.shape), data=data)


def tensor_from_proto(message: common_pb2.Tensor) -> torch.Tensor:
    """Inline `Tensor` -> a CPU tensor of its dtype and shape."""
    if message.dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown tensor dtype {message.dtype!r}; expected one of {sorted(TORCH_DTYPES)}")
    raw = torch.frombuffer(bytearray(message.data), dtype=torch.uint8) if message.data else torch.empty(0, dtype=torch.uint8)
    return raw.view(TORCH_DTYPES[message.dtype]).reshape(tuple(message.shape))


def _timestamp(value: str | None) -> Timestamp | None:
    if not value:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(value))
    return stamp


def job_to_proto(record: dict[str, Any]) -> common_pb2.Job:
    """A job record (see `lm_saes.jobs.records.new_job`) -> `Job`."""
    return common_pb2.Job(
        id=record["id"], kind=record.get("kind", ""), state=JOB_STATES[record["state"]],
        progress=float(record.get("progress") or 0.0),
        metrics={k: float(v) for k, v in (record.get("metrics") or {}).items()},
        error=record.get("error") or "", created=_timestamp(record.get("created")),
        updated=_timestamp(record.get("updated")), request_id=record.get("request_id") or "",
        config_json=json.dumps(record.get("config") or {}, sort_keys=True),
        result_json=json.dumps(record.get("result") or {}, sort_keys=True), owner=record.get("owner") or "",
    )


def job_to_dict(job: common_pb2.Job) -> dict[str, Any]:
    """`Job` -> the record shape again (state as a lowercase name, JSON decoded)."""
    return {
        "id": job.id, "kind": job.kind, "state": JOB_STATE_NAMES.get(job.state, "unspecified"),
        "progress": job.progress, "metrics": dict(job.metrics), "error": job.error,
        "request_id": job.request_id, "owner": job.owner, "config": json.loads(job.config_json or "{}"),
        "result": json.loads(job.result_json or "{}"),
        "created": job.created.ToDatetime(UTC).isoformat() if job.HasField("created") else None,
        "updated": job.updated.ToDatetime(UTC).isoformat() if job.HasField("updated") else None,
    }
