"""What stands in for a model's MLPs in the replacement model: per-layer transcoders (written by
`lm-saes train` with a `[transcoders]` section as OUTPUT/transcoders.json) or one cross-layer
transcoder (`[clt]`, OUTPUT/clt/clt.json).

Both answer the same questions, per covered layer: the features' pre-activations and
activations from the layer's MLP input, and the layer's MLP output from the activations of the
layers that write to it (only itself for a per-layer transcoder; itself and every earlier
covered layer for a CLT). The replacement model, attribution and interventions only ask these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from lm_saes.saes import SparseAutoencoder, load_sae
from lm_saes.saes.crosslayer import CLT_SPEC_KEY, CrossLayerTranscoder, load_clt
from lm_saes.stores import ObjectNotFound, ObjectStore, open_store

SET_KEY = "transcoders.json"
CLT_FOLDER = "clt"


class SparseActs(NamedTuple):
    """One layer's active features as (position, feature, value) entries: decoding them costs
    O(active features x d_model) instead of a dense [T, d_sae] x [d_sae, d_model] product."""

    positions: torch.Tensor  # [n]
    features: torch.Tensor  # [n]
    values: torch.Tensor  # [n]

    def decode(self, weight: torch.Tensor, n_pos: int) -> torch.Tensor:
        """[n_pos, d]: sum of value x weight[feature] at each entry's position, for a decoder
        `weight` [d_sae, d]. (Attribution reads the features' edges from the gradients at the
        MLP outputs, so nothing differentiates through this.)"""
        rows = weight[self.features] * self.values.to(weight.dtype)[:, None]
        return torch.zeros(n_pos, weight.shape[1], dtype=weight.dtype, device=weight.device).index_add(
            0, self.positions, rows
        )


Acts = torch.Tensor | SparseActs  # one layer's activations: dense [T, d_sae] or sparse entries


class Transcoders:
    """The interface of a replacement model's MLP stand-ins (see the module docstring)."""

    location: str
    model: str
    hook_in: str  # template with {layer}
    hook_out: str
    layers: list[int]

    def hooks(self, layer: int) -> tuple[str, str]:
        return self.hook_in.format(layer=layer), self.hook_out.format(layer=layer)

    def modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def d_sae(self, layer: int) -> int:
        raise NotImplementedError

    def pre_acts(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Raw MLP input [T, d] -> pre-activations [T, d_sae]."""
        raise NotImplementedError

    def activate(self, layer: int, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.activate(layer, self.pre_acts(layer, x))

    def encoder(self, layer: int, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows [n, d], bias [n]): pre-activation of feature f = raw input . rows[f] + bias[f]."""
        raise NotImplementedError

    def sources(self, target: int) -> list[int]:
        """Covered layers whose features write to layer `target`'s MLP output."""
        raise NotImplementedError

    def targets(self, source: int) -> list[int]:
        """Covered layers whose MLP outputs layer `source`'s features write to, ascending."""
        return [layer for layer in self.layers if source in self.sources(layer)]

    def decoder(self, source: int, target: int) -> torch.Tensor:
        """[d_sae, d]: what `source`'s features add to `target`'s raw MLP output per unit."""
        raise NotImplementedError

    def output_bias(self, target: int) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, target: int, acts: Mapping[int, Acts], n_pos: int) -> torch.Tensor:
        """Layer `target`'s raw MLP output [n_pos, d] from its sources' activations."""
        out = self.output_bias(target).expand(n_pos, -1)
        for source in self.sources(target):
            layer_acts = acts[source]
            weight = self.decoder(source, target)
            if isinstance(layer_acts, SparseActs):
                out = out + layer_acts.decode(weight, n_pos)
            else:
                out = out + layer_acts.to(weight.dtype) @ weight
        return out

    @staticmethod
    def load(location: str, device: str = "cpu") -> Transcoders:
        """`location`: a per-layer set's folder (or its transcoders.json), or a CLT run's folder
        (or its clt folder, or clt.json); local or s3://."""
        location = location.rstrip("/")
        for key in (SET_KEY, CLT_SPEC_KEY):
            if location.endswith(key):
                location = location[: -len(key)].rstrip("/") or "."
        store = open_store(location)
        if store.exists(CLT_SPEC_KEY):
            return CrossLayerSet.from_clt(location, load_clt(store, device))
        if store.exists(f"{CLT_FOLDER}/{CLT_SPEC_KEY}"):
            return CrossLayerSet.from_clt(location, load_clt(store.child(CLT_FOLDER), device))
        return TranscoderSet.load(location, device)


def transcoders_manifest(store: ObjectStore) -> dict:
    """The manifest naming the model: a per-layer set's transcoders.json, or a CLT's clt.json
    (at the store's root or in its clt folder); ObjectNotFound when there is none. Reads JSON
    only, so a service can check a location before any weights are loaded."""
    for key in (SET_KEY, CLT_SPEC_KEY, f"{CLT_FOLDER}/{CLT_SPEC_KEY}"):
        if store.exists(key):
            return store.get_json(key)
    raise ObjectNotFound(f"{store.uri}: no {SET_KEY} or {CLT_SPEC_KEY}")


@dataclass
class TranscoderSet(Transcoders):
    location: str
    model: str
    hook_in: str
    hook_out: str
    by_layer: dict[int, SparseAutoencoder]

    @classmethod
    def load(cls, location: str, device: str = "cpu") -> Transcoders:
        """A per-layer set; a CLT's folder loads as a `CrossLayerSet` (see `Transcoders.load`)."""
        location = location.rstrip("/")
        if location.endswith(SET_KEY):
            location = location[: -len(SET_KEY)].rstrip("/") or "."
        store = open_store(location)
        if store.exists(CLT_SPEC_KEY) or store.exists(f"{CLT_FOLDER}/{CLT_SPEC_KEY}"):
            return Transcoders.load(location, device)
        try:
            manifest = store.get_json(SET_KEY)
        except ObjectNotFound:
            raise FileNotFoundError(
                f"no transcoders at {store.uri}: expected {SET_KEY} (train a set with `lm-saes train` and a "
                f"[transcoders] section) or {CLT_FOLDER}/{CLT_SPEC_KEY} (a [clt] run)"
            ) from None
        by_layer = {int(layer): load_sae(f"{location}/{path}", device) for layer, path in manifest["layers"].items()}
        for layer, sae in by_layer.items():
            if not sae.spec.is_transcoder:
                raise ValueError(f"{location}: layer {layer} holds an SAE, not a transcoder")
        return cls(
            location, manifest["model"], manifest["hook_in"], manifest["hook_out"], dict(sorted(by_layer.items()))
        )

    @property
    def layers(self) -> list[int]:  # type: ignore[override]
        return list(self.by_layer)

    def modules(self) -> list[nn.Module]:
        return list(self.by_layer.values())

    def d_sae(self, layer: int) -> int:
        return self.by_layer[layer].d_sae

    def pre_acts(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.by_layer[layer].raw_pre_acts(x)

    def activate(self, layer: int, pre: torch.Tensor) -> torch.Tensor:
        return self.by_layer[layer].activate(pre)

    def encoder(self, layer: int, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sae = self.by_layer[layer]
        return sae.W_enc[features] * sae.input_scale, sae.b_enc[features]

    def sources(self, target: int) -> list[int]:
        return [target] if target in self.by_layer else []

    def decoder(self, source: int, target: int) -> torch.Tensor:
        if source != target:
            raise ValueError(f"a per-layer transcoder writes only to its own layer ({source} -> {target})")
        sae = self.by_layer[source]
        return sae.W_dec / sae.output_scale

    def output_bias(self, target: int) -> torch.Tensor:
        sae = self.by_layer[target]
        return sae.b_dec / sae.output_scale


@dataclass
class CrossLayerSet(Transcoders):
    """A cross-layer transcoder as the replacement model's MLP stand-in (model layer numbers)."""

    location: str
    model: str
    hook_in: str
    hook_out: str
    clt: CrossLayerTranscoder

    @classmethod
    def from_clt(cls, location: str, clt: CrossLayerTranscoder) -> CrossLayerSet:
        return cls(location, clt.spec.model, clt.spec.hook_in, clt.spec.hook_out, clt)

    @property
    def layers(self) -> list[int]:  # type: ignore[override]
        return list(self.clt.layers)

    def modules(self) -> list[nn.Module]:
        return [self.clt]

    def d_sae(self, layer: int) -> int:
        return self.clt.d_sae

    def pre_acts(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.clt.layer_pre_acts(self.clt.index(layer), x)

    def activate(self, layer: int, pre: torch.Tensor) -> torch.Tensor:
        return self.clt.layer_activate(self.clt.index(layer), pre)

    def encoder(self, layer: int, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.clt.index(layer)
        return self.clt.W_enc[i][features] * self.clt.input_scale[i], self.clt.b_enc[i][features]

    def sources(self, target: int) -> list[int]:
        return [layer for layer in self.clt.layers if layer <= target] if target in self.clt.layers else []

    def decoder(self, source: int, target: int) -> torch.Tensor:
        return self.clt.decoder(self.clt.index(source), self.clt.index(target))

    def output_bias(self, target: int) -> torch.Tensor:
        return self.clt.output_bias(self.clt.index(target))
