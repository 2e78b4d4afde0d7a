"""Do our detection and fuzzing scores agree with delphi's on the same explanations and contexts?

    .venv/bin/python benchmarks/delphi_crosscheck.py [--cases runs/autointerp-cases.json] [--limit 100]

Reads the cases benchmarks/autointerp_quality.py wrote (per feature: the explanation, the
held-out activating and the silent contexts, and our scores), has EleutherAI delphi's own
DetectionScorer and FuzzingScorer score them in `.venv-delphi` (benchmarks/delphi_scores.py)
through the same LLM server, and compares per feature and on the mean. The two differ only in
what is delphi's own: its prompts, its shuffling, its few-shot examples. Writes
benchmarks/delphi_crosscheck.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DELPHI_PY = ROOT / ".venv-delphi" / "bin" / "python"


def compare(cases: list[dict], delphi: list[dict]) -> dict:
    by_index = {row["index"]: row for row in delphi}
    out: dict = {}
    for name in ("detection", "fuzzing"):
        pairs = [
            (c["ours"][name], by_index[c["index"]][name]["value"])
            for c in cases
            if c["index"] in by_index
            and c["ours"].get(name) is not None
            and by_index[c["index"]][name]["value"] is not None
        ]
        ours, theirs = [a for a, _ in pairs], [b for _, b in pairs]
        out[name] = {
            "features": len(pairs),
            "ours_mean": statistics.fmean(ours) if pairs else None,
            "delphi_mean": statistics.fmean(theirs) if pairs else None,
            "mean_difference": abs(statistics.fmean(ours) - statistics.fmean(theirs)) if pairs else None,
            "per_feature_mean_abs_difference": statistics.fmean(abs(a - b) for a, b in pairs) if pairs else None,
            "correlation": statistics.correlation(ours, theirs)
            if len(pairs) > 2 and len(set(ours)) > 1 and len(set(theirs)) > 1
            else None,
            "delphi_failed": sum(by_index[c["index"]][name]["failed"] for c in cases if c["index"] in by_index),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=str(ROOT / "runs" / "autointerp-cases.json"))
    parser.add_argument("--limit", type=int, default=100, help="features compared (the first N cases)")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint (default: start the local server)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", default=str(HERE / "delphi_crosscheck.json"))
    args = parser.parse_args()
    if not DELPHI_PY.exists():
        print("no .venv-delphi: run scripts/make_delphi_venv.sh", file=sys.stderr)
        return 1
    cases = json.loads(Path(args.cases).read_text())[: args.limit]
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        if args.base_url:
            base_url, model = args.base_url, args.model
        else:
            from lm_saes.autointerp.server import LocalLLMServer

            settings = stack.enter_context(LocalLLMServer(threads=os.cpu_count())).settings()
            base_url, model = settings.base_url, settings.model
        subset, scored = Path(tmp) / "cases.json", Path(tmp) / "delphi.json"
        subset.write_text(json.dumps(cases))
        subprocess.run(
            [str(DELPHI_PY), str(HERE / "delphi_scores.py"), str(subset), base_url, model, str(scored)],
            check=True,
            cwd=ROOT,
        )
        delphi = json.loads(scored.read_text())
    order = [c["index"] for c in cases]
    result = {
        "date": datetime.now(UTC).isoformat(),
        "model": model,
        "features": len(cases),
        **compare(cases, delphi),
        "per_feature": [
            {"index": c["index"], "ours": c["ours"], "delphi": {k: d[k]["value"] for k in ("detection", "fuzzing")}}
            for c, d in zip(cases, sorted(delphi, key=lambda row: order.index(row["index"])), strict=True)
        ],
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for name in ("detection", "fuzzing"):
        r = result[name]
        if not r["features"]:
            print(f"{name}: no feature where both scored ({r['delphi_failed']} delphi parse failures)")
            continue
        print(
            f"{name}: ours {r['ours_mean']:.3f}  delphi {r['delphi_mean']:.3f}  |difference| {r['mean_difference']:.3f}"
            f"  over {r['features']} features"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
