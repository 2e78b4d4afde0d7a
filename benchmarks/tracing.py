"""trace: attribution graphs on SmolLM2 through its 30 layers of transcoders.

- `seconds` / `clt_seconds`: a 16-token prompt, every edge, through the per-layer transcoder set
  (examples/configuration/transcoders.toml, runs/smollm2-transcoders) and the cross-layer
  transcoder (examples/configuration/clt.toml, runs/smollm2-clt), beside one bare forward pass
  of the same prompt; rounds alternate and medians are reported.
- `*_256_tokens`: a 256-token prompt (with BOS) through the CLT (the per-layer set beside it),
  keeping the `MAX_FEATURE_NODES` most influential of its ~120k active features: the memory
  estimate `attribute` prints before its backward passes, and the peak resident memory the
  trace added over the process before it (sampled every 5 ms).

Without the trained sets (`make run` does not train them: ~50 min here) the figures come from
random-weight TopK stand-ins of the same shapes and k (`--stand-ins`; `transcoders` says which):
a trace's work is set by the active features, and a TopK transcoder has exactly k per position
and layer whatever its weights, so the times and memory are what the trained ones cost.

    .venv/bin/python benchmarks/tracing.py [--stand-ins] [--out benchmarks/trace_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from lm_saes.circuits import ReplacementModel, TranscoderSet, attribute
from lm_saes.circuits.attribution import estimate_trace
from lm_saes.config import CrossLayerTranscoderConfig, ModelConfig, TraceConfig
from lm_saes.models import load_language_model
from lm_saes.saes import TopKConfig, build_sae, make_spec
from lm_saes.saes.crosslayer import CrossLayerTranscoder, CrossLayerTranscoderSpec
from lm_saes.stores import LocalObjectStore

HERE = Path(__file__).resolve().parent
TRANSCODERS = HERE.parent / "runs" / "smollm2-transcoders"
CLT = HERE.parent / "runs" / "smollm2-clt"
PROMPT = "The Eiffel Tower is a landmark in the city of Paris, the capital of"  # 16 tokens (+ BOS)
LONG_PROMPT = (  # 255 tokens (+ BOS)
    "The history of the city begins with a small fishing village on the northern bank of the river. Over the "
    "centuries, merchants arrived from the south, bringing salt, wool and iron, and the village grew into a market "
    "town with a stone bridge, a church and a town hall. In the fifteenth century a fire destroyed most of the "
    "wooden houses, and the council ordered that every new building be made of brick. The university was founded "
    "in 1602 by a group of scholars who had left the capital after a dispute with the king. Its library, which "
    "still stands next to the main square, holds more than two million books and a famous collection of maps. "
    "During the industrial revolution, factories were built along the canal, and workers moved in from the "
    "countryside. The population doubled in forty years. Today the city is known for its museums, its parks and "
    "its annual music festival, which attracts visitors from all over the world. The festival takes place every "
    "summer in the old harbour, where a large stage is built on the water. Most of the concerts are free, and "
    "people bring their own food and sit on the grass until late at night. Local guides all say that the very "
    "best time to visit the old town and its harbour is in early June, when the"
)
MAX_FEATURE_NODES = 1024
HOOK_IN, HOOK_OUT = "blocks.{layer}.mlp.hook_in", "blocks.{layer}.hook_mlp_out"


def stand_ins(
    folder: Path, model_name: str = "smollm2-135m", n_layers: int = 30, d_model: int = 576
) -> tuple[Path, Path]:
    """Random-weight TopK transcoders shaped as the two examples (per-layer: 2304 features, k 16;
    CLT: 576 a layer, k 16), saved as training saves them. Encoder biases of 1 keep all k of a
    position's top pre-activations positive, as trained ones are."""
    per_layer, clt_folder = folder / "per-layer", folder / "clt"
    store = LocalObjectStore(per_layer)
    for layer in range(n_layers):
        hooks = {"hook_in": HOOK_IN.format(layer=layer), "hook_out": HOOK_OUT.format(layer=layer)}
        spec = make_spec(
            TopKConfig(**hooks, d_sae=2304, k=16, seed=layer), d_in=d_model, d_out=d_model, model=model_name
        )
        sae = build_sae(spec)
        with torch.no_grad():
            sae.b_enc.fill_(1.0)
        sae.save(store, f"layer-{layer}/sae")
    layers = {str(layer): f"layer-{layer}/sae" for layer in range(n_layers)}
    store.put_json(
        "transcoders.json", {"model": model_name, "hook_in": HOOK_IN, "hook_out": HOOK_OUT, "layers": layers}
    )
    config = CrossLayerTranscoderConfig(layers=list(range(n_layers)), d_sae=576, k=16)
    clt = CrossLayerTranscoder(CrossLayerTranscoderSpec(**config.model_dump(), d_model=d_model, model=model_name))
    with torch.no_grad():
        clt.b_enc.fill_(1.0)
    clt.save_circuit_tracer(LocalObjectStore(clt_folder / "clt"))
    for folder in (per_layer, clt_folder):
        (folder / "STAND_IN").write_text("random-weight TopK stand-in (benchmarks/tracing.py stand_ins)\n")
    return per_layer, clt_folder


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_added(fn):
    """(fn(), seconds, peak resident bytes added while it ran)."""
    base, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return result, seconds, max(peak[0], _rss()) - base


def bench_trace(model, rounds: int = 3, allow_stand_ins: bool = False) -> dict:
    trained = (TRANSCODERS / "transcoders.json").is_file() and (CLT / "clt" / "clt.json").is_file()
    if not trained and not allow_stand_ins:
        return {}
    with tempfile.TemporaryDirectory(prefix="lm-saes-stand-ins-") as folder:
        per_layer_path, clt_path = (TRANSCODERS, CLT) if trained else stand_ins(Path(folder))
        per_layer = ReplacementModel(model, TranscoderSet.load(str(per_layer_path)))
        clt = ReplacementModel(model, TranscoderSet.load(str(clt_path)))
        out = {"transcoders": "trained (runs/)" if trained else "random-weight TopK stand-ins of the trained shapes"}
        return {**out, **_short(model, per_layer, clt, rounds), **_long(per_layer, clt)}


def _short(model, per_layer: ReplacementModel, clt: ReplacementModel, rounds: int) -> dict:
    tokens = torch.tensor([[model.tokenizer.bos_token_id, *model.tokenizer.encode(PROMPT)]])
    traces, forwards, clt_traces, graph, clt_graph = [], [], [], None, None
    for _ in range(rounds):
        start = time.perf_counter()
        with torch.no_grad():
            model.bridge(tokens)
        forwards.append(time.perf_counter() - start)
        start = time.perf_counter()
        graph = attribute(per_layer, PROMPT, TraceConfig())
        traces.append(time.perf_counter() - start)
        start = time.perf_counter()
        clt_graph = attribute(clt, PROMPT, TraceConfig())
        clt_traces.append(time.perf_counter() - start)
    assert graph is not None and clt_graph is not None
    seconds, forward = statistics.median(traces), statistics.median(forwards)
    return {
        "seconds": seconds,
        "clt_seconds": statistics.median(clt_traces),
        "clt_ratio_to_per_layer": statistics.median(clt_traces) / seconds,
        "forward_seconds": forward,
        "ratio_to_forward": seconds / forward,
        "prompt_tokens": int(tokens.shape[1]),
        "layers": len(per_layer.transcoders.layers),
        "feature_nodes": graph.n_features,
        "clt_feature_nodes": clt_graph.n_features,
        "nodes": graph.n_nodes,
        "edges": int((graph.adjacency != 0).sum()),
        "rounds": rounds,
    }


def _long(per_layer: ReplacementModel, clt: ReplacementModel) -> dict:
    cfg = TraceConfig(max_tokens=512, max_feature_nodes=MAX_FEATURE_NODES)
    out: dict = {"max_feature_nodes_256_tokens": MAX_FEATURE_NODES}
    for prefix, replacement in (("", clt), ("per_layer_", per_layer)):
        estimate, described = estimate_trace(replacement, LONG_PROMPT, cfg)
        print(f"trace of 256 tokens ({'CLT' if not prefix else 'per-layer'}): {described}", file=sys.stderr)
        graph, seconds, peak = _peak_added(lambda r=replacement: attribute(r, LONG_PROMPT, cfg))
        out[f"{prefix}estimate_mb_256_tokens"] = estimate / 2**20
        out[f"{prefix}peak_mb_256_tokens"] = peak / 2**20
        out[f"{prefix}seconds_256_tokens"] = seconds
        out[f"{prefix}active_features_256_tokens"] = graph.info["active_features"]
        assert len(graph.tokens) == 256, len(graph.tokens)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stand-ins", action="store_true", help="random TopK stand-ins where runs/ lacks the sets")
    parser.add_argument("--out", help="also write the figures (with commit and date) to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = bench_trace(load_language_model(ModelConfig()), args.rounds, allow_stand_ins=args.stand_ins)
    if not figures:
        print("no trained transcoder sets under runs/: train them, or pass --stand-ins", file=sys.stderr)
        return 1
    print(json.dumps(figures, indent=2))
    if args.out:
        from run import _commit  # benchmarks/ is on sys.path when run as a script

        stamp = {"commit": _commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
        Path(args.out).write_text(json.dumps({**stamp, **figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
