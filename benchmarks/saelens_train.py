#!/usr/bin/env python3
"""Train SAELens's TopK SAE with its own `SAETrainer.fit`, on exactly our training batches.

Runs INSIDE the SAELens venv (scripts/make_saelens_venv.sh); `benchmarks/quality.py prepare`
writes the stream it reads:

    .venv-saelens/bin/python benchmarks/saelens_train.py --stream runs/quality/stream --out runs/quality/saelens

STREAM/rows.safetensors holds every stored activation row, already scaled as our trainer scales
it (so SAELens runs with normalize_activations="none"); STREAM/order.safetensors the row of each
batch position of our whole run; STREAM/meta.json our recipe. SAELens gets that recipe in its
own terms: lr, linear warmup, linear decay to 0 over the last 20 % of steps, Adam betas, and
a dead-latent window of dead_after_tokens / batch_size steps for its aux-k loss; everything
else (initialisation, aux-k coefficient, gradient clipping at 1.0, rescaling by decoder norm)
is SAELens's default. OUT receives the SAE in SAELens's layout (`save_model`),
lm_saes_training.json (the input scale our evaluation undoes, the time taken) and
check.safetensors (SAELens's reconstruction of 256 rows, which our import must reproduce).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train SAELens's TopK SAE on a replayed lm-saes batch stream.")
    parser.add_argument("--stream", required=True, type=Path, help="folder written by quality.py prepare")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("rows.safetensors", "order.safetensors", "meta.json"):
        if not (args.stream / name).is_file():
            print(f"saelens_train: error: {args.stream / name} is missing; run quality.py prepare", file=sys.stderr)
            return 2

    warnings.filterwarnings("ignore")
    import sae_lens
    import torch
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer
    from safetensors.torch import load_file, save_file

    meta = json.loads((args.stream / "meta.json").read_text())
    rows = load_file(str(args.stream / "rows.safetensors"))["x"]
    order = load_file(str(args.stream / "order.safetensors"))["order"]
    batch, steps = meta["batch_size"], meta["steps"]
    if order.numel() != batch * steps:
        print(f"saelens_train: error: order has {order.numel()} rows, meta says {steps} x {batch}", file=sys.stderr)
        return 2

    torch.manual_seed(args.seed)
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=rows.shape[1],
            d_sae=meta["d_sae"],
            k=meta["k"],
            dtype="float32",
            device="cpu",
            normalize_activations="none",
            use_sparse_activations=False,  # its sparse backward is not implemented on CPU
        )
    )
    batches = (rows[order[i * batch : (i + 1) * batch]] for i in range(steps))
    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=steps * batch,
            train_batch_size_samples=batch,
            lr=meta["lr"],
            lr_end=0.0,
            lr_scheduler_name="constant",
            lr_warm_up_steps=meta["lr_warmup_steps"],
            lr_decay_steps=int(steps * meta["lr_decay_fraction"]),
            adam_beta1=meta["adam_betas"][0],
            adam_beta2=meta["adam_betas"][1],
            dead_feature_window=meta["dead_after_tokens"] // batch,
            device="cpu",
            autocast=False,
            logger=LoggingConfig(log_to_wandb=False),
        ),
        sae=sae,
        data_provider=batches,
    )
    started = time.perf_counter()
    trained = trainer.fit()
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    trained.save_model(str(args.out))
    cfg_path = args.out / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("metadata", {}).update({"hook_name": meta["hook"], "model_name": meta["model"]})
    cfg_path.write_text(json.dumps(cfg, indent=1))
    with torch.no_grad():  # SAELens's own reconstruction of a few rows, for the importer to match
        probe = rows[:256]
        save_file({"x": probe, "recon": trained.decode(trained.encode(probe))}, str(args.out / "check.safetensors"))
    report = {
        "sae_lens_version": sae_lens.__version__,
        "torch_version": torch.__version__,
        "steps": trainer.n_training_steps,
        "tokens": trainer.n_training_samples,
        "seconds": seconds,
        "input_scale": meta["input_scale"],
        "hook": meta["hook"],
        "model": meta["model"],
        "recipe": {k: meta[k] for k in ("batch_size", "epochs", "lr", "lr_warmup_steps", "lr_decay_fraction")},
        "dead_feature_window": meta["dead_after_tokens"] // batch,
        "dead_fraction": float(trainer.dead_neurons.float().mean()),
    }
    (args.out / "lm_saes_training.json").write_text(json.dumps(report, indent=1))
    print(f"saelens_train: {trainer.n_training_steps} steps in {seconds:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
