"""Storage: object stores for tensors and artifacts (document stores join with analysis)."""

from lm_saes.stores.object_store import (
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    open_store,
)

__all__ = ["LocalObjectStore", "ObjectNotFound", "ObjectStore", "S3ObjectStore", "open_store"]
