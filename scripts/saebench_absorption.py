#!/usr/bin/env python3
"""Run SAEBench's own first-letter absorption eval on our exported main SAE, offline.

Runs INSIDE the SAEBench venv (scripts/make_saebench_venv.sh), on the SAELens export of an SAE
(`lm-saes export --format saelens`):

    .venv-saebench/bin/python scripts/saebench_absorption.py --sae runs/saebench/main-saelens \\
        --model ~/.cache/lm-saes/models/smollm2-135m --out runs/saebench/results

SAEBench's `run_eval` is called unmodified. Two things make it run without a model hub:
- the model is a local folder: a copy of our SmolLM2 checkpoint's config.json naming
  `architectures = ["LlamaForCausalLM"]` (ours omits it; TransformerLens reads it) beside links
  to its weights and tokenizer;
- TransformerLens 3's `HookedTransformer.from_pretrained` maps every name through its list of
  official models before it looks at the folder, so that lookup is told to pass a folder
  through (its config loader already reads local folders).
Writes OUT/summary.json: SAEBench's mean absorption fraction, full-absorption rate and split
features, with the letters it evaluated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def local_model(checkpoint: Path, folder: Path) -> Path:
    """`folder`: the checkpoint's files linked, its config with the architecture named."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in checkpoint.iterdir():
        if item.name != "config.json" and not (folder / item.name).exists():
            (folder / item.name).symlink_to(item.resolve())
    config = json.loads((checkpoint / "config.json").read_text())
    config.setdefault("architectures", ["LlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SAEBench absorption on an exported SAE, offline.")
    parser.add_argument("--sae", required=True, type=Path, help="SAELens folder (cfg.json + weights)")
    parser.add_argument("--model", required=True, type=Path, help="our SmolLM2 checkpoint folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--llm-batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    args.sae, args.model, args.out = args.sae.resolve(), args.model.resolve(), args.out.resolve()
    for path, what in ((args.sae / "cfg.json", "--sae"), (args.model / "config.json", "--model")):
        if not path.is_file():
            print(f"saebench_absorption: error: {what}: {path} does not exist", file=sys.stderr)
            return 2

    import sae_bench
    import torch
    import transformer_lens.loading_from_pretrained as loading
    from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
    from sae_bench.evals.absorption.main import run_eval
    from sae_lens import SAE

    official = loading.get_official_model_name
    loading.get_official_model_name = lambda name: name if (Path(name) / "config.json").is_file() else official(name)

    model_dir = local_model(args.model, args.out / "model")
    sae = SAE.load_from_disk(str(args.sae), device="cpu")
    config = AbsorptionEvalConfig(model_name=str(model_dir), llm_batch_size=args.llm_batch_size, llm_dtype="float32")
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(args.out)  # SAEBench writes its artifacts/ into the working directory
    torch.manual_seed(config.random_seed)
    started = time.perf_counter()
    results = run_eval(config, [("lm_saes_main", sae)], device="cpu", output_path=str(args.out))
    seconds = time.perf_counter() - started
    if not results:
        print("saebench_absorption: SAEBench found too few first-letter features to evaluate", file=sys.stderr)
        return 1
    (output,) = results.values()
    summary = {
        "sae_bench_version": getattr(sae_bench, "__version__", None),
        "seconds": seconds,
        "mean": output["eval_result_metrics"]["mean"],
        "letters": [d["first_letter"] for d in output["eval_result_details"]],
        "details": output["eval_result_details"],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["mean"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
