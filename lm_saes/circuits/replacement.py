"""The replacement model of one prompt: the real model with its nonlinear parts frozen.

Attention patterns and normalization scales are taken from the real forward pass, and every
MLP output is rebuilt as transcoder output + error node (real output - transcoder output); MLPs
without a transcoder enter whole as error nodes. The transcoders are per-layer ones or one
cross-layer transcoder (lm_saes.circuits.transcoders): with a CLT, an MLP output is decoded from
the features of its own and of every earlier covered layer, which changes nothing below. With everything else frozen, the residual
stream is a linear function of the token embeddings, the feature activations and the error
nodes, which is what makes attribution edges exact. Unperturbed, it reproduces the real
logits; with interventions, downstream features are recomputed by their transcoders.

The model runs through TransformerLens hooks (`*.hook_scale`, `*.attn.hook_pattern`, the
transcoders' MLP hooks), so any architecture the bridge supports works, tiny test models and
SmolLM2 alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from lm_saes.circuits.transcoders import Acts, SparseActs, Transcoders
from lm_saes.models import LanguageModel

EMBED_HOOK = "blocks.0.hook_resid_pre"  # token (+ position) embedding entering the residual stream
FROZEN_SUFFIXES = ("hook_scale", "attn.hook_pattern")


@dataclass
class Intervention:
    """Change one feature's activation: multiply it (`scale`) or set it (`clamp`)."""

    layer: int
    position: int
    feature: int
    value: float
    mode: Literal["scale", "clamp"] = "scale"


@dataclass
class PromptState:
    """What the real forward pass fixes for one prompt (batch dimension dropped)."""

    tokens: torch.Tensor  # [T]
    frozen: dict[str, torch.Tensor]  # hook -> value with batch dim: norm scales, attention patterns
    embed: torch.Tensor  # [T, d_model]
    mlp_in: dict[int, torch.Tensor]  # layer -> [T, d_model], every layer
    logits: torch.Tensor  # [T, vocab]
    acts: dict[int, torch.Tensor]  # covered layer -> [T, d_sae] transcoder activations
    errors: dict[int, torch.Tensor]  # every layer -> [T, d_model]: real MLP output - transcoder output


class ReplacementOutput(NamedTuple):
    logits: torch.Tensor  # [T, vocab]
    mlp_in: dict[int, torch.Tensor]  # layer -> [T, d_model] (with grad when inputs have it)
    acts: dict[int, torch.Tensor]  # covered layer -> [T, d_sae] activations used (not layers given sparse)
    captured: dict[str, torch.Tensor] | None = None  # the `capture` hooks' values (batch dim dropped)


class ReplacementModel:
    def __init__(self, model: LanguageModel, transcoders: Transcoders):
        if transcoders.model and transcoders.model != model.name:
            raise ValueError(
                f"transcoders at {transcoders.location} were trained on {transcoders.model!r}, "
                f"not {model.name!r}; load that model"
            )
        self.model = model
        self.transcoders = transcoders
        self.layers = range(model.n_layers)
        bad = [layer for layer in transcoders.layers if layer not in self.layers]
        if bad:
            raise ValueError(f"transcoder layers {bad} do not exist in {model.name} ({model.n_layers} layers)")
        self.mlp_hooks = {layer: transcoders.hooks(layer) for layer in self.layers}
        model.check_hooks([EMBED_HOOK, *(h for pair in self.mlp_hooks.values() for h in pair)])
        self.frozen_hooks = [h for h in model.bridge.hook_dict if h.endswith(FROZEN_SUFFIXES)]
        model.bridge.requires_grad_(False)  # gradients are only ever taken w.r.t. graph nodes
        for module in transcoders.modules():
            module.requires_grad_(False)
        self.covered = set(transcoders.layers)

    @property
    def n_layers(self) -> int:
        return self.model.n_layers

    @torch.no_grad()
    def prepare(self, tokens: torch.Tensor) -> PromptState:
        """Run the real model on `tokens` [T] and record everything the replacement freezes."""
        tokens = tokens.to(self.model.device)
        cache: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable:
            def fn(tensor: torch.Tensor, hook) -> torch.Tensor:
                cache[name] = tensor.detach().clone()
                return tensor

            return fn

        names = [*self.frozen_hooks, EMBED_HOOK, *(h for pair in self.mlp_hooks.values() for h in pair)]
        logits = self.model.bridge.run_with_hooks(tokens[None], fwd_hooks=[(n, keep(n)) for n in names])
        mlp_in = {layer: cache[hook_in][0] for layer, (hook_in, _) in self.mlp_hooks.items()}
        acts: dict[int, torch.Tensor] = {}
        errors = {}
        for layer, (_, hook_out) in self.mlp_hooks.items():
            real_out = cache[hook_out][0]
            if layer not in self.covered:
                errors[layer] = real_out
                continue
            acts[layer] = self.transcoders.encode(layer, mlp_in[layer]).to(real_out.dtype)
            decoded = self.transcoders.decode(layer, acts, len(tokens))
            errors[layer] = real_out - decoded.to(real_out.dtype)
        return PromptState(
            tokens,
            {h: cache[h] for h in self.frozen_hooks},
            cache[EMBED_HOOK][0],
            mlp_in,
            logits[0].detach(),
            acts,
            errors,
        )

    def forward(
        self,
        state: PromptState,
        embed: torch.Tensor | None = None,
        errors: dict[int, torch.Tensor] | None = None,
        acts: Mapping[int, torch.Tensor | SparseActs] | None = None,
        interventions: Sequence[Intervention] = (),
        freeze_active_set: bool = False,
        capture: Sequence[str] = (),
    ) -> ReplacementOutput:
        """Run the replacement model; inputs default to the prompt's own values.

        `acts` given for a layer are used as they are, dense or sparse (attribution's inputs);
        missing layers are recomputed by their transcoder from this run's MLP input, then
        `interventions` apply. Gradients flow when the inputs require them.

        `freeze_active_set` recomputes features with the prompt's own active set: active features
        follow their pre-activation (ReLU), no other feature switches on. That is the local linear
        model the attribution graph describes; without it a TopK transcoder reselects its top k,
        and over many layers small changes can flip selections (real, but discontinuous).
        """
        embed = state.embed if embed is None else embed
        errors = state.errors if errors is None else errors
        given = dict(acts or {})
        current: dict[int, Acts] = {}  # each covered layer's activations, set when its input is read
        used: dict[int, torch.Tensor] = {}
        mlp_in: dict[int, torch.Tensor] = {}
        by_layer: dict[int, list[Intervention]] = {}
        for change in interventions:
            self._check_intervention(change, state)
            by_layer.setdefault(change.layer, []).append(change)
        n_pos = len(state.tokens)

        def frozen(tensor: torch.Tensor, hook) -> torch.Tensor:
            return state.frozen[hook.name]

        def embedding(tensor: torch.Tensor, hook) -> torch.Tensor:
            return embed[None].to(tensor.dtype)

        def read_mlp_in(layer: int) -> Callable:
            def fn(tensor: torch.Tensor, hook) -> torch.Tensor:
                mlp_in[layer] = tensor[0]
                if layer in self.covered:
                    current[layer] = self._layer_acts(
                        layer, tensor[0], given.get(layer), state, by_layer, freeze_active_set
                    )
                    if not isinstance(current[layer], SparseActs):
                        used[layer] = current[layer]  # type: ignore[assignment]
                return tensor

            return fn

        def write_mlp_out(layer: int) -> Callable:
            def fn(tensor: torch.Tensor, hook) -> torch.Tensor:
                if layer not in self.covered:
                    return errors[layer][None].to(tensor.dtype)
                return (self.transcoders.decode(layer, current, n_pos) + errors[layer])[None].to(tensor.dtype)

            return fn

        captured: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable:  # by the name asked for: the bridge's aliases differ
            def fn(tensor: torch.Tensor, hook) -> torch.Tensor:
                captured[name] = tensor[0]
                return tensor

            return fn

        hooks: list[tuple[str | Callable, Callable]] = [(h, frozen) for h in self.frozen_hooks]
        hooks += [(name, keep(name)) for name in capture]
        hooks.append((EMBED_HOOK, embedding))
        for layer, (hook_in, hook_out) in self.mlp_hooks.items():
            hooks += [(hook_in, read_mlp_in(layer)), (hook_out, write_mlp_out(layer))]
        self._check_frozen_names(state)
        logits = self.model.bridge.run_with_hooks(state.tokens[None], fwd_hooks=hooks)
        return ReplacementOutput(logits[0], mlp_in, used, captured)

    def _layer_acts(
        self,
        layer: int,
        x: torch.Tensor,
        given: Acts | None,
        state: PromptState,
        by_layer: dict[int, list[Intervention]],
        freeze_active_set: bool,
    ) -> Acts:
        """A covered layer's activations in this run: given, or recomputed from its MLP input
        (with the prompt's active set when frozen), then the interventions on it."""
        if isinstance(given, SparseActs):
            if layer in by_layer:
                raise ValueError(f"layer {layer}: interventions need dense activations, not SparseActs")
            return given
        if given is None and freeze_active_set:
            given = self.transcoders.pre_acts(layer, x).relu() * (state.acts[layer] > 0)
        elif given is None:
            given = self.transcoders.encode(layer, x)
        return apply_interventions(given, by_layer[layer]) if layer in by_layer else given

    def _check_frozen_names(self, state: PromptState) -> None:
        missing = [h for h in self.frozen_hooks if h not in state.frozen]
        if missing:
            raise ValueError(f"prompt state lacks frozen values for {missing[:3]}; prepare it with this model")

    def _check_intervention(self, change: Intervention, state: PromptState) -> None:
        if change.layer not in self.covered:
            raise ValueError(f"intervention layer {change.layer} has no transcoder; covered: {self.transcoders.layers}")
        if not 0 <= change.position < len(state.tokens):
            raise ValueError(
                f"intervention position {change.position} is outside the prompt (0..{len(state.tokens) - 1})"
            )
        d_sae = self.transcoders.d_sae(change.layer)
        if not 0 <= change.feature < d_sae:
            raise ValueError(f"intervention feature {change.feature} is outside 0..{d_sae - 1}")
        if change.mode not in ("scale", "clamp"):
            raise ValueError(f"intervention mode {change.mode!r} must be 'scale' or 'clamp'")


def apply_interventions(acts: torch.Tensor, changes: Sequence[Intervention]) -> torch.Tensor:
    """[T, d_sae] activations with the changes applied (a new tensor)."""
    acts = acts.clone()
    for change in changes:
        current = acts[change.position, change.feature]
        acts[change.position, change.feature] = current * change.value if change.mode == "scale" else change.value
    return acts
