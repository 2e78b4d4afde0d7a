"""Live compute on new text, through the ActivationService (scope `compute`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from gateway import auth
from gateway.backends import Backends, backends
from gateway.errors import PROBLEMS, from_service, invalid
from gateway.routers.catalog import sae_or_404
from gateway.schemas import (
    ActivationRequest,
    ActivationResponse,
    TextSearchRequest,
    TextSearchResponse,
)
from lm_saes.auth import Principal
from lm_saes.rpc.client import ServiceError

router = APIRouter(tags=["compute"], responses=PROBLEMS)
Store = Annotated[Backends, Depends(backends)]
SaeId = Annotated[str, Path(min_length=1, max_length=200)]
# The activation service names its request fields; these are the gateway's names for them.
FIELDS = {"features": "feature", "text": "text", "top_k": "top_k", "sae_id": "sae_id"}


def _checked_text(store: Backends, text: str) -> None:
    if len(text) > store.settings.max_text_chars:
        raise invalid("text", f"{len(text)} characters is more than the limit of {store.settings.max_text_chars}")


def _features(
    store: Backends, user: Principal, sae_id: str, text: str, top_k: int = 5, features: list[int] | None = None
) -> list[dict[str, Any]]:
    try:
        with store.as_user(user):
            return store.activation.feature_activations(sae_id, text, top_k=top_k, features=features)
    except ServiceError as error:
        raise from_service(error, "activation", rename=FIELDS) from None


@router.post("/saes/{sae_id}/activations", response_model=ActivationResponse)
def activations(store: Store, sae_id: SaeId, body: ActivationRequest, user: auth.Computer) -> dict[str, Any]:
    """Per token of `text`: its `top_k` strongest features, or only `feature`'s value."""
    _checked_text(store, body.text)
    sae = sae_or_404(store, sae_id)
    if body.feature is not None and sae.d_sae is not None and body.feature >= sae.d_sae:
        raise invalid("feature", f"must be < d_sae = {sae.d_sae}, got {body.feature}")
    features = [body.feature] if body.feature is not None else None
    tokens = _features(store, user, sae_id, body.text, top_k=body.top_k, features=features)
    return {"sae_id": sae_id, "feature": body.feature, "tokens": tokens}


@router.post("/saes/{sae_id}/search", response_model=TextSearchResponse)
def features_for_text(store: Store, sae_id: SaeId, body: TextSearchRequest, user: auth.Computer) -> dict[str, Any]:
    """Which features fire most on `text`: activations summed (or maxed) over its tokens."""
    _checked_text(store, body.text)
    sae = sae_or_404(store, sae_id)
    top_k = min(store.settings.search_token_top_k, int(sae.d_sae or store.settings.search_token_top_k))
    tokens = _features(store, user, sae_id, body.text, top_k=top_k)
    totals: dict[int, dict[str, Any]] = {}
    for token in tokens:
        for feature in token["features"]:
            if feature["value"] <= 0:
                continue
            entry = totals.setdefault(
                feature["index"],
                {
                    "index": feature["index"],
                    "sum": 0.0,
                    "max": 0.0,
                    "max_position": token["position"],
                    "tokens_active": 0,
                },
            )
            entry["sum"] += feature["value"]
            entry["tokens_active"] += 1
            if feature["value"] > entry["max"]:
                entry["max"], entry["max_position"] = feature["value"], token["position"]
    ranked = sorted(totals.values(), key=lambda e: (-e[body.rank_by], e["index"]))
    return {
        "sae_id": sae_id,
        "rank_by": body.rank_by,
        "tokens": [t["token"] for t in tokens],
        "features": ranked[: body.limit],
    }
