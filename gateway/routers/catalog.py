"""Reads of analysis results, straight from the document store (no service involved)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import ValidationError

from gateway import auth
from gateway.backends import Backends, backends
from gateway.errors import PROBLEMS, ApiProblem, not_found
from gateway.schemas import (
    MAX_INDEX,
    MAX_OFFSET,
    MAX_PAGE,
    Feature,
    FeaturePage,
    FeatureSort,
    Model,
    NeighbourKind,
    NeighbourPage,
    Sae,
    SaeDetail,
    SaeEvals,
    ScoreDistribution,
    TokenMatch,
)
from lm_saes.records import FeatureRecord, ModelRecord, SaeRecord

router = APIRouter(dependencies=[auth.read], tags=["catalog"], responses=PROBLEMS)
Store = Annotated[Backends, Depends(backends)]
SaeId = Annotated[str, Path(min_length=1, max_length=200)]
ModelName = Annotated[str | None, Query(max_length=200)]


def sae_or_404(store: Backends, sae_id: str) -> SaeRecord:
    sae = store.documents.get_sae(sae_id)
    if sae is None:
        raise not_found(f"no SAE {sae_id!r}")
    return sae


@router.get("/models", response_model=list[Model])
def list_models(store: Store) -> list[ModelRecord]:
    return store.documents.list_models()


@router.get("/saes", response_model=list[Sae])
def list_saes(store: Store, model: ModelName = None) -> list[SaeRecord]:
    """Every SAE with its evaluation metrics (optionally only those of `model`)."""
    return store.documents.list_saes(model)


@router.get("/saes/{sae_id}", response_model=SaeDetail)
def get_sae(store: Store, sae_id: SaeId) -> dict[str, Any]:
    return {**sae_or_404(store, sae_id).doc(), "analyses": store.documents.list_analyses(sae_id)}


@router.get("/saes/{sae_id}/evals", response_model=SaeEvals)
def get_evals(store: Store, sae_id: SaeId) -> SaeEvals:
    """The SAE's evaluation suite report (core metrics with KL and density, universality against
    another SAE, absorption, probing, ...), as `lm-saes eval --suite` stored it."""
    sae = sae_or_404(store, sae_id)
    if sae.evals is None:
        raise not_found(
            f"SAE {sae_id!r} has no evaluation suite report; run lm-saes eval --suite ... --sae-id {sae_id}"
        )
    try:
        return SaeEvals.model_validate(sae.evals)
    except ValidationError:  # written by another lm-saes version
        raise ApiProblem(
            409, f"SAE {sae_id!r}: its stored report does not fit this gateway's; run lm-saes eval again"
        ) from None


@router.get("/saes/{sae_id}/neighbours", response_model=NeighbourPage)
def list_neighbours(
    store: Store,
    sae_id: SaeId,
    partner: Annotated[str | None, Query(min_length=1, max_length=200, description="Only those in this SAE")] = None,
    kind: NeighbourKind | None = None,
    sort: FeatureSort = "index",
    order: Literal["asc", "desc"] = "asc",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> dict[str, Any]:
    """A page of the SAE's features (ordered as the feature listing) with their stored nearest
    neighbours: within the SAE by decoder cosine, in another SAE by activation correlation."""
    sae_or_404(store, sae_id)
    if partner is not None:
        sae_or_404(store, partner)
    items, total = store.documents.list_features(
        sae_id,
        sort=sort,
        descending=order == "desc",
        offset=offset,
        limit=limit,
        fields=["density", "max_activation", "neighbours"],
    )
    rows = [
        {
            "index": f.index,
            "density": f.density,
            "max_activation": f.max_activation,
            "neighbours": [
                n for n in f.neighbours if (partner is None or n.sae_id == partner) and (kind is None or n.kind == kind)
            ],
        }
        for f in items
    ]
    return {
        "sae_id": sae_id,
        "partner": partner,
        "kind": kind,
        "items": rows,
        "total": total,
        "offset": offset,
        "limit": limit,
        "sort": sort,
        "order": order,
    }


@router.get("/saes/{sae_id}/features", response_model=FeaturePage)
def list_features(
    store: Store,
    sae_id: SaeId,
    sort: FeatureSort = "index",
    order: Literal["asc", "desc"] = "asc",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> dict[str, Any]:
    """One page of feature summaries; ties are broken by index so pages never overlap."""
    sae_or_404(store, sae_id)
    items, total = store.documents.list_features(
        sae_id,
        sort=sort,
        descending=order == "desc",
        offset=offset,
        limit=limit,
        fields=["density", "max_activation", "mean_activation", "score"],
    )
    return {"items": items, "total": total, "offset": offset, "limit": limit, "sort": sort, "order": order}


@router.get("/saes/{sae_id}/scores", response_model=ScoreDistribution)
def score_distribution(store: Store, sae_id: SaeId, bins: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    """A histogram of the summary scores of the SAE's explained features (read from the
    store's summary rows in score order; no feature document is decoded)."""
    sae_or_404(store, sae_id)
    scores: list[float] = []
    offset, total = 0, 0
    while True:
        page, total = store.documents.list_features(
            sae_id, sort="score", descending=True, offset=offset, limit=MAX_PAGE, fields=["score"]
        )
        found = [f.score for f in page if f.score is not None]
        scores += found
        if len(found) < len(page) or len(page) < MAX_PAGE:
            break
        offset += MAX_PAGE
    counts = [0] * bins
    for score in scores:
        counts[min(bins - 1, max(0, int(score * bins + 1e-9)))] += 1  # 0.45 (0.4499..) in [0.45, 0.5)
    return {
        "total": total,
        "scored": len(scores),
        "mean": sum(scores) / len(scores) if scores else None,
        "edges": [i / bins for i in range(bins + 1)],
        "counts": counts,
    }


@router.get("/saes/{sae_id}/features/{index}", response_model=Feature)
def get_feature(store: Store, sae_id: SaeId, index: Annotated[int, Path(ge=0, le=MAX_INDEX)]) -> FeatureRecord:
    doc = store.documents.get_feature(sae_id, index)
    if doc is None:
        sae_or_404(store, sae_id)
        raise not_found(f"no feature {index} of SAE {sae_id!r} (not analyzed, or out of range)")
    return doc


@router.get("/saes/{sae_id}/search", response_model=list[TokenMatch])
def features_for_token(
    store: Store,
    sae_id: SaeId,
    token: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> list[TokenMatch]:
    """Features that peak on `token` (as stored by analysis), strongest first."""
    sae_or_404(store, sae_id)
    return store.documents.features_for_token(sae_id, token, limit)
