"""Independent check of our attribution graphs against circuit-tracer 0.5.0 (issue 16).

Runs in its own venv (circuit-tracer pins transformers <= 4.57.3; ours is 5.x):

    python3 -m venv .venv-circuit-tracer
    .venv-circuit-tracer/bin/pip install torch==2.13.0 && .venv-circuit-tracer/bin/pip install circuit-tracer==0.5.0
    .venv/bin/python benchmarks/circuit_tracer_check.py ours CLT_FOLDER PROMPT OUT.pt     # our graph
    .venv-circuit-tracer/bin/python benchmarks/circuit_tracer_check.py theirs CLT_FOLDER PROMPT OUT.pt
    .venv/bin/python benchmarks/circuit_tracer_check.py compare OURS.pt THEIRS.pt [--out benchmarks/circuit_tracer_check.json]

circuit-tracer loads SmolLM2 offline from the float32 checkpoint lm-saes dequantizes once from
the packaged GGUF (~/.cache/lm-saes/models/smollm2-135m: config.json, model.safetensors,
tokenizer), as a TransformerLens HookedTransformer, and our cross-layer transcoder through its
own `load_clt` (our `clt` folder is its layout), reading `mlp.hook_in` and writing `mlp.hook_out`
as ours read the MLP's input and write its output. A TopK CLT runs there with its TopK
activation. Both graphs use every active feature, the same logits (95 % probability, at most
10); circuit-tracer zeroes BOS features and errors where we make them constants, which changes
no edge between the other nodes (the frozen model is affine in them). Compared: the adjacency
restricted to the nodes both have, matched by (layer, position, feature), errors by (layer,
position), tokens by position, logits by token id.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

CHECKPOINT = Path(os.environ.get("LM_SAES_HOME", Path.home() / ".cache" / "lm-saes")) / "models" / "smollm2-135m"


def ours(clt_folder: str, prompt: str, out: str) -> None:
    from lm_saes.circuits import ReplacementModel, TranscoderSet, attribute
    from lm_saes.config import ModelConfig, TraceConfig
    from lm_saes.models import load_language_model

    model = load_language_model(ModelConfig(name="smollm2-135m"))
    tokens = torch.tensor([[model.tokenizer.bos_token_id, *model.tokenizer.encode(prompt)]])
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("mlp.hook_in"))
        real = model.bridge(tokens)[0, -1]
    mlp_in = torch.stack([cache[f"blocks.{layer}.mlp.hook_in"][0] for layer in range(model.n_layers)])
    replacement = ReplacementModel(model, TranscoderSet.load(clt_folder))
    start = time.perf_counter()
    graph = attribute(replacement, prompt, TraceConfig())
    seconds = time.perf_counter() - start
    graph_fields = {
        "tokens": graph.tokens,
        "features": graph.features,  # (layer, position, feature)
        "logits": graph.logit_tokens,
        "adjacency": graph.adjacency,
        "n_layers": graph.n_layers,
    }
    _save(out, graph_fields, prompt, clt_folder, real, mlp_in, seconds)


def _save(out: str, graph_fields: dict, prompt: str, clt_folder: str, real, mlp_in, seconds: float) -> None:
    """One side's graph, the real model's last logits and MLP inputs, and the trace's time."""
    fields = {"n_pos": len(graph_fields["tokens"]), "real_logits": real, "mlp_in": mlp_in, "seconds": seconds}
    torch.save({**graph_fields, **fields, "prompt": prompt, "transcoders": _describe(clt_folder)}, out)


def _describe(clt_folder: str) -> str:
    spec = json.loads((Path(clt_folder) / "clt" / "clt.json").read_text())
    what = (
        f"CLT over {len(spec['layers'])} layers, {spec['d_sae']} features a layer, {spec['activation']} k {spec['k']}"
    )
    stand_in = (Path(clt_folder) / "STAND_IN").is_file()
    return f"{what}, {'random-weight stand-in (benchmarks/tracing.py)' if stand_in else 'trained: ' + clt_folder}"


def _smollm2_replacement(clt):
    """circuit-tracer's TransformerLens replacement model of SmolLM2, offline: TransformerLens
    does not know SmolLM2 by name and takes no local folder in `from_pretrained`, so the config
    is converted from the local checkpoint and the weights loaded as `from_pretrained` would
    (no LayerNorm folding or centering, which circuit-tracer also turns off)."""
    import safetensors.torch
    from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:  # what transformers 4.x reads of a checkpoint 5.x wrote
        config = json.loads((CHECKPOINT / "config.json").read_text())
        config["architectures"] = ["LlamaForCausalLM"]  # the GGUF-made config names none
        config["rope_theta"] = config.get("rope_parameters", {}).get("rope_theta", 10_000.0)  # 4.x reads only this
        (Path(folder) / "config.json").write_text(json.dumps(config))
        # the safetensors carry no format metadata (4.x requires it) and only the tied lm_head
        weights = safetensors.torch.load_file(CHECKPOINT / "model.safetensors")
        weights.setdefault("model.embed_tokens.weight", weights["lm_head.weight"])
        hf_model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
        hf_model.load_state_dict(weights, strict=True)
        special = json.loads((CHECKPOINT / "tokenizer_config.json").read_text())
        keep = {k: special[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in special}
        (Path(folder) / "tokenizer_config.json").write_text(
            json.dumps({**keep, "tokenizer_class": "PreTrainedTokenizerFast"})
        )
        shutil.copy(CHECKPOINT / "tokenizer.json", folder)
        cfg = get_pretrained_model_config(folder, device="cpu", dtype=torch.float32)
        cfg.rotary_base = config["rope_theta"]  # its generic Llama config keeps the default 10,000
        model = TransformerLensReplacementModel(cfg, tokenizer=AutoTokenizer.from_pretrained(folder))
    model.load_and_process_state_dict(
        convert_llama_weights(hf_model, cfg), fold_ln=False, center_writing_weights=False, center_unembed=False
    )
    model._configure_replacement_model(clt)
    return model


def theirs(clt_folder: str, prompt: str, out: str) -> None:
    from circuit_tracer import attribute
    from circuit_tracer.transcoder.activation_functions import TopK
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

    spec = json.loads((Path(clt_folder) / "clt" / "clt.json").read_text())
    clt = load_clt(
        str(Path(clt_folder) / "clt"),
        feature_input_hook="mlp.hook_in",
        feature_output_hook="mlp.hook_out",
        device=torch.device("cpu"),
        dtype=torch.float32,
        lazy_decoder=False,
    )
    if spec["activation"] == "topk":
        clt.activation_function = TopK(spec["k"])
    model = _smollm2_replacement(clt)
    tokens = [model.tokenizer.bos_token_id, *model.tokenizer.encode(prompt, add_special_tokens=False)]
    with torch.no_grad():
        real = model(torch.tensor([tokens]))[0, -1]
        _, cache = model.run_with_cache(torch.tensor([tokens]), names_filter=lambda n: n.endswith("mlp.hook_in"))
    mlp_in = torch.stack([cache[f"blocks.{layer}.mlp.hook_in"][0] for layer in range(model.cfg.n_layers)])
    start = time.perf_counter()
    graph = attribute(torch.tensor(tokens), model, batch_size=64, max_n_logits=10, desired_logit_prob=0.95)
    seconds = time.perf_counter() - start
    graph_fields = {
        "tokens": tokens,
        "active_features": graph.active_features,  # (layer, position, feature)
        "selected_features": graph.selected_features,
        "logits": [int(t) for t in graph.logit_tokens],
        "adjacency": graph.adjacency_matrix,
        "n_layers": model.cfg.n_layers,
    }
    _save(out, graph_fields, prompt, clt_folder, real, mlp_in, seconds)


def compare(ours_file: str, theirs_file: str, out: str | None = None) -> dict:
    a, b = torch.load(ours_file), torch.load(theirs_file)
    assert a["tokens"] == b["tokens"], (a["tokens"], b["tokens"])
    n_layers, n_pos = a["n_layers"], a["n_pos"]
    their_features = b["active_features"][b["selected_features"]]
    key = {tuple(f): i for i, f in enumerate(their_features.tolist())}
    our_keys = [tuple(f) for f in a["features"].tolist()]
    shared = [i for i, k in enumerate(our_keys) if k in key]
    n_ours, n_theirs = len(our_keys), len(their_features)

    def blocks(n_features: int) -> torch.Tensor:  # errors, tokens, logits after the features
        return torch.arange(n_features, n_features + n_layers * n_pos + n_pos)

    our_index = torch.cat([torch.tensor(shared, dtype=torch.long), blocks(n_ours)])
    their_index = torch.cat([torch.tensor([key[our_keys[i]] for i in shared], dtype=torch.long), blocks(n_theirs)])
    their_logits = {t: i for i, t in enumerate(b["logits"])}
    shared_logits = [(i, their_logits[t]) for i, t in enumerate(a["logits"]) if t in their_logits]
    n_logits = len(shared_logits)
    our_first, their_first = a["adjacency"].shape[0] - len(a["logits"]), b["adjacency"].shape[0] - len(b["logits"])
    our_index = torch.cat([our_index, torch.tensor([our_first + i for i, _ in shared_logits], dtype=torch.long)])
    their_index = torch.cat([their_index, torch.tensor([their_first + j for _, j in shared_logits], dtype=torch.long)])
    mine = a["adjacency"][our_index][:, our_index].double()
    other = b["adjacency"][their_index][:, their_index].double()
    scale = other.abs().max()
    report = {
        "prompt_tokens": n_pos,
        "model_logits_max_abs_difference": float((a["real_logits"] - b["real_logits"]).abs().max()),
        "mlp_in_max_abs_difference": float((a["mlp_in"] - b["mlp_in"]).abs().max()),
        "our_feature_nodes": n_ours,
        "their_feature_nodes": n_theirs,
        "shared_feature_nodes": len(shared),
        "our_logits": len(a["logits"]),
        "their_logits": len(b["logits"]),
        "logits_compared": n_logits,
        "max_abs_difference": float((mine - other).abs().max()),
        "max_abs_edge": float(scale),
        "relative_difference": float((mine - other).abs().max() / scale),
        "relative_frobenius": float((mine - other).norm() / other.norm()),
        "our_seconds": a["seconds"],
        "their_seconds": b["seconds"],
    }
    print(json.dumps(report, indent=2))
    if out:  # one entry per prompt, kept across runs
        saved = json.loads(Path(out).read_text()) if Path(out).is_file() else {}
        saved.update({"circuit_tracer": "0.5.0", "transcoders": a["transcoders"]})
        saved.setdefault("prompts", {})[a["prompt"]] = report
        Path(out).write_text(json.dumps(saved, indent=2) + "\n")
    return report


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "compare":
        compare(args[0], args[1], args[3] if len(args) > 3 and args[2] == "--out" else None)
    else:
        {"ours": ours, "theirs": theirs}[mode](*args)
