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
        if job.state in states:
            return job
        executor.schedule()
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stuck in {job.state}")


@pytest.fixture
def executor(tmp_path):
    ex = LocalExecutor(str(tmp_path / "jobs.sqlite"))
    yield ex
    ex.shutdown(timeout=10)


def test_training_job_runs_and_duplicate_submit_returns_same_job(executor, tmp_path):
    job = executor.submit("training", _config(tmp_path), request_id="req-1")
    assert executor.submit("training", _config(tmp_path), request_id="req-1").id == job.id
    done = _wait(executor, job.id, ("succeeded", "failed"))
    assert done.state == "succeeded", done.error
    assert done.progress == 1.0 and done.metrics["step"] == done.metrics["total_steps"]
    assert done.result["eval"]["l0"] <= 8
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
    os.kill(first.processes[job.id].pid, signal.SIGKILL)
    first.processes[job.id].join()
    first.closed = True
    assert first.documents.get_job(job.id).state == "running"  # what a crash leaves behind
    second = LocalExecutor(documents)  # the restarted service
    try:
        assert second.resume_unfinished() == [job.id]
        done = _wait(second, job.id, ("succeeded", "failed"))
        assert done.state == "succeeded", done.error
        log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        steps = [int(line.split('"step": ')[1].split(",")[0]) for line in log]
        assert steps == sorted(set(steps))  # resumed, not restarted: no step logged twice
    finally:
        second.shutdown(timeout=10)


def test_cancel_stops_a_running_job(executor, tmp_path):
    job = executor.submit("training", _config(tmp_path, batch_size=32, log_every=1))
    _wait(executor, job.id, ("running",))
    cancelled = executor.cancel(job.id)
    assert cancelled.state == "cancelled"
    time.sleep(1)
    assert executor.documents.get_job(job.id).state == "cancelled"


class _RecordingExecutor(LocalExecutor):
    """Claims jobs like a service replica but records them instead of spawning workers."""

    class _Held:
        def is_alive(self) -> bool:
            return True

        def join(self, timeout=None) -> None:
            pass

    def _start(self, job):
        self.started.append(job.id)
        return self._Held()


def _replica(documents_uri: str, name: str, barrier, out: str) -> None:
    executor = _RecordingExecutor(documents_uri, max_workers=100, kinds=("training",), replica=name)
    executor.started = []
    barrier.wait()
    for _ in range(5):
        executor.schedule()
    with open(out, "w") as handle:
        handle.write("\n".join(executor.started))


def test_claims_are_compare_and_set_on_mongodb(mongodb_uri):
    """MongoDB claims with findOneAndUpdate on state, which a real server applies atomically per
    document. jongodb (the wire server the tests run) does not isolate concurrent
    findAndModify calls (measured: 10 double wins in 200 racing claims), so the race itself is
    tested on SQLite below; here, the compare-and-set semantics."""
    import uuid

    from lm_saes.jobs import new_job
    from lm_saes.stores.documents import open_document_store

    with open_document_store(f"{mongodb_uri}/claims_{uuid.uuid4().hex[:8]}") as documents:
        job = new_job("training", {})
        documents.put_job(job)
        first = documents.claim_job(job.id, {"state": "running", "claimed_by": "a"})
        assert first.claimed_by == "a" and first.state == "running"
        assert documents.claim_job(job.id, {"state": "running", "claimed_by": "b"}) is None
        assert documents.get_job(job.id).claimed_by == "a"
        assert documents.update_job_if(job.id, {"claimed_by": "b"}, {"state": "queued"}) is None
        assert documents.claim_job("training-missing", {"state": "running"}) is None


def test_two_replicas_claim_each_queued_job_exactly_once(tmp_path):
    import multiprocessing

    from lm_saes.jobs import new_job
    from lm_saes.stores.documents import open_document_store

    uri = str(tmp_path / "jobs.sqlite")
    with open_document_store(uri) as documents:
        ids = []
        for _ in range(20):
            job = new_job("training", {})
            documents.put_job(job)
            ids.append(job.id)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    procs = [
        context.Process(target=_replica, args=(uri, name, barrier, str(tmp_path / name)))
        for name in ("replica-a", "replica-b")
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    a, b = ((tmp_path / name).read_text().split() for name in ("replica-a", "replica-b"))
    assert sorted(a + b) == sorted(ids) and not set(a) & set(b)  # each job ran exactly once
    with open_document_store(uri) as documents:
        claims = {documents.get_job(i).claimed_by for i in ids}
        assert claims <= {"replica-a", "replica-b"}
    # a restarted replica requeues only the jobs it had claimed, not the other replica's running ones
    restarted = _RecordingExecutor(uri, max_workers=100, kinds=("training",), replica="replica-a")
    restarted.started = []
    assert sorted(restarted.resume_unfinished()) == sorted(a) and sorted(restarted.started) == sorted(a)
    # ... until the other replica's lease runs out: then its jobs go back to the queue for anyone
    with open_document_store(uri) as documents:
        for job_id in b:
            documents.update_job_if(job_id, {"claimed_by": "replica-b"}, {"lease_until": time.time() - 1})
    restarted.schedule()
    assert sorted(restarted.started) == sorted(ids)
    with open_document_store(uri) as documents:
        assert {documents.get_job(i).claimed_by for i in ids} == {"replica-a"}
