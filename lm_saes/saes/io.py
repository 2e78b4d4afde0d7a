"""Load a saved SAE from a local folder or an object-store URI."""

from __future__ import annotations

from lm_saes.dtypes import TORCH_DTYPES
from lm_saes.saes.base import SPEC_KEY, WEIGHTS_KEY, SparseAutoencoder
from lm_saes.saes.registry import build_sae, parse_spec
from lm_saes.saes.sharding import assembled_state
from lm_saes.stores import ObjectNotFound, ObjectStore, open_store


def load_sae(location: str | ObjectStore, device: str = "cpu") -> SparseAutoencoder:
    """`location` holds sae.json + sae.safetensors (a folder, s3:// URI or store); the feature
    shards of a feature-sharded save are assembled into one ordinary SAE."""
    store = open_store(location) if isinstance(location, str) else location
    try:
        spec = parse_spec(store.get_json(SPEC_KEY))
    except ObjectNotFound:
        raise FileNotFoundError(
            f"no SAE at {store.uri}: expected {SPEC_KEY} and {WEIGHTS_KEY} (the 'sae' folder of a run)"
        ) from None
    sae = build_sae(spec)
    sae.load_state_dict(assembled_state(store))
    return sae.to(device=device, dtype=TORCH_DTYPES[spec.dtype]).eval()
