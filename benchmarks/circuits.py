"""Cross-layer vs per-layer transcoders on SmolLM2: attribution-graph quality over a fixed
prompt set, and one QK explanation; writes benchmarks/circuits.json.

Both dictionaries cover all 30 layers and were trained on the same stored activations
(`runs/circuits/activations`, one pass of the same tokens) by

    .venv/bin/lm-saes train examples/configuration/transcoders.toml \\
        --set data.max_tokens=96000 --set activations.path=runs/circuits/activations
    .venv/bin/lm-saes train examples/configuration/clt.toml \\
        --set data.max_tokens=96000 --set activations.path=runs/circuits/activations

(in this order); their training seconds are read from the runs' summaries. Scores are
circuit-tracer's: replacement (the share of the logits' influence that reaches them from
tokens rather than from error nodes) and completeness (the same, per node's inputs).

    .venv/bin/python benchmarks/circuits.py            # ~15 min on 2 cores
    .venv/bin/python benchmarks/circuits.py --table    # the README's table from circuits.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lm_saes.circuits import ReplacementModel, TranscoderSet, attribute, prompt_state, scores  # noqa: E402
from lm_saes.circuits.qk import qk_attribution  # noqa: E402
from lm_saes.config import ModelConfig, TraceConfig  # noqa: E402
from lm_saes.models import load_language_model  # noqa: E402

RUNS = {"per_layer": ROOT / "runs" / "smollm2-transcoders", "clt": ROOT / "runs" / "smollm2-clt"}
OUT = ROOT / "benchmarks" / "circuits.json"
PROMPTS = {  # kind -> prompts (fixed: the figures are over exactly these)
    "factual recall": [
        "The capital of France is",
        "The Eiffel Tower is located in the city of",
        "Barack Obama was born in the state of",
    ],
    "multi-hop": [
        "The capital of the country where the Eiffel Tower stands is",
        "The language spoken in the country whose capital is Madrid is",
    ],
    "arithmetic": ["3 + 4 =", "10 - 7 =", "2 times 6 equals"],
    "syntax": [
        "The keys to the cabinet",
        "She gave the book to",
        "If it rains tomorrow, we",
    ],
}
FRANCE = "The capital of France is"


def training(run: Path) -> tuple[int, float]:
    """(training tokens, training seconds) of a CLT run, or of a per-layer set (summed)."""
    if (run / "transcoders.json").is_file():
        summaries = [json.loads(p.read_text()) for p in sorted(run.glob("layer-*/summary.json"))]
        return summaries[0]["train_tokens"], sum(s["timings_s"]["train"] for s in summaries)
    summary = json.loads((run / "summary.json").read_text())
    return summary["train_tokens"], summary["timings_s"]["train"]


def describe_node(graph, index: int) -> str:
    node = graph.node(index)
    token = graph.token_strings[node["position"]]
    if node["kind"] == "feature":
        return f"L{node['layer']} feature {node['feature']} at {token!r}"
    if node["kind"] == "error":
        return f"L{node['layer']} error at {token!r}"
    return f"embedding of {token!r}"


def qk_example(replacement: ReplacementModel, graph) -> dict[str, Any]:
    """The head that attends most from the last position to 'France' (layers >= 1), explained."""
    state = prompt_state(replacement, FRANCE)
    strings = graph.token_strings
    key = next(i for i, s in enumerate(strings) if "France" in s)
    last = len(state.tokens) - 1
    _, cache = replacement.model.bridge.run_with_cache(state.tokens[None], names_filter=lambda n: "hook_pattern" in n)
    best = max(
        (
            (layer, head)
            for layer in range(1, replacement.n_layers)
            for head in range(replacement.model.bridge.cfg.n_heads)
        ),
        key=lambda lh: float(cache[f"blocks.{lh[0]}.attn.hook_pattern"][0, lh[1], last, key]),
    )
    layer, head = best
    qk = qk_attribution(replacement, state, layer, head, last, key)
    _, scores_cache = replacement.model.bridge.run_with_cache(
        state.tokens[None], names_filter=lambda n: n == f"blocks.{layer}.attn.hook_attn_scores"
    )
    real_score = float(scores_cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head, last, key])

    def top(side: torch.Tensor) -> list[dict[str, Any]]:
        order = side.abs().topk(5).indices.tolist()
        return [{"node": describe_node(graph, i), "contribution": round(float(side[i]), 4)} for i in order]

    return {
        "prompt": FRANCE,
        "layer": layer,
        "head": head,
        "query": strings[last],
        "key": strings[key],
        "pattern": round(float(cache[f"blocks.{layer}.attn.hook_pattern"][0, head, last, key]), 4),
        "score": round(qk.score, 4),
        "real_score": round(real_score, 4),
        "identity_error": abs(float(qk.query_side.sum()) + qk.query_bias - real_score),
        "query_side": top(qk.query_side),
        "key_side": top(qk.key_side),
        "top_pairs": [
            {"query": describe_node(graph, a), "key": describe_node(graph, b), "contribution": round(v, 4)}
            for a, b, v in qk.pairs[:5]
        ],
        "query_bias": round(qk.query_bias, 4),
    }


def trace_speed(model, rounds: int = 3) -> dict[str, Any]:
    """`make bench`'s trace.seconds and trace.clt_seconds (the 16-token prompt of tracing.py),
    alternating per-layer and CLT traces; medians."""
    from tracing import PROMPT

    replacements = {name: ReplacementModel(model, TranscoderSet.load(str(run))) for name, run in RUNS.items()}
    times: dict[str, list[float]] = {name: [] for name in RUNS}
    for _ in range(rounds):
        for name, replacement in replacements.items():
            start = time.perf_counter()
            attribute(replacement, PROMPT, TraceConfig())
            times[name].append(time.perf_counter() - start)
    return {"prompt": PROMPT, **{f"{name}_seconds": round(statistics.median(t), 2) for name, t in times.items()}}


def main() -> None:
    missing = [str(run) for run in RUNS.values() if not run.is_dir()]
    if missing:
        raise SystemExit(f"train both dictionaries first (see the module docstring): missing {missing}")
    model = load_language_model(ModelConfig(name="smollm2-135m"))
    out: dict[str, Any] = {}
    for name, run in RUNS.items():
        replacement = ReplacementModel(model, TranscoderSet.load(str(run)))
        rows = []
        for kind, prompts in PROMPTS.items():
            for prompt in prompts:
                start = time.perf_counter()
                graph = attribute(replacement, prompt, TraceConfig())
                seconds = time.perf_counter() - start
                result = scores(graph)
                rows.append(
                    {
                        "prompt": prompt,
                        "kind": kind,
                        "replacement": round(result.replacement, 4),
                        "completeness": round(result.completeness, 4),
                        "feature_nodes": graph.n_features,
                        "seconds": round(seconds, 2),
                    }
                )
                print(name, rows[-1], flush=True)
                if prompt == FRANCE and name == "clt":
                    out["france_qk"] = qk_example(replacement, graph)
        tokens, train_seconds = training(run)
        replacement_scores = [r["replacement"] for r in rows]
        out[name] = {
            "prompts": rows,
            "mean_replacement": round(statistics.mean(replacement_scores), 4),
            "stdev_replacement": round(statistics.stdev(replacement_scores), 4),
            "mean_completeness": round(statistics.mean(r["completeness"] for r in rows), 4),
            "stdev_completeness": round(statistics.stdev(r["completeness"] for r in rows), 4),
            "median_trace_seconds": statistics.median(r["seconds"] for r in rows),
            "training_tokens": tokens,
            "training_seconds": round(train_seconds, 1),
            "layers": len(replacement.transcoders.layers),
        }
    out["trace_16_tokens"] = trace_speed(model)
    clt, per_layer = out["clt"]["prompts"], out["per_layer"]["prompts"]
    out["clt_higher_replacement_on"] = sum(
        c["replacement"] > p["replacement"] for c, p in zip(clt, per_layer, strict=True)
    )
    out["n_prompts"] = len(clt)
    out["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("clt", "per_layer")}, indent=2))


def table() -> str:
    """The README's table, from benchmarks/circuits.json."""
    report = json.loads(OUT.read_text())
    clt, per_layer = report["clt"], report["per_layer"]
    lines = [
        "| prompt | kind | replacement: per-layer | CLT | completeness: per-layer | CLT |",
        "|---|---|---|---|---|---|",
    ]
    for p, c in zip(per_layer["prompts"], clt["prompts"], strict=True):
        lines.append(
            f"| {p['prompt']} | {p['kind']} | {p['replacement']:.3f} | {c['replacement']:.3f} "
            f"| {p['completeness']:.3f} | {c['completeness']:.3f} |"
        )
    lines.append(
        f"| **mean ± sd** | | **{per_layer['mean_replacement']:.3f} ± {per_layer['stdev_replacement']:.3f}** "
        f"| **{clt['mean_replacement']:.3f} ± {clt['stdev_replacement']:.3f}** "
        f"| {per_layer['mean_completeness']:.3f} ± {per_layer['stdev_completeness']:.3f} "
        f"| {clt['mean_completeness']:.3f} ± {clt['stdev_completeness']:.3f} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    if "--table" in sys.argv:
        print(table())
    else:
        main()
