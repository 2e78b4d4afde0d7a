"""Circuit graphs: an empty list until the tracing work fills the store."""

from __future__ import annotations

from fastapi import APIRouter

from gateway import auth
from gateway.schemas import CircuitList

router = APIRouter(dependencies=[auth.read], tags=["circuits"])


@router.get("/circuits", response_model=CircuitList)
def list_circuits() -> CircuitList:
    return CircuitList(items=[], note="circuit tracing is not available yet; this list stays empty until it is")
