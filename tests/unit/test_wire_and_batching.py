"""Tensor and job wire conversions, and the request batcher of the activation service."""

import threading
import time

import pytest
import torch

from lm_saes.jobs import new_job
from lm_saes.records import JOB_KINDS, JOB_STATES, TERMINAL
from lm_saes.rpc.v1 import common_pb2
from lm_saes.rpc.wire import (
    job_from_proto,
    job_to_dict,
    job_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)
from services.activation.batching import BatcherClosed, FeatureBatcher


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 5),
        torch.randn(4, 2).bfloat16(),
        torch.randn(2, 3).half(),
        torch.arange(12).reshape(2, 2, 3),
        torch.empty(0, 7),
    ],
)
def test_tensors_round_trip_exactly(tensor):
    back = tensor_from_proto(tensor_to_proto(tensor))
    assert back.dtype == tensor.dtype and back.shape == tensor.shape and torch.equal(back, tensor)


def test_jobs_round_trip():
    record = new_job("training", {"output": "runs/x"}, request_id="r1", owner="alice").model_copy(
        update={"state": "succeeded", "progress": 1.0, "metrics": {"loss": 0.5}, "result": {"sae": "runs/x/sae"}}
    )
    assert job_from_proto(job_to_proto(record)) == record
    assert job_to_dict(job_to_proto(record)) == record.model_dump(mode="json", exclude={"claimed_by", "lease_until"})


def test_record_literals_match_the_proto_enum():
    """The job states are declared once (lm_saes.records.JobState); the proto enum agrees."""
    enum = {name.removeprefix("JOB_STATE_").lower() for name in common_pb2.JobState.DESCRIPTOR.values_by_name} - {
        "unspecified"
    }
    assert set(JOB_STATES) == enum
    assert set(TERMINAL) < set(JOB_STATES)
    assert sorted(JOB_KINDS) == ["activations", "analysis", "tracing", "training"]
    from lm_saes.jobs.kinds import JOB_KINDS as RUNNERS

    assert set(RUNNERS) == set(JOB_KINDS)  # every kind has a runner and every runner a kind


def test_batcher_groups_concurrent_requests_and_splits_results():
    seen: list[int] = []

    def run(batch):
        seen.append(len(batch))
        return [torch.tensor(ids[1:], dtype=torch.float32) for ids in batch]

    batcher = FeatureBatcher(run, window_s=0.2, max_batch=4, name="test")
    results: dict[int, torch.Tensor] = {}

    def ask(n: int) -> None:
        results[n] = batcher.submit([0, *range(n)])

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[n].tolist() == list(range(n)) for n in range(1, 7))
    assert sum(seen) == 6 and max(seen) <= 4 and len(seen) < 6
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit([0, 1])


def test_batcher_reports_failures_to_every_caller_and_keeps_going():
    def run(batch):
        if any(len(ids) == 2 for ids in batch):
            raise ValueError("boom")
        return [torch.zeros(len(ids) - 1) for ids in batch]

    batcher = FeatureBatcher(run, window_s=0.0, max_batch=8, name="fail")
    with pytest.raises(ValueError, match="boom"):
        batcher.submit([0, 1])
    time.sleep(0.01)
    assert batcher.submit([0, 1, 2]).shape == (2,)
    batcher.close()
