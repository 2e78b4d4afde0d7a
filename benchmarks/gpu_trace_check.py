"""GPU check of circuit tracing (run on a CUDA machine), on the tiny random model.

    python benchmarks/gpu_trace_check.py --text CORPUS.jsonl --out gpu_trace_results.json

1. Transcoders for both layers trained on CUDA (examples/configuration/transcoders-tiny.toml).
2. On CUDA, what tests/unit/test_circuits.py checks on the CPU: the replacement model reproduces
   the logits, every target's edges + bias equal its value, graph-predicted effects of 1 %
   interventions correlate with reruns (reselecting, and keeping the active set).
3. The same graph built on the CPU: the largest difference between the two adjacency matrices,
   and attribution time on each device (medians of alternating rounds).
4. The same for a random model of SmolLM2's size (30 layers, d_model 576, transcoders 576 -> 2304,
   k 16, on all layers) and a 16-token prompt, the shape of `make bench`'s trace.seconds.
Needs transformer-lens (and what it imports) besides torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lm_saes.circuits import ReplacementModel, TranscoderSet, attribute  # noqa: E402
from lm_saes.circuits.checks import graph_checks  # noqa: E402
from lm_saes.config import RunConfig, TraceConfig, load_config  # noqa: E402
from lm_saes.models import load_language_model  # noqa: E402
from lm_saes.runner import run_train_transcoders  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPT = "The quick brown fox jumps over the lazy dog."
SMOLLM2_SHAPE = {
    "model.tiny_layers": 30,
    "model.tiny_d_model": 576,
    "model.tiny_vocab": 49152,
    "transcoders.layers": list(range(30)),
    "sae.d_sae": 2304,
    "sae.k": 16,
    "data.max_tokens": 8_000,
    "train.batch_size": 1024,
}
SHAPE_PROMPT = "Paris is lovely"  # 15 bytes + BOS: 16 positions, as trace.seconds' 16-token prompt


def timed_attribution(
    replacement: ReplacementModel, prompt: str = PROMPT, batch_size: int = 64
) -> tuple[float, torch.Tensor]:
    sync = torch.cuda.synchronize if replacement.model.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    graph = attribute(replacement, prompt, TraceConfig(batch_size=batch_size))
    sync()
    return time.perf_counter() - start, graph.adjacency


def compare_devices(overrides: dict, text: str, prompt: str, rounds: int) -> dict:
    """Train transcoders on CUDA, then build `prompt`'s graph on CUDA and on the CPU, alternating."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            REPO / "examples/configuration/transcoders-tiny.toml",
            RunConfig,
            {
                "output": tmp,
                "device": "cuda",
                "data.source": text,
                "data.max_tokens": 6000,
                "train.checkpoint_every": 0,
                **overrides,
            },
        )
        start = time.perf_counter()
        runs = run_train_transcoders(cfg, progress=False)
        result = {
            "train_seconds": time.perf_counter() - start,
            "explained_variance": {str(r.sae.spec.hook_in): r.metrics.explained_variance for r in runs[:3]},
        }
        devices = {
            device: ReplacementModel(
                load_language_model(cfg.model.model_copy(update={"device": device})), TranscoderSet.load(tmp, device)
            )
            for device in ("cuda", "cpu")
        }
        if prompt == PROMPT:
            result["cuda_checks"] = graph_checks(devices["cuda"], PROMPT)
        times: dict[str, list[float]] = {"cuda": [], "cpu": []}
        adjacency = {}
        timed_attribution(devices["cuda"], prompt)  # warm-up: kernels, allocator
        for _ in range(rounds):
            for device in ("cuda", "cpu"):
                seconds, adjacency[device] = timed_attribution(devices[device], prompt)
                times[device].append(seconds)
    result["nodes"] = adjacency["cpu"].shape[0]
    result["adjacency_cuda_vs_cpu_max_abs_diff"] = float((adjacency["cuda"] - adjacency["cpu"]).abs().max())
    result["adjacency_max_abs"] = float(adjacency["cpu"].abs().max())
    result["attribution_seconds"] = {d: statistics.median(t) for d, t in times.items()}
    result["cuda_speedup"] = result["attribution_seconds"]["cpu"] / result["attribution_seconds"]["cuda"]
    # targets per batched backward pass: 64 (the default) suits CPUs; a GPU wants more
    result["cuda_seconds_by_batch_size"] = {
        size: timed_attribution(devices["cuda"], prompt, size)[0] for size in (64, 256, 1024)
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", required=True, help="a .jsonl/.txt corpus for the transcoders")
    parser.add_argument("--out", default="gpu_trace_results.json")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "this check needs a CUDA device"

    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "tiny": compare_devices({}, args.text, PROMPT, args.rounds),
        "smollm2_shaped": compare_devices(SMOLLM2_SHAPE, args.text, SHAPE_PROMPT, args.rounds),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
