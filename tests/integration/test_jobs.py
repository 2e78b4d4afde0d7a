"""Jobs in worker processes: run to completion, idempotent submit, cancel, resume after a kill."""

import os
import signal
import time
import tomllib

import pytest

from lm_saes.jobs import LocalExecutor

with open("examples/configuration/train-tiny.toml", "rb") as _handle:
    TINY = tomllib.load(_handle)


def _config(tmp_path, **train):
    config = {**TINY, "output": str(tmp_path / "run"), "train": {**TINY["train"], **train}}
    config["data"] = {**TINY["data"], "max_tokens": 6000}
    return config


def _wait(executor, job_id, states, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = executor.documents.get_job(job_id)
        if job["state"] in states:
            return job
        executor.schedule()
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stuck in {job['state']}")


@pytest.fixture
def executor(tmp_path):
    ex = LocalExecutor(str(tmp_path / "jobs.sqlite"))
    yield ex
    ex.shutdown(timeout=10)


def test_training_job_runs_and_duplicate_submit_returns_same_job(executor, tmp_path):
    job = executor.submit("training", _config(tmp_path), request_id="req-1")
    assert executor.submit("training", _config(tmp_path), request_id="req-1")["id"] == job["id"]
    done = _wait(executor, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"] == 1.0 and done["metrics"]["step"] == done["metrics"]["total_steps"]
    assert done["result"]["eval"]["l0"] <= 8
    with pytest.raises(ValueError, match="unknown job kind"):
        executor.submit("painting", {})


def test_killed_worker_resumes_from_checkpoint(tmp_path):
    documents = str(tmp_path / "jobs.sqlite")
    first = LocalExecutor(documents)
    config = _config(tmp_path, checkpoint_every=3, batch_size=64, log_every=1)
    job = first.submit("training", config)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a checkpoint, then kill the worker hard
        if list((tmp_path / "run" / "checkpoints").glob("step-*/done")):
            break
        time.sleep(0.2)
    os.kill(first.processes[job["id"]].pid, signal.SIGKILL)
    first.processes[job["id"]].join()
    first.closed = True
    assert first.documents.get_job(job["id"])["state"] == "running"  # what a crash leaves behind
    second = LocalExecutor(documents)  # the restarted service
    try:
        assert second.resume_unfinished() == [job["id"]]
        done = _wait(second, job["id"], ("succeeded", "failed"))
        assert done["state"] == "succeeded", done["error"]
        log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        steps = [int(line.split('"step": ')[1].split(",")[0]) for line in log]
        assert steps == sorted(set(steps))  # resumed, not restarted: no step logged twice
    finally:
        second.shutdown(timeout=10)


def test_cancel_stops_a_running_job(executor, tmp_path):
    job = executor.submit("training", _config(tmp_path, batch_size=32, log_every=1))
    _wait(executor, job["id"], ("running",))
    cancelled = executor.cancel(job["id"])
    assert cancelled["state"] == "cancelled"
    time.sleep(1)
    assert executor.documents.get_job(job["id"])["state"] == "cancelled"
