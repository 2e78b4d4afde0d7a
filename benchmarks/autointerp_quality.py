"""How good are the explanations? Real against shuffled, over features of the main SAE.

    .venv/bin/python benchmarks/autointerp_quality.py [--features 200] [--base-url URL --model NAME]

1. Explain N features of the main SAE (a seeded random subset of those firing on >= 0.01 % of
   tokens) with the LLM: the packaged SmolLM2-135M-Instruct on the local server unless
   --base-url names another endpoint. Timed: `explained_per_min`.
2. Score every explanation (detection, fuzzing, embedding) on held-out activating and silent
   contexts; the scores go to the feature documents. Timed: `scored_per_min`.
3. Score each feature again on the *same* contexts with another feature's explanation (a
   random derangement): the shuffled baseline. Real explanations carry information about their
   feature only if they beat it; a paired sign-flip permutation test (and Wilcoxon's signed-rank
   test) over the features gives the p-value.

Writes benchmarks/autointerp.json (per-feature scores, means, p-values, speeds) and
runs/autointerp-cases.json (the contexts each feature was scored on, for
benchmarks/delphi_crosscheck.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from lm_saes.autointerp.examples import split_examples  # noqa: E402
from lm_saes.autointerp.llm import ChatClient, LLMSettings  # noqa: E402
from lm_saes.autointerp.prompts import PROMPT_VERSION  # noqa: E402
from lm_saes.autointerp.run import Autointerp, AutointerpConfig, run_autointerp, score_explanation  # noqa: E402
from lm_saes.stores.documents import open_document_store  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCORES = ("detection", "fuzzing", "embedding")


def permutation_p(differences: list[float], rounds: int = 20_000, seed: int = 0) -> float:
    """One-sided p of mean(differences) > 0 under random sign flips (paired, exact in the limit)."""
    d = np.asarray(differences, dtype=float)
    if not len(d):
        return float("nan")
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(rounds, len(d)))
    null = (signs * np.abs(d)).mean(axis=1)
    return float((1 + (null >= d.mean()).sum()) / (rounds + 1))


def wilcoxon_p(differences: list[float]) -> float | None:
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return None
    nonzero = [x for x in differences if x != 0]
    return float(wilcoxon(nonzero, alternative="greater").pvalue) if len(nonzero) >= 10 else None


def derangement(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            return order


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--documents", default=str(ROOT / "runs" / "lm-saes.sqlite"))
    parser.add_argument("--sae-id", default="smollm2-l6-topk")
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint (default: start the local server)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "autointerp.json"))
    parser.add_argument("--cases", default=str(ROOT / "runs" / "autointerp-cases.json"))
    parser.add_argument(
        "--reuse-explanations",
        nargs=2,
        type=float,
        metavar=("FEATURES", "SECONDS"),
        help="score the explanations already stored (by an earlier run that explained FEATURES in SECONDS)",
    )
    parser.add_argument(
        "--reuse-scores",
        type=float,
        metavar="SECONDS",
        help="take the real scores stored by an earlier run (that scored the features in SECONDS)",
    )
    parser.add_argument(
        "--scorers", default=",".join(SCORES), help="scorers of the real explanations (comma-separated)"
    )
    parser.add_argument(
        "--shuffled-scorers", default=",".join(SCORES), help="scorers of the shuffled baseline (comma-separated)"
    )
    args = parser.parse_args()
    real_scorers = tuple(name for name in args.scorers.split(",") if name)
    shuffled_scorers = tuple(name for name in args.shuffled_scorers.split(",") if name)
    if not set(real_scorers) | set(shuffled_scorers) <= set(SCORES):
        parser.error(f"--scorers and --shuffled-scorers take names from {SCORES}")

    with ExitStack() as stack:
        if args.base_url:
            llm = LLMSettings(base_url=args.base_url, model=args.model, max_concurrency=args.concurrency)
            server = args.base_url
        else:
            from lm_saes.autointerp.server import LocalLLMServer

            local = stack.enter_context(LocalLLMServer(parallel=args.concurrency, threads=os.cpu_count()))
            llm = local.settings().model_copy(update={"max_concurrency": args.concurrency})
            server = "local (lm_saes.autointerp.server)"
        base = dict(
            documents=args.documents,
            sae_id=args.sae_id,
            max_features=args.features,
            min_density=1e-4,
            llm=llm.model_dump(),
            redo=True,
        )
        client = ChatClient(llm)

        # 1. explanations (no scorer: only the LLM's time)
        if args.reuse_explanations:
            n_explained, explain_s = int(args.reuse_explanations[0]), args.reuse_explanations[1]
            explain_tokens = None
        else:
            started = time.perf_counter()
            explained = run_autointerp(AutointerpConfig(**base, scorers=[]), client=client)
            explain_s = time.perf_counter() - started
            n_explained = explained.explained
            explain_tokens = {"prompt": explained.prompt_tokens, "completion": explained.completion_tokens}
            print(f"explained {n_explained} features in {explain_s:.0f} s", flush=True)

        # 2. real scores, stored; 3. shuffled scores on the same contexts
        cfg = AutointerpConfig(**{**base, "redo": False}, explain=False)
        documents = open_document_store(args.documents)
        stack.callback(documents.close)
        run = Autointerp(cfg, documents, client, None)
        from lm_saes.autointerp.embedding import Embedder

        encode = Embedder().encode
        from lm_saes.autointerp.run import select_features

        chosen = select_features(documents, cfg, run.source.sae.d_sae)
        records = {i: documents.get_feature(args.sae_id, i) for i in chosen}
        chosen = [i for i in chosen if records[i] is not None and records[i].explanation is not None]
        contexts = {}
        for start in range(0, len(chosen), cfg.chunk):
            part = chosen[start : start + cfg.chunk]
            negatives = run.negatives(part, cfg.seed + start)
            for i in part:
                contexts[i] = (split_examples(records[i], cfg.examples, run.source.strings), negatives.get(i, []))
        texts = {i: records[i].explanation.text for i in chosen}

        def score(i: int, text: str, names: tuple[str, ...] = SCORES) -> dict:
            examples, negatives = contexts[i]
            return score_explanation(
                text, examples, negatives, names, run.chat, encode, cfg.examples, llm.model, cfg.seed + i
            )

        from concurrent.futures import ThreadPoolExecutor

        if args.reuse_scores:
            from lm_saes.autointerp.scorers import ScoreResult

            score_s = args.reuse_scores
            real = {i: {k: ScoreResult(records[i].explanation.scores.get(k), [], 0, 0) for k in SCORES} for i in chosen}
        else:
            started = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                real = dict(zip(chosen, pool.map(lambda i: score(i, texts[i], real_scorers), chosen), strict=True))
            score_s = time.perf_counter() - started
            print(f"scored {len(chosen)} features in {score_s:.0f} s", flush=True)
            updates = {}
            for i in chosen:
                e = records[i].explanation
                updates[i] = e.model_copy(update={"scores": {k: r.score for k, r in real[i].items() if r.score}})
            documents.put_explanations(args.sae_id, updates)
        other = derangement(len(chosen), seed=1)
        with ThreadPoolExecutor(args.concurrency) as pool:
            shuffled_list = list(
                pool.map(lambda p: score(chosen[p], texts[chosen[other[p]]], shuffled_scorers), range(len(chosen)))
            )
        shuffled = dict(zip(chosen, shuffled_list, strict=True))

    features, summary = [], {}
    for i in chosen:
        row = {"index": i, "explanation": texts[i], "density": records[i].density}
        for name in SCORES:
            r = real[i][name].score if name in real[i] else None
            s = shuffled[i][name].score if name in shuffled[i] else None
            row[name] = r.value if r else None
            row[f"{name}_shuffled"] = s.value if s else None
            row[f"{name}_failed"] = (r.failed if r else None, s.failed if s else None)
        features.append(row)
    for name in SCORES:
        pairs = [
            (f[name], f[f"{name}_shuffled"])
            for f in features
            if f[name] is not None and f[f"{name}_shuffled"] is not None
        ]
        diffs = [a - b for a, b in pairs]
        reals = [f[name] for f in features if f[name] is not None]
        summary[name] = {
            "real_mean": statistics.fmean(reals) if reals else None,
            "real_median": statistics.median(reals) if reals else None,
            "shuffled_mean": statistics.fmean(b for _, b in pairs) if pairs else None,
            "features": len(reals),
            "paired_features": len(pairs),
            "p_value": permutation_p(diffs) if diffs else None,
            "wilcoxon_p": wilcoxon_p(diffs),
            "real_beats_shuffled": sum(d > 0 for d in diffs),
            "ties": sum(d == 0 for d in diffs),
        }
    result = {
        "commit": commit(),
        "date": datetime.now(UTC).isoformat(),
        "sae_id": args.sae_id,
        "llm": {"model": llm.model, "server": server, "concurrency": args.concurrency},
        "prompt_version": PROMPT_VERSION,
        "examples": cfg.examples.model_dump(),
        "explained_per_min": n_explained / (explain_s / 60),
        "explain_measured_over": {"features": n_explained, "seconds": explain_s},
        "scored_per_min": len(chosen) / (score_s / 60),
        "explain_tokens": explain_tokens,
        "scorers": {"real": list(real_scorers), "shuffled": list(shuffled_scorers)},
        **summary,
        "features": features,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    cases = [
        {
            "index": i,
            "explanation": texts[i],
            "activating": [
                {"tokens": list(c.tokens), "activations": list(c.activations)} for c in contexts[i][0].activating
            ],
            "negatives": [{"tokens": list(c.tokens)} for c in contexts[i][1]],
            "ours": {
                k: (real[i][k].score.value if k in real[i] and real[i][k].score else None)
                for k in ("detection", "fuzzing")
            },
        }
        for i in chosen
    ]
    Path(args.cases).write_text(json.dumps(cases))
    for name in SCORES:
        s = summary[name]
        if s["real_mean"] is None:
            continue
        if s["shuffled_mean"] is None:
            print(f"{name:10s} real {s['real_mean']}  (no shuffled baseline)")
            continue
        print(
            f"{name:10s} real {s['real_mean']:.3f}  shuffled {s['shuffled_mean']:.3f}  p {s['p_value']:.2g}"
            f"  ({s['real_beats_shuffled']}/{s['features']} features better)"
        )
    print(f"wrote {args.out} and {args.cases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
