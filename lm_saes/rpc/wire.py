"""Conversions between core values and their protobuf messages (tensors, jobs).

Shared by the services and `lm_saes.rpc.client`, so both sides agree on the wire format: tensors
are row-major bytes in the host's order (little-endian everywhere we run) with a dtype name; jobs are document-store records.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import torch
from google.protobuf.timestamp_pb2 import Timestamp

from lm_saes.dtypes import DTYPE_NAMES, TORCH_DTYPES
from lm_saes.records import JOB_STATES as STATE_NAMES
from lm_saes.records import JobRecord
from lm_saes.rpc.v1 import common_pb2

# record state name <-> proto enum value, derived from the one Literal (a test checks both ways)
JOB_STATES = {name: common_pb2.JobState.Value(f"JOB_STATE_{name.upper()}") for name in STATE_NAMES}
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
    raw = (
        torch.frombuffer(bytearray(message.data), dtype=torch.uint8)
        if message.data
        else torch.empty(0, dtype=torch.uint8)
    )
    return raw.view(TORCH_DTYPES[message.dtype]).reshape(tuple(message.shape))


def _timestamp(value: str | None) -> Timestamp | None:
    if not value:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(value))
    return stamp


def job_to_proto(record: JobRecord) -> common_pb2.Job:
    """A job record -> `Job`."""
    return common_pb2.Job(
        id=record.id,
        kind=record.kind,
        state=JOB_STATES[record.state],
        progress=record.progress,
        metrics=record.metrics,
        error=record.error,
        created=_timestamp(record.created),
        updated=_timestamp(record.updated),
        request_id=record.request_id,
        config_json=json.dumps(record.config, sort_keys=True),
        result_json=json.dumps(record.result, sort_keys=True),
        owner=record.owner,
    )


def job_from_proto(job: common_pb2.Job) -> JobRecord:
    """`Job` -> the record again (the replica's claim stays server-side)."""
    return JobRecord(
        id=job.id,
        kind=job.kind,
        state=JOB_STATE_NAMES[job.state],
        progress=job.progress,
        metrics=dict(job.metrics),
        error=job.error,
        request_id=job.request_id,
        owner=job.owner,
        config=json.loads(job.config_json or "{}"),
        result=json.loads(job.result_json or "{}"),
        created=job.created.ToDatetime(UTC).isoformat(),
        updated=job.updated.ToDatetime(UTC).isoformat(),
    )


def job_to_dict(job: common_pb2.Job) -> dict[str, Any]:
    """`Job` -> its record as a JSON-able dict (what the Python clients return)."""
    return job_from_proto(job).model_dump(mode="json", exclude={"claimed_by", "lease_until"})
