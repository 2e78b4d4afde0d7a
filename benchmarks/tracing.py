"""trace.seconds: the attribution graph of a 16-token prompt on SmolLM2 (all edges, by batched
backward passes through the frozen replacement model), against one bare forward pass of the
same prompt in the same process. Uses the transcoder set of examples/configuration/
transcoders.toml (runs/smollm2-transcoders) and, when it is there, the cross-layer transcoder of
examples/configuration/clt.toml (runs/smollm2-clt: `clt_seconds`); rounds alternate and medians
are reported."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from lm_saes.circuits import ReplacementModel, TranscoderSet, attribute
from lm_saes.config import TraceConfig

TRANSCODERS = Path(__file__).resolve().parents[1] / "runs" / "smollm2-transcoders"
CLT = Path(__file__).resolve().parents[1] / "runs" / "smollm2-clt"
PROMPT = "The Eiffel Tower is a landmark in the city of Paris, the capital of"  # 16 tokens (+ BOS)


def bench_trace(model, rounds: int = 3) -> dict[str, float]:
    if not (TRANSCODERS / "transcoders.json").is_file():
        return {}
    replacement = ReplacementModel(model, TranscoderSet.load(str(TRANSCODERS)))
    clt = ReplacementModel(model, TranscoderSet.load(str(CLT))) if (CLT / "clt" / "clt.json").is_file() else None
    tokens = torch.tensor([[model.tokenizer.bos_token_id, *model.tokenizer.encode(PROMPT)]])
    traces, forwards, clt_traces, graph, clt_graph = [], [], [], None, None
    for _ in range(rounds):
        start = time.perf_counter()
        with torch.no_grad():
            model.bridge(tokens)
        forwards.append(time.perf_counter() - start)
        start = time.perf_counter()
        graph = attribute(replacement, PROMPT, TraceConfig())
        traces.append(time.perf_counter() - start)
        if clt is not None:
            start = time.perf_counter()
            clt_graph = attribute(clt, PROMPT, TraceConfig())
            clt_traces.append(time.perf_counter() - start)
    seconds, forward = statistics.median(traces), statistics.median(forwards)
    with_clt = {}
    if clt_graph is not None:
        with_clt = {"clt_seconds": statistics.median(clt_traces), "clt_feature_nodes": clt_graph.n_features}
    return {
        **with_clt,
        "seconds": seconds,
        "forward_seconds": forward,
        "ratio_to_forward": seconds / forward,
        "prompt_tokens": int(tokens.shape[1]),
        "layers": len(replacement.transcoders.layers),
        "feature_nodes": graph.n_features,
        "nodes": graph.n_nodes,
        "edges": int((graph.adjacency != 0).sum()),
        "rounds": rounds,
    }
