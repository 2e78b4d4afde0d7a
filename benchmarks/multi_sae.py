"""multi_sae: 8 SAEs of the main shape (576 -> 4608, TopK k 32) trained from one activation stream
(lm_saes.training.sweep) vs 8 separate runs, over the same steps; rounds alternate and medians
are reported.

Two streams: the main run's stored activations (runs/smollm2-l6-topk/activations; what a sweep
shares is the read and shuffle) and activations made on the fly by SmolLM2 (what it shares is
the model's forward pass). Each separate run gets its own source, as a separate process would.
Weights equal to training alone are a unit test (tests/unit/test_sweep.py), not timed here.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lm_saes.activations import OnTheFlyActivations, StoredActivations
from lm_saes.activations.buffer import ActivationSource
from lm_saes.config import TrainConfig
from lm_saes.saes import TopKConfig, build_sae, make_spec
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer
from lm_saes.training.sweep import Sweep

HOOK = "blocks.6.hook_resid_post"
STORED = Path(__file__).resolve().parents[1] / "runs" / "smollm2-l6-topk" / "activations"


def _trainers(make_source, n: int, folder: str, shared: bool) -> list[Trainer]:
    source = make_source() if shared else None
    cfg = TrainConfig(batch_size=1024, lr=1e-3, lr_warmup_steps=2, log_every=1000)
    trainers = []
    for i in range(n):
        spec = make_spec(TopKConfig(hook_in=HOOK, hook_out=HOOK, d_sae=4608, k=32, seed=i), d_in=576, d_out=576)
        store = LocalObjectStore(f"{folder}/{i}")
        trainers.append(Trainer(build_sae(spec), source or make_source(), cfg, store, HOOK, HOOK, progress=False))
    return trainers


def _time(make_source, n: int, steps: int, sweep: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="lm-saes-multi-") as folder:
        started = time.perf_counter()
        trainers = _trainers(make_source, n, folder, shared=sweep)
        if sweep:
            Sweep(trainers, progress=False).run(stop_at_step=steps)
        else:
            for trainer in trainers:
                trainer.run(stop_at_step=steps)
        return time.perf_counter() - started


def bench_multi_sae(model, contexts, rounds: int = 3, n_saes: int = 8, steps: int = 4) -> dict[str, float]:
    """Seconds for `n_saes` SAEs x `steps` steps of 1024 tokens, as a sweep and as separate runs."""
    streams: dict[str, Callable[[], ActivationSource]] = {}
    if (STORED / "manifest.json").is_file():
        streams["stored"] = lambda: StoredActivations(LocalObjectStore(STORED), [HOOK], buffer_tokens=8192)
    streams["on_the_fly"] = lambda: OnTheFlyActivations(model, contexts, [HOOK], buffer_tokens=8192)
    out: dict[str, float] = {"saes": n_saes, "steps": steps, "batch_size": 1024, "rounds": rounds}
    for key, make_source in streams.items():
        swept, separate = [], []
        for _ in range(rounds):
            swept.append(_time(make_source, n_saes, steps, sweep=True))
            separate.append(_time(make_source, n_saes, steps, sweep=False))
        out[f"{key}_sweep_seconds"] = statistics.median(swept)
        out[f"{key}_separate_seconds"] = statistics.median(separate)
        out[f"{key}_ratio"] = out[f"{key}_sweep_seconds"] / out[f"{key}_separate_seconds"]
    # the key: over stored activations (the on-the-fly ratio beside it)
    out["ratio_to_separate"] = out.get("stored_ratio", out["on_the_fly_ratio"])
    return out
