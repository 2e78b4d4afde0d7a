"""Graph JSON as circuit-tracer writes it and Neuronpedia's graph viewer reads it.

One file: `metadata` (prompt, prompt tokens, the transcoder list as `scan`), `qParams` (the
viewer's initial state), `nodes` (node_id `{layer}_{feature}_{pos}` for features,
`{layer}_-1_{pos}` for errors, `E_{token}_{pos}` for embeddings, `{n_layers+1}_{token}_{pos}`
for logits) and `links` (source, target, weight). Our graph records already use these ids, so
the export is a field-by-field mapping of a stored graph record.
"""

from __future__ import annotations

from typing import Any

FEATURE_TYPES = {
    "feature": "cross layer transcoder",
    "error": "mlp reconstruction error",
    "token": "embedding",
    "logit": "logit",
}


def _cantor(x: int, y: int) -> int:
    """circuit-tracer's feature number for a (layer, index) pair when no scan size is known."""
    return (x + y) * (x + y + 1) // 2 + y


def to_graph_json(record: dict[str, Any], slug: str | None = None) -> dict[str, Any]:
    """A stored graph record -> circuit-tracer / Neuronpedia graph JSON (schema version 1)."""
    n_layers = record["n_layers"]
    top_logit = record["logits"][0]["token_id"] if record["logits"] else None
    nodes = [_node(node, n_layers, top_logit) for node in record["nodes"]]
    transcoders = [f"{record['transcoders']}/layer-{layer}" for layer in record.get("layers", [])]
    return {
        "metadata": {
            "slug": slug or record["id"],
            "scan": f"lm-saes:{record['model']}",
            "transcoder_list": transcoders,
            "prompt_tokens": record["tokens"],
            "prompt": record["prompt"],
            "node_threshold": record["thresholds"]["node"],
            "schema_version": 1,
            "info": {"generator": {"name": "lm-saes"}, "scores": record["scores"]},
        },
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": [
            {"source": link["source"], "target": link["target"], "weight": link["weight"]} for link in record["links"]
        ],
    }


def _node(node: dict[str, Any], n_layers: int, top_logit: int | None) -> dict[str, Any]:
    kind, pos = node["kind"], node["position"]
    out: dict[str, Any] = {
        "node_id": node["id"],
        "ctx_idx": pos,
        "feature_type": FEATURE_TYPES[kind],
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "clerp": "",
        "influence": node.get("cumulative"),
        "activation": node.get("activation"),
    }
    if kind == "feature":
        layer, feature = node["layer"], node["feature"]
        out.update(feature=_cantor(layer, feature), layer=str(layer), jsNodeId=f"{layer}_{feature}-0")
    elif kind == "error":
        out.update(feature=-1, layer=str(node["layer"]), jsNodeId=f"{node['layer']}_-1-{pos}")
    elif kind == "token":
        token_id = int(node["id"].split("_")[1])
        out.update(feature=pos, layer="E", jsNodeId=f"E_{token_id}-{pos}", influence=None)
    else:
        token_id = int(node["id"].split("_")[1])
        probability = node.get("probability", 0.0)
        out.update(
            feature=token_id,
            layer=str(n_layers + 1),
            jsNodeId=f"L_{token_id}-{pos}",
            token_prob=probability,
            is_target_logit=token_id == top_logit,
            influence=None,
            clerp=f'Output "{node.get("token", "")}" (p={probability:.3f})',
        )
    return out
