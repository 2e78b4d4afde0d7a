"""What a steering request changes: feature interventions, validated against the SAEs they name.

Every mode is a change of one feature's activation `a` at chosen positions, and the model goes on
with the hooked activation plus `(a' - a) x the feature's decoder row` (raw units, so divided by
the SAE's output scale):

- `add`: a' = a + strength (the decoder direction x strength, whatever the feature does);
- `clamp`: a' = strength;   - `ablate`: a' = 0;   - `scale`: a' = a x strength.

Adding only the change is the same as splicing the SAE in and keeping its error term:
decode(a') + (x - decode(a)) = x + decode(a') - decode(a). Only the chosen features change, the
SAE's reconstruction error never enters, and a clamp to the feature's own value is exactly the
plain model. `relative` strengths (add and clamp) are in units of the feature's largest
activation in its analysis, the scale users read on a feature page.

A transcoder (hook_in != hook_out) is encoded at its input hook and the change is added at its
output hook: the MLP output is replaced by transcoder output + error, with the features changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lm_saes.saes import SparseAutoencoder

Mode = Literal["add", "clamp", "ablate", "scale"]
Positions = Literal["prompt", "generated", "both"]
RELATIVE_MODES = ("add", "clamp")


class FeatureIntervention(BaseModel):
    """One feature of one SAE, changed from a token position on (position 0 is BOS)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sae: str = Field("", description="id of the SAE among those loaded; '' when only one is")
    feature: int = Field(..., ge=0)
    mode: Mode = "add"
    strength: float = Field(0.0, description="add: amount; clamp: value; scale: factor; ablate: unused")
    relative: bool = Field(False, description="strength in units of the feature's max activation (add, clamp)")
    positions: Positions = Field("both", description="prompt tokens, generated tokens, or both")
    from_token: int = Field(1, ge=0, description="first position steered; 0 is BOS, 1 the first prompt token")

    @model_validator(mode="after")
    def _consistent(self) -> FeatureIntervention:
        if self.relative and self.mode not in RELATIVE_MODES:
            raise ValueError(f"relative: only {RELATIVE_MODES} take a relative strength, not {self.mode!r}")
        if self.mode == "ablate" and self.strength != 0:
            raise ValueError("strength: ablate sets the activation to 0 and takes no strength")
        return self


@dataclass
class SteeringSAE:
    """An SAE to steer with, and its features' max activations (from its analysis) if known."""

    sae: SparseAutoencoder
    max_activation: torch.Tensor | None = None  # [d_sae]

    @property
    def hook_in(self) -> str:
        return self.sae.spec.input_hook

    @property
    def hook_out(self) -> str:
        return self.sae.spec.hook_out or self.sae.spec.input_hook


@dataclass(frozen=True)
class Change:
    """A validated intervention: which feature, what it becomes, and where."""

    feature: int
    mode: Mode
    value: float  # absolute: relative strengths already multiplied by the max activation
    positions: Positions
    from_token: int

    def mask(self, positions: torch.Tensor, prompt_len: int) -> torch.Tensor:
        """[n] bool: which of these absolute positions the change applies to."""
        chosen = positions >= self.from_token
        if self.positions == "prompt":
            chosen &= positions < prompt_len
        elif self.positions == "generated":
            chosen &= positions >= prompt_len
        return chosen

    @property
    def needs_encoding(self) -> bool:
        return self.mode != "add"


def resolve(interventions: Sequence[FeatureIntervention], saes: Mapping[str, SteeringSAE]) -> dict[str, list[Change]]:
    """Check each intervention against its SAE; {sae id: changes in request order}.

    Errors name the intervention and field: `interventions[2].feature: 5000 is out of range ...`.
    """
    out: dict[str, list[Change]] = {}
    for i, item in enumerate(interventions):
        where = f"interventions[{i}]"
        sae_id = item.sae or _only(saes, where)
        if sae_id not in saes:
            raise ValueError(f"{where}.sae: no SAE {sae_id!r} is loaded; loaded: {sorted(saes)}")
        steering = saes[sae_id]
        d_sae = steering.sae.d_sae
        if item.feature >= d_sae:
            raise ValueError(f"{where}.feature: {item.feature} is out of range for {sae_id!r} (0..{d_sae - 1})")
        value = item.strength
        if item.relative:
            value *= _max_activation(steering, sae_id, item.feature, where)
        if not math.isfinite(value):
            raise ValueError(f"{where}.strength: {item.strength} gives a non-finite value {value}")
        out.setdefault(sae_id, []).append(Change(item.feature, item.mode, value, item.positions, item.from_token))
    return out


def _only(saes: Mapping[str, SteeringSAE], where: str) -> str:
    if len(saes) != 1:
        raise ValueError(f"{where}.sae: name one of the loaded SAEs {sorted(saes)}")
    return next(iter(saes))


def _max_activation(steering: SteeringSAE, sae_id: str, feature: int, where: str) -> float:
    if steering.max_activation is None:
        raise ValueError(
            f"{where}.relative: SAE {sae_id!r} has no analysis to take max activations from; "
            "run `lm-saes analyze` on it or give an absolute strength"
        )
    peak = float(steering.max_activation[feature])
    if not peak > 0:
        raise ValueError(
            f"{where}.relative: feature {feature} of {sae_id!r} never fired in its analysis "
            f"(max activation {peak}); give an absolute strength"
        )
    return peak
