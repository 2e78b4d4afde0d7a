"""Circuits: attribution graphs read from the document store; traces submitted to (scope
`submit`) and interventions run by (scope `compute`) the CircuitService."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from gateway import auth
from gateway.backends import Backends, backends
from gateway.errors import PROBLEMS, from_service, not_found
from gateway.schemas import (
    AttentionExplanation,
    AttentionRequest,
    CircuitList,
    Graph,
    InterventionRequest,
    InterventionResult,
    Job,
    TraceRequest,
)
from lm_saes.interop.circuit_tracer import to_graph_json
from lm_saes.records import GraphRecord, GraphSummary
from lm_saes.rpc.client import ServiceError

router = APIRouter(tags=["circuits"], responses=PROBLEMS)
Store = Annotated[Backends, Depends(backends)]
GraphId = Annotated[str, Path(min_length=1, max_length=100)]
TRACE_FIELDS = ("node_threshold", "edge_threshold", "max_links", "max_logits")


def _graph_or_404(store: Backends, graph_id: str) -> GraphRecord:
    record = store.documents.get_graph(graph_id)
    if record is None:
        raise not_found(f"no graph {graph_id!r}")
    return record


@router.get("/circuits", response_model=CircuitList, dependencies=[auth.read])
def list_circuits(store: Store, model: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    """Stored graphs, newest first (summaries: no nodes or links)."""
    records = sorted(store.documents.list_graphs(model), key=lambda r: r.created or "", reverse=True)
    return {
        "items": [GraphSummary.model_validate(r.model_dump(include=set(GraphSummary.model_fields))) for r in records]
    }


@router.get("/circuits/{graph_id}", response_model=Graph, dependencies=[auth.read])
def get_circuit(store: Store, graph_id: GraphId) -> GraphRecord:
    """One graph, pruned as traced: nodes (with influence), links (with weights), scores."""
    return _graph_or_404(store, graph_id)


@router.get(
    "/circuits/{graph_id}/export",
    dependencies=[auth.read],
    responses={200: {"description": "circuit-tracer / Neuronpedia graph JSON"}},
)
def export_circuit(store: Store, graph_id: GraphId) -> dict[str, Any]:
    """The graph in the JSON that circuit-tracer's and Neuronpedia's graph viewers open."""
    return to_graph_json(_graph_or_404(store, graph_id).doc())


@router.post("/circuits", response_model=Job, status_code=201)
def trace(store: Store, body: TraceRequest, user: auth.Submitter) -> dict[str, Any]:
    """Queue a trace of `prompt` through a transcoder set; the job's result names the graph."""
    config = {k: getattr(body, k) for k in TRACE_FIELDS if getattr(body, k) is not None}
    try:
        with store.as_user(user):
            return store.tracing.submit(body.prompt, body.transcoders, config, request_id=body.request_id or "")
    except ServiceError as error:
        raise from_service(
            error,
            "tracing",
            rename={"transcoders_uri": "transcoders", "prompt": "prompt", **{k: k for k in TRACE_FIELDS}},
        ) from None


@router.post("/circuits/{graph_id}/interventions", response_model=InterventionResult)
def intervene(store: Store, graph_id: GraphId, body: InterventionRequest, user: auth.Computer) -> dict[str, Any]:
    """Scale or clamp features of the graph's prompt and rerun the replacement model: top logits
    before and after."""
    _graph_or_404(store, graph_id)
    try:
        with store.as_user(user):
            return store.tracing.intervene(
                graph_id, [c.model_dump() for c in body.changes], body.top_k, body.freeze_active_set
            )
    except ServiceError as error:
        raise from_service(error, "tracing", rename={"changes": "changes"}) from None


@router.post("/circuits/{graph_id}/attention", response_model=AttentionExplanation)
def explain_attention(store: Store, graph_id: GraphId, body: AttentionRequest, user: auth.Computer) -> dict[str, Any]:
    """Why a head attended from `query_position` to `key_position` in the graph's prompt: its
    pre-softmax score split into the graph's nodes through the query and through the key."""
    _graph_or_404(store, graph_id)
    fields = ("layer", "head", "query_position", "key_position", "top_k")
    try:
        with store.as_user(user):
            return store.tracing.explain_attention(graph_id, *(getattr(body, k) for k in fields))
    except ServiceError as error:
        raise from_service(error, "tracing", rename={k: k for k in fields}) from None
