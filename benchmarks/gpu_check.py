"""GPU check (run on a CUDA machine): sparse kernels are exact there, and how fast a TopK step is.

    python benchmarks/gpu_check.py --out gpu_results.json

1. Sparse encode/decode gradients equal the dense ones on CUDA (float64).
2. TopK training step tokens/s, sparse kernels vs a dense reference step, for the CPU
   benchmark's shape (576 -> 4608, k 32) and a GPU-sized one (2304 -> 32768, k 64).
3. The trainer end to end on CUDA over stored (synthetic) activation shards, with a checkpoint
   and an exact resume.
Needs only torch, safetensors, tqdm and pydantic (no model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from lm_saes.activations import ShardWriter, StoredActivations
from lm_saes.config import TrainConfig
from lm_saes.saes import TopKConfig, TrainStepInfo, build_sae, make_spec
from lm_saes.saes.sparse_ops import SparseCode, select_pre_acts, sparse_decode
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer


def check_gradients(device: str) -> float:
    g = torch.Generator().manual_seed(0)
    shapes = [(256, 48), (384, 48), (384,), (384, 48)]
    base = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    target = torch.randn(256, 48, dtype=torch.float64, device=device)
    grads = []
    for sparse in (False, True):
        x, w_enc, b_enc, w_dec = (t.to(device).requires_grad_() for t in base)
        with torch.no_grad():
            pre = x @ w_enc.T + b_enc
        vals, idx = pre.topk(12, dim=-1)
        if sparse:
            code = SparseCode.from_topk(vals, idx)
            out = sparse_decode(code._replace(values=select_pre_acts(pre, code, x, w_enc, b_enc).relu()), w_dec)
        else:
            pre = x @ w_enc.T + b_enc
            out = torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx).relu()) @ w_dec
        ((out - target) ** 2).sum().backward()
        grads.append([t.grad for t in (x, w_enc, b_enc, w_dec)])
    return max(float((a - b).abs().max()) for a, b in zip(*grads, strict=True))


def dense_topk_step(sae, optimizer, x):
    pre = F.linear(x * sae.input_scale - sae.b_dec, sae.W_enc, sae.b_enc)
    vals, idx = pre.topk(sae.spec.k, dim=-1, sorted=False)
    acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    loss = (acts @ sae.W_dec + sae.b_dec - x * sae.input_scale).pow(2).sum(-1).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sparse_topk_step(sae, optimizer, x, info):
    out = sae.training_forward(x, x, info)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    sae.remove_parallel_decoder_grad()
    optimizer.step()
    sae.normalize_decoder()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(d_in: int, d_sae: int, k: int, batch: int, device: str, steps: int = 20) -> dict[str, float]:
    spec = make_spec(TopKConfig(hook_in="h", hook_out="h", d_sae=d_sae, k=k), d_in=d_in, d_out=d_in)
    x = torch.randn(batch, d_in, device=device) * 5
    results = {}
    for name in ("sparse", "dense"):
        sae = build_sae(spec).to(device).train()
        optimizer = torch.optim.Adam(sae.parameters(), lr=3e-4)
        info = TrainStepInfo(0, torch.zeros(d_sae, dtype=torch.bool, device=device), 1.0)
        times = []
        for step in range(steps + 3):
            _sync(device)
            start = time.perf_counter()
            if name == "sparse":
                sparse_topk_step(sae, optimizer, x, info)
            else:
                dense_topk_step(sae, optimizer, x)
            _sync(device)
            if step >= 3:
                times.append(time.perf_counter() - start)
        results[f"{name}_tokens_per_s"] = batch / statistics.median(times)
    results["sparse_over_dense"] = results["sparse_tokens_per_s"] / results["dense_tokens_per_s"]
    return results


def train_end_to_end(device: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        g = torch.Generator().manual_seed(0)
        atoms = torch.randn(300, 128, generator=g)
        codes = torch.rand(60_000, 300, generator=g) * (torch.rand(60_000, 300, generator=g) < 0.03)
        writer = ShardWriter(LocalObjectStore(f"{tmp}/acts"), "synthetic", 128, shard_tokens=10_000)
        writer.add({"h": 20 * codes @ atoms})
        writer.close()
        source = StoredActivations(LocalObjectStore(f"{tmp}/acts"), ["h"], buffer_tokens=20_000)
        spec = make_spec(TopKConfig(hook_in="h", hook_out="h", d_sae=1024, k=16), d_in=128, d_out=128)
        cfg = TrainConfig(batch_size=1024, lr=1e-3, epochs=3, checkpoint_every=50, device=device)

        def trainer(out: str) -> Trainer:
            return Trainer(build_sae(spec).to(device), source, cfg, LocalObjectStore(f"{tmp}/{out}"), "h", "h", False)

        straight = trainer("a")
        summary = straight.run()
        trainer("b").run(stop_at_step=77)
        resumed = trainer("b")
        resumed.run()
        diff = max(float((resumed.sae.state_dict()[k] - v).abs().max()) for k, v in straight.sae.state_dict().items())
        return {
            "steps": summary.steps,
            "seconds": summary.seconds,
            "final_explained_variance": straight.metrics[-1]["explained_variance"],
            "resume_max_abs_diff": diff,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_results.json")
    args = parser.parse_args()
    device = "cuda"
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    checks = {
        "sparse_grad_max_abs_diff": lambda: check_gradients(device),
        "topk_576x4608_k32_b4096": lambda: time_steps(576, 4608, 32, 4096, device),
        "topk_2304x32768_k64_b4096": lambda: time_steps(2304, 32768, 64, 4096, device),
        "trainer": lambda: train_end_to_end(device),
    }
    for name, check in checks.items():
        results[name] = check()
        print(name, json.dumps(results[name]), flush=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
