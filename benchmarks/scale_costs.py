"""benchmarks/scale_costs.json: on paper, what two large configurations cost on one GPU.

Not measured end to end (this machine has no GPU): memory comes from the same estimate that
admits a run (`lm_saes.training.memory.estimate_run`, whose terms are printed), time from the
TopK training steps measured on an H200 (benchmarks/gpu_results.json) scaled by the encoder's
d_in x d_sae, the part of a step that grows with the dictionary. Two measured shapes bracket the
scaling: 576 x 4608 runs far from the GPU's compute bound (kernel launches dominate) and
2304 x 32768 close to it, so each time is given as a range between the two extrapolations.

    .venv/bin/python benchmarks/scale_costs.py          # prints the README table, writes the JSON
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lm_saes.config import RunConfig, parse_config
from lm_saes.training.memory import BYTES, estimate_run

HERE = Path(__file__).resolve().parent
D_MODEL, LAYERS, MODEL_PARAMS = 576, 30, 134_515_008  # SmolLM2-135M
TOKENS = 100_000_000  # training tokens per SAE (Llama Scope-style budgets are 10-100x this)
GIB = 2**30


def measured_rates() -> list[tuple[int, int, float]]:
    """(d_in, d_sae, tokens/s) of the TopK trainer step measured on an H200."""
    gpu = json.loads((HERE / "gpu_results.json").read_text())
    return [
        (576, 4608, gpu["topk_576x4608_k32_b4096"]["sparse_tokens_per_s"]),
        (2304, 32768, gpu["topk_2304x32768_k64_b4096"]["sparse_tokens_per_s"]),
    ]


def seconds_range(d_in: int, d_sae: int, tokens: float) -> tuple[float, float]:
    """Time for `tokens` through one SAE, from each measured shape scaled by d_in x d_sae."""
    times = [tokens / (rate * (d * f) / (d_in * d_sae)) for d, f, rate in measured_rates()]
    return min(times), max(times)


def terms(cfg: RunConfig, members: list[tuple[int, int]], model_bytes: int) -> dict[str, float]:
    """estimate_run's terms, GiB: dictionaries (fp32 weights, gradients, Adam x2), the step's
    [batch, d_sae] tensors, the model, the shuffle buffer."""
    dictionaries = sum((2 * D_MODEL * f + f + D_MODEL) * 16 for f, _ in members)
    step = max(b * f * 12 for f, b in members)
    buffer = cfg.activations.buffer_tokens * D_MODEL * BYTES[cfg.activations.dtype] * len(cfg.activations.hooks)
    total = estimate_run(cfg, D_MODEL, model_bytes).memory_bytes
    assert total == model_bytes + dictionaries + step + buffer, "keep in step with estimate_run"
    return {
        "dictionaries_gib": dictionaries / GIB,
        "step_gib": step / GIB,
        "model_gib": model_bytes / GIB,
        "buffer_gib": buffer / GIB,
        "total_gib": total / GIB,
    }


def sweep_30_layers() -> dict[str, Any]:
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(LAYERS)]
    raw = {
        "activations": {"hooks": hooks, "store": False, "dtype": "bfloat16"},
        "sae": {"d_sae": 32768, "k": 32},
        "train": {"batch_size": 4096},
        "sweep": [{"name": f"layer-{i}", "sae": {"hook_in": h, "hook_out": h}} for i, h in enumerate(hooks)],
    }
    cfg = parse_config(raw, RunConfig)
    low, high = seconds_range(D_MODEL, 32768, TOKENS)
    model_forward_flop = 2 * MODEL_PARAMS * TOKENS  # one shared pass feeds all 30 SAEs
    return {
        "what": "30 TopK SAEs (one per layer's residual stream), 576 -> 32,768, k 32, batch 4,096, one stream",
        "memory": terms(cfg, [(32768, 4096)] * LAYERS, MODEL_PARAMS * 2),
        "sae_seconds": [LAYERS * low, LAYERS * high],
        "model_forward_flop": model_forward_flop,
        "stored_activation_bytes": TOKENS * D_MODEL * 2 * LAYERS,  # bf16, if stored instead of on the fly
    }


def million_features(shards: int) -> dict[str, Any]:
    d_sae = 2**20
    raw = {"sae": {"d_sae": d_sae, "k": 32}, "train": {"batch_size": 4096, "feature_shards": shards}}
    cfg = parse_config(raw, RunConfig)
    low, high = seconds_range(D_MODEL, d_sae // shards, TOKENS)
    return {
        "what": f"one TopK SAE 576 -> 1,048,576, k 32, batch 4,096, {shards} feature shard(s) (per rank)",
        "memory": terms(cfg, [(d_sae // shards, 4096)], MODEL_PARAMS * 2),
        "sae_seconds": [low, high],  # per rank; ranks run in parallel, plus the top-k merge
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| configuration (per GPU) | dictionaries | step tensors | model + buffer | total | SAE time, 100M tokens |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["configurations"]:
        m, (low, high) = row["memory"], row["sae_seconds"]
        lines.append(
            f"| {row['what']} | {m['dictionaries_gib']:.1f} GiB | {m['step_gib']:.1f} GiB | "
            f"{m['model_gib'] + m['buffer_gib']:.1f} GiB | **{m['total_gib']:.1f} GiB** | "
            f"{low / 3600:.1f}–{high / 3600:.1f} h |"
        )
    return "\n".join(lines)


def main() -> None:
    results = {
        "tokens_per_sae": TOKENS,
        "rates_measured_on": "NVIDIA H200 (benchmarks/gpu_results.json)",
        "configurations": [sweep_30_layers(), million_features(1), million_features(8)],
    }
    (HERE / "scale_costs.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
