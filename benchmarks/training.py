"""The training row of `make bench`: like against like, beside this machine's limit.

- whole step: our `Trainer.train_step` (LR schedule, dead-latent tracking, aux-k over a dead set
  of ~5 % of the latents, Adam, decoder renormalization) vs SAELens's `SAETrainer.step` (its
  scheduler, dead-latent statistics, aux-k over the latents that did not fire in the previous
  step, gradient clipping, Adam), in its own venv;
- bare step: our forward + backward + Adam + renormalization vs SAELens's
  `training_forward_pass` + backward + Adam (no dead set on either side);
- the limit: dense fp32 GFLOP/s of this machine (a matmul of the encoder's shape), and our
  whole step's tokens/s as a fraction of the encoder-matmul bound, 2 * d_in * d_sae flops a
  token (a whole step does several times that work, so the fraction is well under 1).

Shape: 576 -> 4608, k 32, batch 4096, fp32, SmolLM2 layer-6 activations. Rounds alternate ours
and theirs; medians are reported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch

from lm_saes.activations import ShardWriter, StoredActivations
from lm_saes.config import TrainConfig
from lm_saes.saes import TopKConfig, TrainStepInfo, build_sae, make_spec
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer

HERE = Path(__file__).resolve().parent
SAELENS_PY = HERE.parent / ".venv-saelens" / "bin" / "python"
D_IN, D_SAE, K, BATCH = 576, 4608, 32, 4096
DEAD_FRACTION = 0.05


def _sae(x: torch.Tensor):
    sae = build_sae(make_spec(TopKConfig(hook_in="h", hook_out="h", d_sae=D_SAE, k=K), d_in=D_IN, d_out=D_IN)).train()
    scale = D_IN**0.5 / float(x.norm(dim=1).mean())
    sae.set_scales(scale, scale)
    sae.initialize_from_data(x[:BATCH], x[:BATCH])
    return sae


def _batches(x: torch.Tensor, n: int):
    for step in range(n):
        yield x[(step * BATCH) % len(x) :][:BATCH]


def gflops(rounds: int = 5) -> float:
    """Dense fp32 matmul throughput at the encoder's shape ([batch, d_in] @ [d_in, d_sae])."""
    a, b = torch.randn(BATCH, D_IN), torch.randn(D_IN, D_SAE)
    a @ b  # warm up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * BATCH * D_IN * D_SAE / statistics.median(times) / 1e9


def our_trainer_steps(x: torch.Tensor, steps: int, warmup: int, root: Path) -> list[float]:
    """`Trainer.train_step` on a trainer over these activations, with ~5 % of latents dead."""
    store = LocalObjectStore(root / "acts")
    writer = ShardWriter(store, "bench", D_IN, shard_tokens=BATCH)
    writer.add({"h": x})
    writer.close()
    source = StoredActivations(store, ["h"], seed=0, buffer_tokens=BATCH)
    cfg = TrainConfig(batch_size=BATCH, lr=3e-4, lr_warmup_steps=10, epochs=100)
    trainer = Trainer(_sae(x), source, cfg, LocalObjectStore(root / "run"), "h", "h", progress=False)
    times = []
    for step, rows in enumerate(_batches(x, warmup + steps)):
        dead = int(DEAD_FRACTION * D_SAE)  # latents silent for long: the aux-k loss works on them
        trainer.silent_tokens[-dead:] = cfg.dead_after_tokens
        start = time.perf_counter()
        trainer.train_step(rows, rows)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def our_bare_steps(x: torch.Tensor, steps: int, warmup: int) -> list[float]:
    sae = _sae(x)
    optimizer = torch.optim.Adam(sae.parameters(), lr=3e-4)
    no_dead = torch.zeros(D_SAE, dtype=torch.bool)
    times = []
    for step, rows in enumerate(_batches(x, warmup + steps)):
        start = time.perf_counter()
        out = sae.training_forward(rows, rows, TrainStepInfo(step, no_dead, 1.0))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        optimizer.step()
        sae.normalize_decoder()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def saelens_steps(inputs: Path, steps: int, warmup: int, bare: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        command = [
            str(SAELENS_PY),
            str(HERE / "saelens_topk_step.py"),
            "--inputs",
            str(inputs),
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--out",
            str(out),
            "--dead-fraction",
            str(DEAD_FRACTION),
        ]
        subprocess.run([*command, *(["--bare"] if bare else [])], check=True, capture_output=True, text=True)
        return json.loads(out.read_text())


def bench_train(x: torch.Tensor, rounds: int, steps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"trainer": [], "bare": [], "saelens_trainer": [], "saelens_bare": []}
    aux_steps = 0
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "x.safetensors"
        safetensors.torch.save_file({"x": x.contiguous()}, inputs)
        for number in range(rounds):
            times["trainer"] += our_trainer_steps(x, steps, 2, Path(tmp) / f"ours-{number}")
            if SAELENS_PY.exists():
                theirs = saelens_steps(inputs, steps, 2, bare=False)
                times["saelens_trainer"] += theirs["step_seconds"]
                aux_steps += theirs["timed_steps_with_nonzero_aux_loss"]
            times["bare"] += our_bare_steps(x, steps, 2)
            if SAELENS_PY.exists():
                times["saelens_bare"] += saelens_steps(inputs, steps, 2, bare=True)["step_seconds"]
    speed = {name: BATCH / statistics.median(t) for name, t in times.items() if t}
    machine_gflops = gflops()
    bound = machine_gflops * 1e9 / (2 * D_IN * D_SAE)
    result = {
        "tokens_per_s": speed["trainer"],
        "bare_tokens_per_s": speed["bare"],
        "encoder_bound_tokens_per_s": bound,
        "limit_fraction": speed["trainer"] / bound,
        "gflops": machine_gflops,
        "rounds": rounds,
        "steps_per_round": steps,
        "dead_fraction": DEAD_FRACTION,
    }
    if "saelens_trainer" in speed:
        result.update(
            saelens_tokens_per_s=speed["saelens_trainer"],
            saelens_bare_tokens_per_s=speed["saelens_bare"],
            trainer_speedup=speed["trainer"] / speed["saelens_trainer"],
            bare_speedup=speed["bare"] / speed["saelens_bare"],
            saelens_steps_with_aux_loss=aux_steps,
        )
    return result
