"""benchmarks/evals.json: the evaluation suite's figures for the README.

- per SAE (the main run and a second seed of the same config, both trained on the same stored
  activations): core metrics (EV, CE recovered, KL, density), absorption and sparse probing,
  each with the random-dictionary baseline the suites compute;
- universality: the two seeds compared (max activation correlation, partner fraction, decoder
  matching);
- synthetic ground truth: every shipped scenario, every architecture, trained vs initialised.

    .venv/bin/python benchmarks/evals.py                  # all of it (about half an hour here)
    .venv/bin/python benchmarks/evals.py --only synthetic # one part, merged into evals.json
    .venv/bin/python benchmarks/evals.py --table          # the README's tables, from evals.json

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
import tempfile
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lm_saes.runner import run_eval_suite  # noqa: E402
from lm_saes.saes import build_sae, load_sae  # noqa: E402
from lm_saes.stores import LocalObjectStore  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent / "runs"
SAES = {"main": RUNS / "smollm2-l6-topk" / "sae", "seed1": RUNS / "smollm2-l6-topk-seed1" / "sae"}
PARTS = ("saes", "universality", "synthetic")
# the second seed is there for universality and the metrics table; absorption and probing on the main SAE
MODEL_SUITES = {"main": ["core", "absorption", "probing"], "seed1": ["core"]}


def random_dictionary(like: Path, folder: str) -> str:
    """An untrained SAE of the same spec (another seed), saved under `folder`: the chance level."""
    spec = load_sae(str(like)).spec.model_copy(update={"seed": 12345})
    build_sae(spec).save(LocalObjectStore(folder), "sae")
    return f"{folder}/sae"


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE.parent, capture_output=True, text=True)
    return out.stdout.strip()


def tables(results: dict) -> str:
    """The README's markdown tables from evals.json."""
    lines = ["| scenario | architecture | L0 (true) | EV | MMCS (init) | MCC (init) | F1 (init) | recovered ≥ 0.9 |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in results.get("synthetic", []):
        t, z = r["trained"], r["random"]
        lines.append(
            f"| {r['scenario']} | {r['architecture']} | {r['l0']:.1f} ({r['true_l0']:.1f}) | "
            f"{r['explained_variance']:.3f} | {t['mmcs']:.3f} ({z['mmcs']:.3f}) | {t['mcc']:.3f} ({z['mcc']:.3f}) | "
            f"{t['f1']:.3f} ({z['f1']:.3f}) | {t['recovered_fraction']:.0%} |"
        )
    saes = results.get("saes", {})
    if saes:
        lines += ["", "| SAE | L0 | EV | CE recovered | Δ LM loss | KL | dead |", "|---|---|---|---|---|---|---|"]
        for name, report in saes.items():
            c = report.get("core") or {}
            if c:
                lines.append(
                    f"| {name} | {c['l0']:.1f} | {c['explained_variance']:.4f} | {c['ce_loss_recovered']:.4f} | "
                    f"{c['delta_lm_loss']:.3f} | {c['kl_divergence']:.3f} | {c['dead_fraction']:.2%} |"
                )
    main = (saes.get("main") or {}) if saes else {}
    a, p = main.get("absorption"), main.get("probing")
    if a:
        z = a.get("random_baseline") or {}
        lines += [
            "",
            "| first-letter absorption (main SAE) | SAE | untrained SAE |",
            "|---|---|---|",
            f"| mean absorption rate | {a['mean_absorption_rate']:.3f} | {z.get('mean_absorption_rate', float('nan')):.3f} |",
            f"| mean full-absorption rate | {a['mean_full_absorption_rate']:.3f} | "
            f"{z.get('mean_full_absorption_rate', float('nan')):.3f} |",
            f"| main latents per letter | {a['mean_main_latents']:.2f} | {z.get('mean_main_latents', float('nan')):.2f} |",
            f"| letters evaluated (probe F1 > 0.6) / words | {a['letters_evaluated']} / {a['words']} | |",
        ]
    if p:
        z = p.get("random_baseline") or {}
        ks = [str(k) for k in p["k_values"]]
        lines += [
            "",
            "| sparse probing, mean test accuracy over "
            + f"{len(p['tasks'])} tasks | "
            + " | ".join(f"k = {k}" for k in ks)
            + " | dense probe |",
            "|---|" + "---|" * (len(ks) + 1),
            "| main SAE | "
            + " | ".join(f"{p['mean_sparse_accuracy'][k]:.3f}" for k in ks)
            + f" | {p['mean_dense_accuracy']:.3f} |",
        ]
        if z:
            lines.append(
                "| untrained SAE | "
                + " | ".join(f"{z['mean_sparse_accuracy'][k]:.3f}" for k in ks)
                + f" | {z['mean_dense_accuracy']:.3f} |"
            )
    u = results.get("universality")
    if u:
        r = results.get("universality_random")

        def row(label: str, fmt) -> str:
            return f"| {label} | {fmt(u)} |" + (f" {fmt(r)} |" if r else "")

        lines += [
            "",
            "| main vs seed1 | value |" + (" main vs an untrained SAE |" if r else ""),
            "|---|---|" + ("---|" if r else ""),
            f"| tokens | {u['tokens']:,} |" + (f" {r['tokens']:,} |" if r else ""),
            row("mean max activation correlation", lambda x: f"{x['mean_max_correlation']:.3f}"),
            row("features with a partner ≥ 0.7", lambda x: f"{x['partner_fraction']:.1%}"),
            row(
                "decoder: mean max cosine / one-to-one matched",
                lambda x: f"{x['decoder_mean_max_cosine']:.3f} / {x['decoder_matched_cosine']:.3f}",
            ),
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=PARTS, action="append", help="parts to (re)run; default all")
    parser.add_argument("--out", default=str(HERE / "evals.json"))
    parser.add_argument("--table", action="store_true", help="print the README tables from --out and exit")
    args = parser.parse_args()
    if args.table:
        print(tables(json.loads(Path(args.out).read_text())))
        return 0
    parts = args.only or list(PARTS)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    if "saes" in parts:
        results["saes"] = {
            name: run_eval_suite(MODEL_SUITES[name], str(path)).model_dump(mode="json")
            for name, path in SAES.items()
            if (path / "sae.json").is_file()
        }
    if "universality" in parts:
        report = run_eval_suite(["universality"], str(SAES["main"]), str(SAES["seed1"]))
        results["universality"] = {"a": "main", "b": "seed1", **report.model_dump(mode="json")["universality"]}
        results["universality_seconds"] = report.seconds["universality"]
        with tempfile.TemporaryDirectory(prefix="lm-saes-random-sae-") as folder:
            random = run_eval_suite(["universality"], str(SAES["main"]), random_dictionary(SAES["main"], folder))
        results["universality_random"] = {"a": "main", "b": "random", **random.model_dump(mode="json")["universality"]}
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
