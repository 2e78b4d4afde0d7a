"""Search features by meaning: a vector index over the embeddings of their explanations."""

from lm_saes.search.features import FeatureSearch, SearchHit, SearchNotReady
from lm_saes.search.index import VectorIndex

__all__ = ["FeatureSearch", "SearchHit", "SearchNotReady", "VectorIndex"]
