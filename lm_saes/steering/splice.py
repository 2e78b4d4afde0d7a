"""Forward hooks that apply resolved feature changes to the positions of the chunk being run.

With a KV cache each forward runs only the new positions, so the hooks are told the absolute
position of the chunk's first token (`set_chunk`); a change applies where its position mask
holds, and positions already in the cache keep what was written there when they were run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from lm_saes.steering.interventions import Change, SteeringSAE

HookFn = Callable[[torch.Tensor], torch.Tensor]


class _Group:
    """All changes on one SAE: encoded once at its input hook, one delta added at its output."""

    def __init__(self, steering: SteeringSAE, changes: list[Change]):
        self.steering = steering
        self.changes = changes
        self.features = sorted({c.feature for c in changes})
        self.column = {f: j for j, f in enumerate(self.features)}
        sae = steering.sae
        self.rows = (sae.W_dec[self.features] / sae.output_scale).detach()  # [m, d_out], raw units
        self.encodes = any(c.needs_encoding for c in changes)
        self.masks: list[torch.Tensor] = []
        self.acts: torch.Tensor | None = None

    def set_chunk(self, positions: torch.Tensor, prompt_len: int) -> None:
        self.masks = [c.mask(positions, prompt_len) for c in self.changes]
        self.active = any(bool(m.any()) for m in self.masks)
        self.acts = None

    def read(self, x: torch.Tensor) -> torch.Tensor:
        """At the input hook: the current activations of the changed features, [batch, n, m]."""
        if self.active and self.encodes:
            flat = x.reshape(-1, self.steering.sae.spec.d_in)
            acts = self.steering.sae.encode(flat)[:, self.features]
            self.acts = acts.reshape(*x.shape[:2], len(self.features))
        return x

    def write(self, y: torch.Tensor) -> torch.Tensor:
        """At the output hook: y + (a' - a) @ decoder rows, only where a change applies."""
        if not self.active:
            return y
        if self.encodes and self.acts is None:
            raise RuntimeError(
                f"{self.steering.hook_out} ran before {self.steering.hook_in}; "
                "an SAE's input hook must come first in the forward pass"
            )
        rows = self.rows.to(y.device)
        before = self.acts if self.acts is not None else y.new_zeros(*y.shape[:2], len(self.features), dtype=rows.dtype)
        after = before.clone()
        for change, mask in zip(self.changes, self.masks, strict=True):
            j = self.column[change.feature]
            current = after[:, :, j]
            after[:, :, j] = torch.where(mask.to(y.device), _changed(change, current), current)
        delta = (after - before) @ rows
        self.acts = None
        return y + delta.to(y.dtype).reshape(y.shape)

    def read_write(self, x: torch.Tensor) -> torch.Tensor:
        """Both, at a hook that is the SAE's input and output."""
        return self.write(self.read(x))


def _changed(change: Change, current: torch.Tensor) -> torch.Tensor:
    if change.mode == "add":
        return current + change.value
    if change.mode == "clamp":
        return torch.full_like(current, change.value)
    if change.mode == "ablate":
        return torch.zeros_like(current)
    return current * change.value  # scale


def hook_names(saes: Mapping[str, SteeringSAE], changes: Mapping[str, list[Change]]) -> list[str]:
    """The hooks a splice of these changes runs (each changed SAE's input and output)."""
    return sorted(
        {h for sae_id, group in changes.items() if group for h in (saes[sae_id].hook_in, saes[sae_id].hook_out)}
    )


class Splice:
    """The hooks of one steered sequence; SAEs on the same hook apply in the order given."""

    def __init__(self, saes: Mapping[str, SteeringSAE], changes: Mapping[str, list[Change]], prompt_len: int):
        self.prompt_len = prompt_len
        self.groups = [_Group(saes[sae_id], group) for sae_id, group in changes.items() if group]
        self.hook_names = hook_names(saes, changes)

    def hooks(self, start: int, n: int) -> list[tuple[str, HookFn]]:
        """Hooks for a forward over absolute positions start..start+n-1."""
        positions = torch.arange(start, start + n)
        hooks: list[tuple[str, HookFn]] = []
        for group in self.groups:
            group.set_chunk(positions, self.prompt_len)
            if not group.active:
                continue
            if group.steering.hook_in == group.steering.hook_out:
                hooks.append((group.steering.hook_in, group.read_write))
            else:
                hooks.append((group.steering.hook_in, group.read))
                hooks.append((group.steering.hook_out, group.write))
        return hooks
