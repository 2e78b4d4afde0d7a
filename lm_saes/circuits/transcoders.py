"""A set of per-layer transcoders that stands in for a model's MLPs (written by `lm-saes train`
with a `[transcoders]` section as OUTPUT/transcoders.json)."""

from __future__ import annotations

from dataclasses import dataclass

from lm_saes.saes import SparseAutoencoder, load_sae
from lm_saes.stores import ObjectNotFound, open_store

SET_KEY = "transcoders.json"


@dataclass
class TranscoderSet:
    location: str
    model: str
    hook_in: str  # template with {layer}
    hook_out: str
    by_layer: dict[int, SparseAutoencoder]

    @classmethod
    def load(cls, location: str, device: str = "cpu") -> TranscoderSet:
        """`location`: the set's folder (or s3:// prefix), or the transcoders.json inside it."""
        location = location.rstrip("/")
        if location.endswith(SET_KEY):
            location = location[: -len(SET_KEY)].rstrip("/") or "."
        store = open_store(location)
        try:
            manifest = store.get_json(SET_KEY)
        except ObjectNotFound:
            raise FileNotFoundError(
                f"no transcoder set at {store.uri}: expected {SET_KEY} (train one with "
                "`lm-saes train` and a [transcoders] section)"
            ) from None
        by_layer = {int(layer): load_sae(f"{location}/{path}", device) for layer, path in manifest["layers"].items()}
        for layer, sae in by_layer.items():
            if not sae.spec.is_transcoder:
                raise ValueError(f"{location}: layer {layer} holds an SAE, not a transcoder")
        return cls(
            location, manifest["model"], manifest["hook_in"], manifest["hook_out"], dict(sorted(by_layer.items()))
        )

    @property
    def layers(self) -> list[int]:
        return list(self.by_layer)

    def hooks(self, layer: int) -> tuple[str, str]:
        return self.hook_in.format(layer=layer), self.hook_out.format(layer=layer)
