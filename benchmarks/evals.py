"""benchmarks/evals.json: the evaluation suite's figures for the README.

- per SAE (the main run and a second seed of the same config, both trained on the same stored
  activations): core metrics (EV, CE recovered, KL, density), absorption and sparse probing,
  each with the random-dictionary baseline the suites compute;
- universality: the two seeds compared (max activation correlation, partner fraction, decoder
  matching);
- synthetic ground truth: every shipped scenario, every architecture, trained vs initialised.

    .venv/bin/python benchmarks/evals.py                  # all of it (about half an hour here)
    .venv/bin/python benchmarks/evals.py --only synthetic # one part, merged into evals.json

Make the second seed first:
    lm-saes train examples/configuration/train.toml --set output=runs/smollm2-l6-topk-seed1 \\
        --set seed=1 --set activations.path=runs/smollm2-l6-topk/activations
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lm_saes.runner import run_eval_suite  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent / "runs"
SAES = {"main": RUNS / "smollm2-l6-topk" / "sae", "seed1": RUNS / "smollm2-l6-topk-seed1" / "sae"}
PARTS = ("saes", "universality", "synthetic")
MODEL_SUITES = ["core", "absorption", "probing"]


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE.parent, capture_output=True, text=True)
    return out.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=PARTS, action="append", help="parts to (re)run; default all")
    parser.add_argument("--out", default=str(HERE / "evals.json"))
    args = parser.parse_args()
    parts = args.only or list(PARTS)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    if "saes" in parts:
        results["saes"] = {
            name: run_eval_suite(MODEL_SUITES, str(path)).model_dump(mode="json")
            for name, path in SAES.items()
            if (path / "sae.json").is_file()
        }
    if "universality" in parts:
        report = run_eval_suite(["universality"], str(SAES["main"]), str(SAES["seed1"]))
        results["universality"] = {"a": "main", "b": "seed1", **report.model_dump(mode="json")["universality"]}
        results["universality_seconds"] = report.seconds["universality"]
    if "synthetic" in parts:
        report = run_eval_suite(["synthetic"], progress=False)
        results["synthetic"] = [r.model_dump(mode="json") for r in report.synthetic]
        results["synthetic_seconds"] = report.seconds["synthetic"]
    results["commit"], results["date"] = commit(), datetime.now(UTC).isoformat(timespec="seconds")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
