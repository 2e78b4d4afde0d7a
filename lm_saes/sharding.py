"""Work split into shards that independent processes run, each retried alone when it fails.

A sharded job (activation generation, analysis) cuts its text into `count` contiguous ranges
(`shard_range`), runs one worker per range (local processes here, or the pods of a Kubernetes
Indexed Job), then merges their results. The ledger (`ledger.json` in the job's part store)
records each shard's state, attempts and progress, so a rerun skips the shards that finished
and a failed shard is retried without redoing the others.

`python -m lm_saes.sharding --spec URI --shard I` runs shard I of the job whose `spec.json`
lies at URI (what `run_shards`' commands usually are).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from lm_saes.processes import die_with_parent
from lm_saes.stores import ObjectNotFound, ObjectStore, open_store

log = logging.getLogger(__name__)
MAX_SHARDS = 64
LEDGER_KEY = "ledger.json"
SPEC_KEY = "spec.json"
ATTEMPT_ENV = "LM_SAES_SHARD_ATTEMPT"  # set by run_shards for each child: 1, 2, ...
# Fault injection for tests only: "I[,J...]:N" makes shards I, J, ... fail their first N attempts.
FAULT_ENV = "LM_SAES_SHARD_FAULT"
ShardState = Literal["pending", "running", "succeeded", "failed"]


def shard_range(n_items: int, index: int, count: int) -> range:
    """Items of shard `index` of `count`: contiguous, together covering range(n_items) once,
    sizes differing by at most one (the first n_items % count shards take one more)."""
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"shards = {count}: choose 1 to {MAX_SHARDS}")
    if not 0 <= index < count:
        raise ValueError(f"shard {index} does not exist; the job has {count} (0 to {count - 1})")
    if n_items < 0:
        raise ValueError(f"cannot shard {n_items} items")
    base, extra = divmod(n_items, count)
    start = index * base + min(index, extra)
    return range(start, start + base + (1 if index < extra else 0))


def check_shards(value: int, field: str = "shards") -> int:
    """A shard count from outside (a request, a flag): an error naming `field` unless 1..64."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
        raise ValueError(f"{field} = {value!r}: choose 1 to {MAX_SHARDS}")
    return value


class ShardStatus(BaseModel):
    state: ShardState = "pending"
    attempts: int = 0
    progress: float = 0.0
    error: str = ""


class ShardLedger(BaseModel):
    """Every shard's status; written by the process that runs the shards, read by anyone."""

    shards: list[ShardStatus] = Field(default_factory=list)

    @classmethod
    def load(cls, store: ObjectStore, count: int) -> ShardLedger:
        """The stored ledger if it is for `count` shards, else a fresh one (all pending)."""
        try:
            ledger = cls.model_validate(store.get_json(LEDGER_KEY))
        except ObjectNotFound:
            ledger = cls()
        if len(ledger.shards) != count:
            ledger = cls(shards=[ShardStatus() for _ in range(count)])
        return ledger

    def save(self, store: ObjectStore) -> None:
        store.put_json(LEDGER_KEY, self.model_dump(mode="json"))

    @property
    def attempts(self) -> list[int]:
        return [s.attempts for s in self.shards]

    @property
    def progress(self) -> float:
        return sum(s.progress for s in self.shards) / max(len(self.shards), 1)

    def metrics(self) -> dict[str, float]:
        """Per-shard progress and attempts as a job record's metrics."""
        out: dict[str, float] = {
            "shards": float(len(self.shards)),
            "shards_succeeded": float(sum(s.state == "succeeded" for s in self.shards)),
        }
        for i, shard in enumerate(self.shards):
            out[f"shard.{i}.progress"] = shard.progress
            out[f"shard.{i}.attempts"] = float(shard.attempts)
        return out


class ShardsFailed(RuntimeError):
    """Some shard failed every attempt; the ledger says which, and the others' work is kept."""

    def __init__(self, ledger: ShardLedger):
        failed = [i for i, s in enumerate(ledger.shards) if s.state == "failed"]
        detail = "; ".join(
            f"shard {i} after {ledger.shards[i].attempts} attempts: {ledger.shards[i].error}" for i in failed
        )
        super().__init__(f"{len(failed)} of {len(ledger.shards)} shards failed: {detail}")
        self.ledger = ledger


def _progress_key(index: int) -> str:
    return f"progress/shard-{index:04d}.json"


def report_progress(store: ObjectStore, index: int, fraction: float) -> None:
    """Called inside a shard: its own progress file (the runner folds it into the ledger)."""
    store.put_json(_progress_key(index), {"progress": max(0.0, min(1.0, fraction))})


def _read_progress(store: ObjectStore, index: int) -> float | None:
    try:
        return float(store.get_json(_progress_key(index))["progress"])
    except (ObjectNotFound, ValueError, KeyError, TypeError):
        return None


def _done_key(index: int) -> str:
    return f"done/shard-{index:04d}.json"


def mark_done(store: ObjectStore, index: int) -> None:
    """Written by a shard that finished: whoever merges (a local runner, the merge step after a
    Kubernetes Indexed Job) knows its result is complete without having run it."""
    store.put_json(_done_key(index), {"attempt": int(os.environ.get(ATTEMPT_ENV, "1"))})


def inject_fault(index: int) -> None:
    """The test hook FAULT_ENV: fail this shard's first N attempts if it is named there."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    names, _, times = spec.partition(":")
    attempt = int(os.environ.get(ATTEMPT_ENV, "1"))
    if str(index) in names.split(",") and attempt <= int(times or 1):
        raise RuntimeError(f"injected fault: shard {index}, attempt {attempt} ({FAULT_ENV}={spec})")


def run_shards(
    store: ObjectStore,
    count: int,
    command: Callable[[int], list[str]],
    max_attempts: int = 3,
    parallel: int | None = None,
    on_update: Callable[[ShardLedger], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 0.5,
) -> ShardLedger:
    """Run every unfinished shard as a local process (`command(index)`), at most `parallel` at
    once; a shard that exits non-zero is restarted alone, up to `max_attempts` in all. Raises
    ShardsFailed if one never succeeds (after the others end), InterruptedError if
    `should_stop()` turns true (running shards are stopped and stay pending)."""
    ledger = ShardLedger.load(store, count)
    for i, status in enumerate(ledger.shards):
        if status.state != "succeeded" and store.exists(_done_key(i)):  # finished elsewhere (a pod)
            status.state, status.progress = "succeeded", 1.0
    pending = [i for i, s in enumerate(ledger.shards) if s.state != "succeeded"]
    for i in pending:  # unfinished work of an earlier run starts over with a fresh attempt budget
        ledger.shards[i] = ShardStatus()
    running: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
    logs = Path(tempfile.mkdtemp(prefix="lm-saes-shards-"))
    limit = parallel or count
    last: ShardLedger | None = None
    try:
        while pending or running:
            if should_stop is not None and should_stop():
                raise InterruptedError(f"stopped with {len(running) + len(pending)} shards unfinished")
            while pending and len(running) < limit:
                index = pending.pop(0)
                if store.exists(_progress_key(index)):
                    store.delete(_progress_key(index))  # a failed attempt's
                running[index] = _start(command(index), index, ledger.shards[index], logs)
            for index, (process, log_path) in list(running.items()):
                status = ledger.shards[index]
                fraction = _read_progress(store, index)
                if fraction is not None:
                    status.progress = fraction
                code = process.poll()
                if code is None:
                    continue
                del running[index]
                if code == 0:
                    status.state, status.progress, status.error = "succeeded", 1.0, ""
                    continue
                status.error = _tail(log_path)
                if status.attempts < max_attempts:
                    log.warning("shard %d failed (attempt %d), retrying: %s", index, status.attempts, status.error)
                    status.state = "pending"
                    pending.append(index)
                else:
                    status.state = "failed"
            if ledger != last:  # write (and report) changes only: the store may be S3
                ledger.save(store)
                last = ledger.model_copy(deep=True)
                if on_update is not None:
                    on_update(ledger)
            if pending or running:
                time.sleep(poll_s)
    finally:
        for index, (process, _) in running.items():
            process.terminate()
            process.wait()
            ledger.shards[index].state = "pending"
        if running:
            ledger.save(store)
        shutil.rmtree(logs, ignore_errors=True)
    if on_update is not None:
        on_update(ledger)  # the final state (also when every shard was done before)
    if any(s.state == "failed" for s in ledger.shards):
        raise ShardsFailed(ledger)
    return ledger


def _start(argv: list[str], index: int, status: ShardStatus, logs: Path) -> tuple[subprocess.Popen[bytes], Path]:
    status.attempts += 1
    status.state, status.progress = "running", 0.0
    log_path = logs / f"shard-{index:04d}-{status.attempts}.log"
    env = {**os.environ, ATTEMPT_ENV: str(status.attempts)}
    with log_path.open("wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
    return process, log_path


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])[-800:] or "exited without output"


def shard_command(spec_uri: str, index: int) -> list[str]:
    """The local process that runs shard `index` of the job whose spec is at `spec_uri`."""
    return [sys.executable, "-m", "lm_saes.sharding", "--spec", spec_uri, "--shard", str(index)]


def run_part(spec: dict[str, Any], index: int, store: ObjectStore) -> None:
    """Run shard `index` of a job spec (`kind`: analysis or activations) whose part store is
    `store`, and mark it done there."""
    inject_fault(index)
    if spec["kind"] == "analysis":
        from lm_saes.analysis.sharded import analyze_part

        analyze_part(spec, index)
    elif spec["kind"] == "activations":
        from lm_saes.activations.sharded import generate_part

        generate_part(spec, index)
    else:
        raise ValueError(f"unknown sharded job kind {spec['kind']!r}")
    mark_done(store, index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one shard of a sharded job")
    parser.add_argument("--spec", required=True, help="the part store holding spec.json")
    parser.add_argument("--shard", required=True, type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s shard {args.shard} %(levelname)s %(message)s")
    store = open_store(args.spec)
    run_part(store.get_json(SPEC_KEY), args.shard, store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
