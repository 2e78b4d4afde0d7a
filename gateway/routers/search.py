"""Feature search by meaning: GET /search, answered by the AnalysisService (scope `read`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from gateway import auth
from gateway.backends import Backends, backends
from gateway.errors import PROBLEMS, from_service, invalid
from gateway.schemas import MAX_HITS, MAX_ID, MAX_QUERY, SearchResults
from lm_saes.rpc.client import ServiceError

router = APIRouter(tags=["catalog"], responses=PROBLEMS)
Store = Annotated[Backends, Depends(backends)]
FIELDS = {"query": "q", "k": "k", "sae_id": "sae_id"}  # the service's field names -> these parameters


@router.get("/search", response_model=SearchResults)
def search_features(
    store: Store,
    user: auth.Reader,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY, description="What the features should mean")],
    k: Annotated[int, Query(ge=1, le=MAX_HITS)] = 10,
    sae_id: Annotated[str | None, Query(min_length=1, max_length=MAX_ID, description="Only this SAE")] = None,
) -> dict[str, Any]:
    """Features whose explanations are nearest `q` in meaning (cosine of sentence embeddings),
    most similar first, across every SAE or only `sae_id`'s."""
    if not q.strip():
        raise invalid("q", "must not be blank")
    if "\x00" in q:
        raise invalid("q", "must not contain NUL characters")
    try:
        with store.as_user(user):
            hits = store.analysis.search_features(q.strip(), k=k, sae_id=sae_id or "")
    except ServiceError as error:
        raise from_service(error, "analysis", rename=FIELDS) from None
    return {"query": q, "k": k, "sae_id": sae_id, "hits": hits}
