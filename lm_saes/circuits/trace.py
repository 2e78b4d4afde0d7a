"""One trace, end to end: attribute a prompt, prune, score, save, and describe the result.

The full graph (adjacency matrix and node tables) goes to the object store; the document store
gets a record with the pruned graph's nodes and links (small enough to serve as is), its scores,
and the artifact's location. The artifact is written first, so a visible record always points
at a complete graph.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import torch

from lm_saes.circuits.attribution import attribute
from lm_saes.circuits.graph import AttributionGraph, Pruned, influence, normalized, prune, scores
from lm_saes.circuits.replacement import ReplacementModel
from lm_saes.config import TraceConfig
from lm_saes.stores import ObjectStore
from lm_saes.stores.documents import DocumentStore

TENSORS_KEY = "graph.safetensors"
METADATA_KEY = "graph.json"


def save_graph(graph: AttributionGraph, store: ObjectStore) -> None:
    store.put_tensors(TENSORS_KEY, {k: v.contiguous() for k, v in graph.tensors().items()})
    store.put_json(METADATA_KEY, graph.metadata())


def load_graph(store: ObjectStore) -> AttributionGraph:
    return AttributionGraph.from_parts(store.get_json(METADATA_KEY), store.get_tensors(TENSORS_KEY))


def cumulative_influence(node_influence: torch.Tensor) -> torch.Tensor:
    """[N] share of all influence held by the nodes at least as influential as each node."""
    ordered, order = node_influence.sort(descending=True)
    shares = ordered.cumsum(0) / ordered.sum().clamp_min(1e-12)
    out = torch.empty_like(shares)
    out[order] = shares
    return out


def describe(graph: AttributionGraph, pruned: Pruned) -> dict[str, Any]:
    """The pruned graph as JSON-ready nodes and links (node ids as circuit-tracer writes them)."""
    cumulative = cumulative_influence(pruned.node_influence)
    nodes = []
    for index in pruned.node_mask.nonzero().flatten().tolist():
        node = graph.node(index)
        node["influence"] = float(pruned.node_influence[index])
        node["cumulative"] = float(cumulative[index]) if node["kind"] in ("feature", "error") else 0.0
        nodes.append(node)
    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    ids = {index: graph.node(index)["id"] for index in pruned.node_mask.nonzero().flatten().tolist()}
    links = [
        {"source": ids[s], "target": ids[t], "weight": float(graph.adjacency[t, s])}
        for t, s in zip(targets.tolist(), sources.tolist(), strict=True)
        if s in ids and t in ids
    ]
    return {"nodes": nodes, "links": links}


def feature_sources(transcoders: str, layers: list[int], documents: DocumentStore | None) -> dict[str, str]:
    """layer -> id of the SAE record whose analysis describes that layer's features (for hovers)."""
    from lm_saes.analysis.analyze import default_sae_id

    def norm(location: str) -> str:
        return location.rstrip("/").removeprefix("./")

    wanted = {norm(f"{transcoders}/layer-{layer}/sae"): layer for layer in layers}
    found = {}
    for sae in documents.list_saes() if documents is not None else []:
        layer = wanted.get(norm(sae.artifact or ""))
        if layer is not None:
            found[str(layer)] = sae.id
    return {str(layer): found.get(str(layer), default_sae_id(f"{transcoders}/layer-{layer}/sae")) for layer in layers}


def graph_record(
    graph: AttributionGraph,
    pruned: Pruned,
    graph_id: str,
    artifact: str,
    cfg: TraceConfig,
    documents: DocumentStore | None = None,
) -> dict[str, Any]:
    graph_scores = scores(graph)
    return {
        "id": graph_id,
        "model": graph.model,
        "prompt": graph.prompt,
        "transcoders": graph.transcoders,
        "layers": graph.info.get("layers", []),
        "saes": feature_sources(graph.transcoders, graph.info.get("layers", []), documents),
        "n_layers": graph.n_layers,
        "tokens": graph.token_strings,
        "logits": [
            {"token": t, "token_id": i, "probability": float(p)}
            for t, i, p in zip(graph.logit_strings, graph.logit_tokens, graph.logit_probabilities.tolist(), strict=True)
        ],
        "scores": {"replacement": graph_scores.replacement, "completeness": graph_scores.completeness},
        "thresholds": {"node": cfg.node_threshold, "edge": cfg.edge_threshold, "max_links": cfg.max_links},
        "counts": {
            "features": graph.n_features,
            "nodes": graph.n_nodes,
            "kept_nodes": int(pruned.node_mask.sum()),
            "kept_links": int(pruned.edge_mask.sum()),
        },
        "seconds": graph.info.get("seconds"),
        "artifact": artifact,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **describe(graph, pruned),
    }


def run_trace(
    replacement: ReplacementModel,
    prompt: str,
    cfg: TraceConfig,
    objects: ObjectStore,
    documents: DocumentStore | None = None,
    graph_id: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Trace `prompt`, save the graph under `objects/graphs/ID`, record it; returns the record."""
    graph_id = graph_id or f"graph-{uuid.uuid4().hex[:12]}"
    graph = attribute(replacement, prompt, cfg, progress)
    pruned = prune(graph, cfg.node_threshold, cfg.edge_threshold, cfg.max_links)
    artifact = objects.child(f"graphs/{graph_id}")
    save_graph(graph, artifact)
    record = graph_record(graph, pruned, graph_id, artifact.uri, cfg, documents)
    if documents is not None:
        documents.put_graph(record)
    return record


def top_feature_nodes(graph: AttributionGraph, n: int) -> list[int]:
    """Indices of the `n` feature nodes with the most influence on the output logits."""
    node_influence = influence(normalized(graph.adjacency), graph.logit_weights())[: graph.n_features]
    return node_influence.topk(min(n, graph.n_features)).indices.tolist()


def summarize(record: dict[str, Any], n: int = 10) -> str:
    """A few lines for a terminal: scores, output logits, the most influential features."""
    lines = [
        f"graph {record['id']}: {record['prompt']!r} on {record['model']} (transcoders on layers {record['layers']})",
        f"  replacement score {record['scores']['replacement']:.3f}, "
        f"completeness {record['scores']['completeness']:.3f}; "
        f"{record['counts']['kept_nodes']} of {record['counts']['nodes']} nodes and "
        f"{record['counts']['kept_links']} links kept; {record['seconds']} s",
        "  next token: " + ", ".join(f"{item['token']!r} {item['probability']:.2f}" for item in record["logits"][:5]),
    ]
    features = sorted(
        (node for node in record["nodes"] if node["kind"] == "feature"), key=lambda node: -node["influence"]
    )[:n]
    tokens = record["tokens"]
    for node in features:
        lines.append(
            f"  L{node['layer']:<2} feature {node['feature']:<6} at {tokens[node['position']]!r:<12} "
            f"act {node['activation']:7.2f}  influence {node['influence']:.4f}"
        )
    return "\n".join(lines)
