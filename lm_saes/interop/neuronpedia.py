"""Export an SAE's features in the layout of Neuronpedia's data exports, which a self-hosted
Neuronpedia imports from its admin panel (docs.neuronpedia.org/api-and-data/exports).

One folder per source, each `.jsonl.gz` file one JSON object per line, the objects being rows of
Neuronpedia's database tables (`apps/webapp/prisma/schema.prisma`, field names as there):

    {out}/{model_id}/{source_id}/
        source.jsonl                      one `Source` row: id (= source_id), modelId, setName, hookName
        features/batch-{n}.jsonl.gz       `Neuron` rows
        activations/batch-{n}.jsonl.gz    `Activation` rows (the top and the quantile contexts)
        explanations/batch-{n}.jsonl.gz   `Explanation` rows, each with its `scores`

Features are addressed as Neuronpedia does: (modelId, layer, index) with `layer` the source id
(e.g. "6-res-lmsaes") and `index` a string. The fields, and what of ours fills them:

Neuron: modelId, layer, index; maxActApprox (max activation seen in the analysis); frac_nonzero
(density: the share of tokens where it fires); pos_str/pos_values and neg_str/neg_values (its
logit lens: tokens its decoder direction promotes and suppresses most); freq_hist_data_bar_values
/ _heights (the activation histogram: bar centres and counts of nonzero activations);
hookName (the TransformerLens hook it reads).

Activation: modelId, layer, index; tokens (strings) and values (the feature's activation per
token); maxValue, maxValueTokenIndex, minValue; dataIndex (the context's row in the analysis
text); binMin/binMax/binContains (for quantile samples: the activation interval the context was
sampled from and the share of the feature's firing contexts it holds; null for top contexts).

Explanation: modelId, layer, index; description (the text); explanationModelName (the
explainer); typeName (our prompt version, e.g. "lm-saes-1"); authorId; createdAt; scores: a list of
`ExplanationScore` rows (value, explanationScoreTypeName: detection / fuzzing / embedding,
explanationScoreModelName, jsonDetails: examples, positives, failed as JSON).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lm_saes.records import FeatureRecord, SaeRecord
from lm_saes.stores.documents import DocumentStore

AUTHOR = "lm-saes"


def source_id(sae: SaeRecord, set_name: str = "lmsaes") -> str:
    """Neuronpedia's `{layer}-{kind}-{set}` source name, e.g. `6-res-lmsaes`."""
    hook = sae.hook_in or ""
    parts = hook.split(".")
    layer = parts[1] if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else "0"
    kind = {"hook_resid_post": "res", "hook_resid_pre": "res", "hook_mlp_out": "mlp", "hook_attn_out": "att"}.get(
        parts[-1], "tc" if sae.hook_out and sae.hook_out != sae.hook_in else "res"
    )
    return f"{layer}-{kind}-{set_name}"


def neuron_row(feature: FeatureRecord, model_id: str, layer: str, hook: str | None) -> dict[str, Any]:
    lens = feature.logit_lens or {}
    hist = feature.histogram or {}
    edges, counts = hist.get("edges", []), hist.get("counts", [])
    bars = [(lo, hi, n) for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=False) if n]
    return {
        "modelId": model_id,
        "layer": layer,
        "index": str(feature.index),
        "maxActApprox": feature.max_activation or 0.0,
        "frac_nonzero": feature.density or 0.0,
        "pos_str": [t["token"] for t in lens.get("top", [])],
        "pos_values": [t["value"] for t in lens.get("top", [])],
        "neg_str": [t["token"] for t in lens.get("bottom", [])],
        "neg_values": [t["value"] for t in lens.get("bottom", [])],
        "freq_hist_data_bar_values": [(lo + hi) / 2 if hi != float("inf") else lo for lo, hi, _ in bars],
        "freq_hist_data_bar_heights": [float(n) for _, _, n in bars],
        "hookName": hook,
    }


def activation_rows(feature: FeatureRecord, model_id: str, layer: str) -> Iterator[dict[str, Any]]:
    def row(example: dict, bin_: tuple[float, float, float] | None) -> dict[str, Any]:
        values = [float(v) for v in example["activations"]]
        peak = max(range(len(values)), key=values.__getitem__) if values else 0
        return {
            "modelId": model_id,
            "layer": layer,
            "index": str(feature.index),
            "tokens": list(example.get("tokens", [])),
            "values": values,
            "maxValue": max(values, default=0.0),
            "maxValueTokenIndex": peak,
            "minValue": min(values, default=0.0),
            "dataIndex": str(example.get("context", "")),
            "binMin": bin_[0] if bin_ else None,
            "binMax": bin_[1] if bin_ else None,
            "binContains": bin_[2] if bin_ else None,
        }

    for example in feature.top_examples:
        yield row(example, None)
    total = sum(len(q.get("examples", [])) for q in feature.quantile_samples) or 1
    for bucket in feature.quantile_samples:
        lo, hi = bucket.get("interval", [0.0, 0.0])
        share = len(bucket.get("examples", [])) / total
        for example in bucket.get("examples", []):
            yield row(example, (float(lo), float(hi), share))


def explanation_row(feature: FeatureRecord, model_id: str, layer: str) -> dict[str, Any] | None:
    e = feature.explanation
    if e is None:
        return None
    return {
        "modelId": model_id,
        "layer": layer,
        "index": str(feature.index),
        "description": e.text,
        "explanationModelName": e.model,
        "typeName": e.prompt_version,
        "authorId": AUTHOR,
        "createdAt": e.created,
        "scores": [
            {
                "value": s.value,
                "explanationScoreTypeName": name,
                "explanationScoreModelName": s.model or e.model,
                "jsonDetails": json.dumps({"examples": s.examples, "positives": s.positives, "failed": s.failed}),
            }
            for name, s in e.scores.items()
        ],
    }


def export_neuronpedia(
    documents: DocumentStore, sae_id: str, out: str | Path, model_id: str | None = None, batch: int = 1024
) -> Path:
    """Write `sae_id`'s features under `out/{model_id}/{source_id}/`; returns that folder."""
    sae = documents.get_sae(sae_id)
    if sae is None:
        raise LookupError(f"sae_id: no SAE {sae_id!r} in the document store")
    model = model_id or sae.model
    layer = source_id(sae)
    folder = Path(out) / model / layer
    for part in ("features", "activations", "explanations"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    (folder / "source.jsonl").write_text(
        json.dumps({"id": layer, "modelId": model, "setName": layer.split("-", 1)[1], "hookName": sae.hook_in}) + "\n"
    )
    _, total = documents.list_features(sae_id, limit=1, fields=["density"])
    for n, offset in enumerate(range(0, total, batch)):
        page: list[FeatureRecord] = []
        for start in range(offset, min(offset + batch, total), 1000):  # store pages hold <= 1000
            chunk, _ = documents.list_features(sae_id, offset=start, limit=min(1000, offset + batch - start))
            page += chunk
        _write(folder / "features" / f"batch-{n}.jsonl.gz", (neuron_row(f, model, layer, sae.hook_in) for f in page))
        _write(
            folder / "activations" / f"batch-{n}.jsonl.gz", (r for f in page for r in activation_rows(f, model, layer))
        )
        _write(
            folder / "explanations" / f"batch-{n}.jsonl.gz",
            (r for f in page if (r := explanation_row(f, model, layer)) is not None),
        )
    return folder


def _write(path: Path, rows: Iterator[dict[str, Any]]) -> None:
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, allow_nan=False) + "\n")
    partial.replace(path)  # a reader never sees half a batch
