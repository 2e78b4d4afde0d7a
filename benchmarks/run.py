"""`make bench`: speed of lm-saes against baselines measured in the same run.

- train_topk: TopK training steps (576 -> 4608, k 32, batch 4096, fp32, Adam) on SmolLM2
  layer-6 activations, like with like (benchmarks/training.py): our whole trainer step vs
  SAELens's `SAETrainer.step`, our bare step vs its bare forward + Adam, and the machine's
  dense fp32 GFLOP/s with our step as a fraction of the encoder-matmul bound.
- activations: generating and storing one mid-layer hook on SmolLM2 vs a bare forward pass
  to the same layer over the same contexts.
- live: feature activations of a 64-token text through the gRPC activation service vs in
  process, 16 concurrent clients vs sequential, and four SAEs on four hooks in one request (one
  forward pass) vs one request per SAE (benchmarks/live.py).
- trace: the attribution graph of a 16-token prompt on SmolLM2 through its per-layer transcoder
  set and its cross-layer transcoder, vs a bare forward pass of the prompt, and a 256-token
  trace capped at 1024 feature nodes with its memory estimate and measured peak
  (benchmarks/tracing.py; TopK stand-ins of the trained shapes where runs/ lacks the sets).
- analysis: the streaming pass of `lm-saes analyze` (model, SAE, per-feature collector) for all
  features of the default SAE, over the same contexts, as a ratio to activation generation; and
  the same pass reading the activations just stored (`analyze.activations`, no model forward).
- steer: steered generation (64 greedy tokens, KV cache) vs the same loop without intervention
  vs `transformers` `generate` (benchmarks/steering_speed.py).
- autointerp: features explained and scored per minute by the local LLM server on this machine
  (benchmarks/autointerp_speed.py).
- multi_sae: 8 SAEs of the main shape trained from one activation stream (a sweep) vs 8 separate
  runs, over stored activations and on the fly (benchmarks/multi_sae.py).
- evals: wall time of `lm-saes eval --suite core,absorption,probing` on the main SAE.
- search: the feature-search vector index over 1M synthetic 384-d vectors: build seconds,
  single-query p50 / p99 and recall@10 against exact search (benchmarks/search.py; the library
  comparison behind its choice: benchmarks/search_libraries.py).

Prints a table and writes benchmarks/results.json (with the commit and date) from one full run;
`--only GROUP` prints one group and writes nothing. Ratios, not absolute times, are the
figures to compare: this machine's speed drifts over a day.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lm_saes.activations import generate_activations  # noqa: E402
from lm_saes.activations.store import CONTEXTS_KEY, StoredRows, read_manifest  # noqa: E402
from lm_saes.analysis.analyze import encode_rows, feature_activations  # noqa: E402
from lm_saes.analysis.collector import FeatureCollector  # noqa: E402
from lm_saes.config import DataConfig, ModelConfig  # noqa: E402
from lm_saes.data.packing import load_token_splits  # noqa: E402
from lm_saes.models import load_language_model  # noqa: E402
from lm_saes.saes import TopKConfig, build_sae, load_sae, make_spec  # noqa: E402
from lm_saes.stores import LocalObjectStore  # noqa: E402

HERE = Path(__file__).resolve().parent
SAELENS_PY = HERE.parent / ".venv-saelens" / "bin" / "python"
HOOK = "blocks.6.hook_resid_post"
RUN_SAE = HERE.parent / "runs" / "smollm2-l6-topk" / "sae"


def analysis_pass(model, sae, contexts: torch.Tensor, batch_contexts: int = 16) -> None:
    """The streaming part of `lm-saes analyze`: model, SAE and collector over every batch."""
    collector = FeatureCollector(sae.d_sae)
    for start in range(0, len(contexts), batch_contexts):
        tokens = contexts[start : start + batch_contexts]
        acts, valid = feature_activations(model, sae, tokens)
        collector.update(tokens, acts, valid, torch.arange(start, start + len(tokens)))


def stored_analysis_pass(sae, store: LocalObjectStore, batch_contexts: int = 16) -> None:
    """The same pass reading the stored activations (`analyze.activations`): no model forward."""
    rows = StoredRows(store, read_manifest(store), [HOOK])  # type: ignore[arg-type]
    contexts = rows.contexts()
    bos = int(store.get_tensors(CONTEXTS_KEY)["bos"][0])
    starts = torch.cat([torch.zeros(1, dtype=torch.long), (contexts != bos).sum(1).cumsum(0)])
    collector = FeatureCollector(sae.d_sae)
    for start in range(0, len(contexts), batch_contexts):
        stop = min(start + batch_contexts, len(contexts))
        x = rows.rows(int(starts[start]), int(starts[stop]))[HOOK]
        acts, valid = encode_rows(sae, contexts[start:stop], x, bos)
        collector.update(contexts[start:stop], acts, valid, torch.arange(start, stop))


def bench_evals() -> dict[str, float]:
    """Wall time of the evaluation suite (core, absorption, probing) on the main SAE, as configured."""
    if not (RUN_SAE / "sae.json").is_file():
        return {}
    from lm_saes.runner import run_eval_suite

    started = time.perf_counter()
    report = run_eval_suite(["core", "absorption", "probing"], str(RUN_SAE), progress=False)
    return {"suite_seconds": time.perf_counter() - started, **{f"{k}_seconds": v for k, v in report.seconds.items()}}


def default_sae():
    """The main job's SAE if it exists (else an untrained one of the same shape)."""
    if (RUN_SAE / "sae.json").is_file():
        return load_sae(str(RUN_SAE)), "trained (runs/smollm2-l6-topk)"
    spec = make_spec(TopKConfig(hook_in=HOOK, hook_out=HOOK, d_sae=4608, k=32), d_in=576, d_out=576)
    return build_sae(spec).eval(), "untrained, same shape"


def bench_activations(model, contexts: torch.Tensor, rounds: int) -> dict[str, float]:
    """Generate + store shards, bare forward to the hook's layer, and the analysis pass, alternating."""
    tokens = int((contexts != model.tokenizer.bos_token_id).sum())
    stop = model.stop_layer([HOOK])
    sae, sae_kind = default_sae()
    ours, bare, analysis, stored = [], [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        analysis_pass(model, sae, contexts)
        analysis.append(tokens / (time.perf_counter() - start))
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate_activations(model, contexts, [HOOK], LocalObjectStore(tmp), batch_contexts=32, progress=False)
            ours.append(tokens / (time.perf_counter() - start))
            start = time.perf_counter()
            stored_analysis_pass(sae, LocalObjectStore(tmp))
            stored.append(tokens / (time.perf_counter() - start))
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(contexts), 32):
                model.bridge(contexts[i : i + 32], stop_at_layer=stop)
        bare.append(tokens / (time.perf_counter() - start))
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    analysis_median = statistics.median(analysis)
    return {
        "activations": {
            "tokens_per_s": ours_median,
            "bare_forward_tokens_per_s": bare_median,
            "ratio": ours_median / bare_median,
            "tokens": tokens,
            "rounds": rounds,
        },
        "analysis": {
            "tokens_per_s": analysis_median,
            "ratio_to_activations": analysis_median / ours_median,
            "stored_tokens_per_s": statistics.median(stored),
            "stored_ratio_to_activations": statistics.median(stored) / ours_median,
            "sae": sae_kind,
            "features": sae.d_sae,
            "tokens": tokens,
            "rounds": rounds,
        },
    }


def training_inputs(model, contexts: torch.Tensor | None = None) -> torch.Tensor:
    """8,192 layer-6 activations of the corpus (BOS rows dropped): what the training row trains on."""
    if contexts is None:
        splits = load_token_splits(DataConfig(max_tokens=16_384, eval_tokens=0, context_size=128), model.tokenizer)
        contexts = splits.train
    x = model.activations(contexts[:72], [HOOK])[HOOK]
    return x[contexts[:72] != model.tokenizer.bos_token_id][:8192].float()


def _commit() -> str:
    """HEAD's hash, marked when the working tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "HEAD") + ("-dirty" if dirty else "")


def multi_sae_contexts(model) -> torch.Tensor:
    """The contexts of the full run's forward groups (16,384 training tokens)."""
    return load_token_splits(DataConfig(max_tokens=16_384, eval_tokens=0, context_size=128), model.tokenizer).train


def carried(group: str, previous: Path) -> dict:
    """The previous results' `group`, marked with the run it came from, for a group this machine
    cannot run now (the trace group needs the 30-layer transcoder set: ~50 min to train here)."""
    if not previous.is_file():
        return {}
    old = json.loads(previous.read_text())
    entry = dict(old.get(group) or {})
    if not entry or "carried_from" in entry:
        return entry
    source = {"commit": old.get("commit"), "date": old.get("date")}
    if source["commit"] is None:  # results written before they carried their own commit and date
        log = subprocess.run(
            ["git", "log", "-1", "--format=%H %cI", "--", str(previous)],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
        ).stdout.split()
        source = {"commit": log[0], "date": log[1]} if len(log) == 2 else source
    return {**entry, "carried_from": source}


def quality_keys(path: Path = HERE / "quality.json") -> dict:
    """issue 18's keys from benchmarks/quality.py's own run (hours here, so not re-run by bench):
    the default (`make run`'s SAE) against SAELens at the same recipe, and the best candidate."""
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    versus = report.get("vs_saelens", {})
    if "main" not in versus:
        return {}
    best = min(versus, key=lambda name: versus[name]["delta_loss_ratio"])
    return {
        "ev_gain_vs_saelens": versus["main"]["ev_gain"],
        "delta_loss_ratio_vs_saelens": versus["main"]["delta_loss_ratio"],
        "best_candidate": best,
        "best_ev_gain_vs_saelens": versus[best]["ev_gain"],
        "best_delta_loss_ratio_vs_saelens": versus[best]["delta_loss_ratio"],
        "from": {"file": "benchmarks/quality.json", "commit": report.get("commit"), "date": report.get("date")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument(
        "--only",
        choices=["train", "trace", "steer", "autointerp", "search", "multi_sae"],
        help="run one group and print it; results.json is only ever written whole, by a full run",
    )
    parser.add_argument("--save", help="with --only: also write the group (with commit and date) to this JSON file")
    args = parser.parse_args()

    if args.only == "search":  # no language model involved
        from search import bench_search

        print(json.dumps(bench_search(), indent=2))
        return 0
    model = load_language_model(ModelConfig())
    if args.only:
        from steering_speed import bench_steer
        from tracing import bench_trace
        from training import bench_train

        if args.only == "autointerp":
            from autointerp_speed import bench_autointerp

            partial = bench_autointerp()
        elif args.only == "trace":
            partial = bench_trace(model, args.rounds, allow_stand_ins=True)
        elif args.only == "steer":
            partial = bench_steer(model, default_sae()[0], args.rounds)
        elif args.only == "multi_sae":
            from multi_sae import bench_multi_sae

            partial = bench_multi_sae(model, multi_sae_contexts(model), args.rounds)
        else:
            partial = bench_train(training_inputs(model), args.rounds, args.steps)
        print(json.dumps(partial, indent=2))
        if args.save:
            stamp = {"group": args.only, "commit": _commit(), "date": datetime.now(UTC).isoformat(timespec="seconds")}
            Path(args.save).write_text(json.dumps({**stamp, **partial}, indent=1) + "\n")
        return 0
    contexts = multi_sae_contexts(model)
    forward = bench_activations(model, contexts, args.rounds)
    activations, analysis = forward["activations"], forward["analysis"]
    from training import bench_train

    train_topk = bench_train(training_inputs(model, contexts), args.rounds, args.steps)

    from live import bench_live  # benchmarks/ is on sys.path when run as a script

    live = bench_live(RUN_SAE) if (RUN_SAE / "sae.json").is_file() else {}
    from tracing import bench_trace

    trace = bench_trace(model, args.rounds, allow_stand_ins=True)
    if not trace:
        trace = carried("trace", Path(args.out))
        print(
            "trace: no transcoder set at runs/smollm2-transcoders (lm-saes train examples/configuration/"
            f"transcoders.toml makes it); {'kept the figures of run ' + str(trace['carried_from']) if trace else 'skipped'}",
            file=sys.stderr,
        )
    from steering_speed import bench_steer

    steer = bench_steer(model, default_sae()[0], args.rounds)
    from autointerp_speed import bench_autointerp

    autointerp = bench_autointerp()
    from multi_sae import bench_multi_sae

    multi_sae = bench_multi_sae(model, contexts, rounds=1)  # minutes per round: 8 x 2 trainers' set-up and checkpoints
    evals = bench_evals()
    from search import bench_search

    search = bench_search()
    if "steer_first_token_ms" in live:
        steer["first_token_ms"] = live["steer_first_token_ms"]  # over gRPC, measured with the live service
    quality = quality_keys()
    results = {
        "commit": _commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "gflops": train_topk["gflops"],
        },
        "train_topk": train_topk,
        "activations": activations,
        "analysis": analysis,
        "live": live,
        "trace": trace,
        "steer": steer,
        "autointerp": autointerp,
        "multi_sae": multi_sae,
        "evals": evals,
        "search": search,
        "quality": quality,
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        ("machine.gflops", train_topk["gflops"]),
        *(
            (f"train_topk.{key}", train_topk.get(key, float("nan")))
            for key in (
                "tokens_per_s",
                "saelens_tokens_per_s",
                "trainer_speedup",
                "bare_tokens_per_s",
                "saelens_bare_tokens_per_s",
                "bare_speedup",
                "limit_fraction",
            )
        ),
        ("activations.tokens_per_s", activations["tokens_per_s"]),
        ("activations.bare_forward_tokens_per_s", activations["bare_forward_tokens_per_s"]),
        ("activations.ratio", activations["ratio"]),
        ("analysis.tokens_per_s", analysis["tokens_per_s"]),
        ("analysis.ratio_to_activations", analysis["ratio_to_activations"]),
        ("analysis.stored_tokens_per_s", analysis["stored_tokens_per_s"]),
        ("analysis.stored_ratio_to_activations", analysis["stored_ratio_to_activations"]),
        *(
            (f"live.{key}", live[key])
            for key in (
                "p50_ms",
                "p99_ms",
                "bare_ms",
                "p50_over_bare",
                "concurrent_speedup",
                "inprocess_batch_speedup",
                "multi_sae_speedup",
            )
            if key in live
        ),
        *((("steer.first_token_ms", live["steer_first_token_ms"]),) if "steer_first_token_ms" in live else ()),
        *(
            (f"trace.{key}", trace[key])
            for key in (
                "seconds",
                "clt_seconds",
                "clt_ratio_to_per_layer",
                "forward_seconds",
                "ratio_to_forward",
                "feature_nodes",
                "edges",
                "estimate_mb_256_tokens",
                "peak_mb_256_tokens",
                "seconds_256_tokens",
            )
            if key in trace
        ),
        *(
            (f"steer.{key}", steer[key])
            for key in (
                "tokens_per_s",
                "generate_tokens_per_s",
                "hf_generate_tokens_per_s",
                "ratio_to_generate",
                "generate_ratio_to_hf",
                "batch_tokens_per_s",
                "batch_speedup",
            )
        ),
        *(
            (f"autointerp.{key}", autointerp[key])
            for key in ("explained_per_min", "scored_per_min")
            if key in autointerp
        ),
        *(
            (f"multi_sae.{key}", multi_sae[key])
            for key in ("ratio_to_separate", "stored_ratio", "on_the_fly_ratio")
            if key in multi_sae
        ),
        *((f"evals.{key}", evals[key]) for key in ("suite_seconds",) if key in evals),
        *((f"search.{key}", search[key]) for key in ("build_s", "p50_ms", "p99_ms", "recall_at_10")),
        *((f"quality.{key}", quality[key]) for key in ("ev_gain_vs_saelens", "delta_loss_ratio_vs_saelens") if quality),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\n{'metric':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value:,.2f}")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
