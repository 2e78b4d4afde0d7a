"""Better dictionaries at equal budget: candidates against SAELens's TopK trainer (issue 18).

Every SAE here is trained on the main run's stored activations (SmolLM2 layer 6, 600k tokens,
width 4,608, k 32) and evaluated on the same held-out text with the same code:

- `saelens`: SAELens's own `SAETrainer` (in `.venv-saelens`, `benchmarks/saelens_train.py`) fed
  exactly our batches — the same rows in the same shuffled order, scaled as our trainer scales
  them — with our recipe (batch 1,024, lr 1e-3, 50 warmup steps, linear decay over the last 20 %,
  2 epochs, Adam (0.9, 0.999), dead after 200k tokens for aux-k);
- `main`: `make run`'s SAE (our TopK trainer, the same recipe);
- candidates from one sweep over the same stream (`seed1` is the main config with another SAE
  seed: the noise floor a difference has to clear), and 4-epoch runs over the same tokens.

    .venv/bin/python benchmarks/quality.py prepare   # the batch stream SAELens reads (and --epochs 4)
    .venv-saelens/bin/python benchmarks/saelens_train.py --stream runs/quality/stream --out runs/quality/saelens
    .venv-saelens/bin/python benchmarks/saelens_train.py --stream runs/quality/stream-epochs-4 \\
        --out runs/quality/saelens-epochs-4
    .venv/bin/python benchmarks/quality.py train     # the candidates (two sweeps)
    .venv/bin/python benchmarks/quality.py eval      # -> benchmarks/quality.json and the table
    .venv/bin/python benchmarks/quality.py --table   # the README's table from quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from lm_saes.activations.buffer import ActivationSource, StoredActivations  # noqa: E402
from lm_saes.config import RunConfig, load_config  # noqa: E402
from lm_saes.data.packing import load_token_splits  # noqa: E402
from lm_saes.evaluation import evaluate  # noqa: E402
from lm_saes.interop.saelens import import_saelens  # noqa: E402
from lm_saes.models import load_language_model  # noqa: E402
from lm_saes.runner import run_train_sweep  # noqa: E402
from lm_saes.saes import load_sae  # noqa: E402
from lm_saes.stores import open_store  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "examples" / "configuration" / "train.toml"
MAIN = ROOT / "runs" / "smollm2-l6-topk"
OUT = ROOT / "runs" / "quality"
STREAM = OUT / "stream"
SAELENS = {"saelens": OUT / "saelens", "epochs-4/saelens": OUT / "saelens-epochs-4"}
RESULTS = HERE / "quality.json"
# name -> (epochs, sweep members as (name, sae overrides, train overrides))
SWEEPS = {
    "epochs-2": (2, [("seed1", {"seed": 1}, {}), ("batchtopk", {"architecture": "batchtopk"}, {}),
                     ("lr-2e-3", {}, {"lr": 2e-3})]),
    "epochs-4": (4, [("topk", {}, {}), ("batchtopk", {"architecture": "batchtopk"}, {}), ("lr-2e-3", {}, {"lr": 2e-3})]),
}  # fmt: skip


class RowIndices(ActivationSource):
    """The stored source's windows and shuffles, yielding each row's index in the store instead
    of its activation: the exact order our trainer reads, for another trainer to replay."""

    def __init__(self, stored: StoredActivations):
        super().__init__(["index"], stored.seed)
        self.stored = stored
        counts = [shard.n_tokens for shard in stored.manifest.shards]
        self.offsets = torch.tensor([0, *counts]).cumsum(0).tolist()

    def window_sizes(self, epoch: int) -> list[int]:
        return self.stored.window_sizes(epoch)

    def load_window(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        shards = self.stored._windows(epoch)[index]
        return {"index": torch.cat([torch.arange(self.offsets[s], self.offsets[s + 1]) for s in shards])}

    def stats(self):
        return {}


def stream_dir(epochs: int) -> Path:
    return STREAM if epochs == 2 else OUT / f"stream-epochs-{epochs}"


def prepare(epochs: int) -> None:
    """rows.safetensors (every stored row, scaled as our trainer scales them) and order.safetensors
    (the row index of every batch position of the whole run of `epochs` epochs)."""
    cfg = load_config(CONFIG, RunConfig, {"train.epochs": epochs})
    out = stream_dir(epochs)
    hook = cfg.activations.hooks[0]
    stored = StoredActivations(
        open_store(str(MAIN / "activations")), [hook], cfg.train.seed, cfg.activations.buffer_tokens
    )
    rows = torch.cat([stored.store.get_tensors(s.key)[hook].float() for s in stored.manifest.shards])
    steps = stored.tokens_per_epoch * cfg.train.epochs // cfg.train.batch_size
    indices = RowIndices(stored).batches(cfg.train.batch_size)
    order = torch.cat([next(indices)["index"] for _ in range(steps)])
    first = next(stored.batches(cfg.train.batch_size))[hook]
    if not torch.equal(rows[order[: cfg.train.batch_size]], first):
        raise AssertionError("the replayed order does not give our trainer's first batch")
    out.mkdir(parents=True, exist_ok=True)
    stats = stored.stats()[hook]
    scale = math.sqrt(stats.d) / stats.mean_norm  # the trainer's dataset-wide input scaling
    save_file({"x": rows * scale}, str(out / "rows.safetensors"))
    save_file({"order": order}, str(out / "order.safetensors"))
    meta = {
        "input_scale": scale, "batch_size": cfg.train.batch_size, "steps": steps,
        "epochs": cfg.train.epochs, "lr": cfg.train.lr, "lr_warmup_steps": cfg.train.lr_warmup_steps,
        "lr_decay_fraction": cfg.train.lr_decay_fraction, "dead_after_tokens": cfg.train.dead_after_tokens,
        "adam_betas": list(cfg.train.adam_betas), "d_sae": cfg.sae.d_sae, "k": cfg.sae.k,
        "hook": hook, "model": stored.manifest.model,
    }  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"prepare: {rows.shape[0]:,} rows, {steps} steps of {cfg.train.batch_size} -> {out}")


def sweep_config(name: str) -> RunConfig:
    """The main config with this sweep's members, reading the main run's stored activations."""
    epochs, members = SWEEPS[name]
    overrides = {
        "output": str(OUT / name), "activations.path": str(MAIN / "activations"), "train.epochs": epochs,
        "sweep": [{"name": member, "sae": sae, "train": train} for member, sae, train in members],
    }  # fmt: skip
    return load_config(CONFIG, RunConfig, overrides)


def train() -> None:
    for name in SWEEPS:
        run_train_sweep(sweep_config(name))


def candidates() -> dict[str, Path]:
    found = {"main": MAIN / "sae"}
    for name, (_, members) in SWEEPS.items():
        for member, _, _ in members:
            found[f"{name}/{member}"] = OUT / name / member / "sae"
    return {name: path for name, path in found.items() if (path / "sae.json").exists()}


def evaluate_all() -> dict:
    cfg = load_config(CONFIG, RunConfig)
    model = load_language_model(cfg.model)
    held_out = load_token_splits(cfg.data, model.tokenizer).eval
    results: dict[str, dict] = {}
    for name, folder in SAELENS.items():
        if (folder / "cfg.json").exists():
            results[name] = _saelens_evaluation(folder, model, held_out, cfg)
    for name, path in candidates().items():
        results[name] = _own_evaluation(path, cfg) or evaluate(
            load_sae(str(path)), model, held_out, cfg.eval
        ).model_dump(exclude={"density"})
        print(f"eval {name}: EV {results[name]['explained_variance']:.4f}", file=sys.stderr)
    report: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": _commit(), "saes": results}
    # against the reference (SAELens, 2 epochs), and against SAELens given as many epochs
    for key, reference in (("vs_saelens", lambda name: "saelens"), ("vs_saelens_same_epochs", _same_epochs)):
        report[key] = {
            name: {
                "ev_gain": r["explained_variance"] - results[base]["explained_variance"],
                "delta_loss_ratio": r["delta_lm_loss"] / results[base]["delta_lm_loss"],
            }
            for name, r in results.items()
            if (base := reference(name)) in results and base != name
        }
    return report


def _same_epochs(name: str) -> str:
    return "epochs-4/saelens" if name.startswith("epochs-4/") else "saelens"


def _saelens_evaluation(folder: Path, model, held_out: torch.Tensor, cfg: RunConfig) -> dict:
    """SAELens's SAE imported, checked against SAELens's own reconstruction, then evaluated."""
    trained = json.loads((folder / "lm_saes_training.json").read_text())
    sae = import_saelens(folder, hook_in=trained["hook"], model=trained["model"])
    scale = trained["input_scale"]
    main_scale = float(load_sae(str(MAIN / "sae")).input_scale)
    if abs(scale - main_scale) > 1e-6 * main_scale:
        raise AssertionError(f"SAELens trained on rows scaled by {scale}, our trainer by {main_scale}")
    sae.set_scales(scale, scale)  # it trained on scaled rows
    check = load_file(str(folder / "check.safetensors"))
    with torch.no_grad():
        error = float((sae.decode(sae.encode(check["x"] / scale)) * scale - check["recon"]).abs().max())
    if error > 1e-4:
        raise AssertionError(f"the imported SAELens SAE differs from SAELens's by {error:.2g}")
    metrics = evaluate(sae, model, held_out, cfg.eval).model_dump(exclude={"density"})
    return {**metrics, "training": trained, "import_max_error": error}


def _own_evaluation(sae_dir: Path, cfg: RunConfig) -> dict | None:
    """The run's eval.json when it was made on this held-out text with these settings (the
    runner calls the same `evaluate`), so a candidate is not evaluated twice."""
    run = sae_dir.parent
    if not (run / "eval.json").exists() or not (run / "config.json").exists():
        return None
    own = RunConfig.model_validate_json((run / "config.json").read_text())
    if own.data != cfg.data or own.eval != cfg.eval or own.model != cfg.model:
        return None
    metrics = json.loads((run / "eval.json").read_text())
    return {k: v for k, v in metrics.items() if k != "density"}


def table(report: dict) -> str:
    lines = [
        "| SAE | epochs | L0 | EV | EV − SAELens | Δ LM loss | ÷ SAELens | KL | dead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["saes"].items():
        gain = report.get("vs_saelens", {}).get(name, {})
        epochs = 4 if name.startswith("epochs-4") else 2
        lines.append(
            f"| {name} | {epochs} | {r['l0']:.1f} | {r['explained_variance']:.4f} | "
            f"{gain.get('ev_gain', 0):+.4f} | {r['delta_lm_loss']:.3f} | {gain.get('delta_loss_ratio', 1):.2f} | "
            f"{r['kl_divergence']:.3f} | {r['dead_fraction']:.2%} |"
        )
    return "\n".join(lines)


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", choices=["prepare", "train", "eval"])
    parser.add_argument("--epochs", type=int, default=2, help="prepare: the stream of this many epochs")
    parser.add_argument("--table", action="store_true", help="print the README table from quality.json")
    args = parser.parse_args()
    if args.table or args.step is None:
        print(table(json.loads(RESULTS.read_text())))
        return 0
    if args.step == "prepare":
        prepare(args.epochs)
    elif args.step == "train":
        train()
    else:
        report = evaluate_all()
        RESULTS.write_text(json.dumps(report, indent=1) + "\n")
        print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
