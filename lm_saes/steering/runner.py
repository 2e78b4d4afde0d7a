"""One growing token sequence run through the model with hooks, on HF's KV cache.

Hooks are named as in TransformerLens (`blocks.6.hook_resid_post`, `blocks.6.mlp.hook_in`, ...).
Two backends run them, both extending HF's own cache object so the prefix is never recomputed:

- `HFBackend` (used when it can be): the bridge's HF model without the bridge, i.e. a plain
  `transformers` module tree holding the same weight tensors (shared, not copied), with hooks as
  PyTorch hooks on the module whose input or output the TransformerLens hook names. Measured on
  SmolLM2 (CPU, one token per step) the bridge costs ~1.5x a plain HF step: it reruns attention
  in Python with ~50 hook points per layer. It takes hooks that are a component's `hook_in` /
  `hook_out` (residual stream, MLP and attention in/out, norms) and is checked against the
  bridge on a probe sequence before first use for each set of hooks (≤ 1e-4 on logits and on
  the hooked values), else the bridge runs.
- `BridgeBackend`: the TransformerBridge itself; every hook point, including `attn.hook_pattern`
  (frozen attention needs it). One fix is needed: transformers 5.x passes the cache to attention
  modules as `cache`, while TransformerLens 4.3's attention bridges read `past_key_values` (or
  `layer_past`) and so silently attend to the new tokens alone. A forward pre-hook renames the
  argument during our own forwards only.

Both check that the cache grew by the positions run; a model whose cache does not (the native
`tiny` test model has none) reruns the whole sequence each step, which is correct, only slower.
Hooks are added per forward and removed after it, so two sequences on one model (default and
steered) can be stepped alternately.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import torch

from lm_saes.models import LanguageModel

log = logging.getLogger(__name__)
HookFn = Callable[[torch.Tensor], torch.Tensor]
Hook = tuple[str, HookFn]
HooksFor = Callable[[int, int], Sequence[Hook]]  # (start position, n positions) -> hooks
BRIDGE_PREFIX = "._original_component"
CACHED_BACKEND = "_steering_hf_backend"
PROBE_TOLERANCE = 1e-4  # float32, relative to the largest value compared (16-bit: 2e-2)


class Backend(Protocol):
    def run(self, chunk: torch.Tensor, cache: Any, hooks: Sequence[Hook], use_cache: bool) -> tuple[torch.Tensor, Any]:
        """Logits [1, n, vocab] of `chunk` [1, n] after the cached positions, and the cache."""
        ...


class Runner:
    """Feed tokens in, get the last position's logits; `use_cache=False` reruns everything."""

    def __init__(self, model: LanguageModel, backend: Backend, use_cache: bool = True):
        self.model = model
        self.backend = backend
        self.use_cache = use_cache
        self.tokens: list[int] = []
        self.cache: Any = None
        self.cached = 0  # positions held in the cache
        self.positions_run = 0  # total positions computed: tells cached and uncached runs apart

    @torch.no_grad()
    def forward(self, new_tokens: Sequence[int], hooks_for: HooksFor | None = None) -> torch.Tensor:
        """Append `new_tokens`, run what the cache lacks, return the last logits [vocab] (float)."""
        self.tokens.extend(int(t) for t in new_tokens)
        start = self.cached if self.cache is not None else 0
        chunk = torch.tensor([self.tokens[start:]], device=self.model.device)
        hooks = list(hooks_for(start, chunk.shape[1])) if hooks_for else []
        logits, cache = self.backend.run(chunk, self.cache, hooks, self.use_cache)
        if self.use_cache:
            self._keep(cache, len(self.tokens))
        self.positions_run += chunk.shape[1]
        return logits[0, -1].float()

    def _keep(self, cache: Any, length: int) -> None:
        if cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() == length:
            self.cache, self.cached = cache, length
            return
        if self.cache is None:
            log.info("%s: no usable KV cache; each step reruns the whole sequence", self.model.name)
        self.use_cache, self.cache, self.cached = False, None, 0


def _cache_argument(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
    if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
        kwargs["past_key_values"] = kwargs["cache"]
    return args, kwargs


class BridgeBackend:
    """The TransformerBridge, with every hook point."""

    def __init__(self, model: LanguageModel):
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

        self.model = model
        self.points = model.bridge.hook_dict  # name (aliases too) -> HookPoint
        self.attention = [m for m in model.bridge.modules() if isinstance(m, AttentionBridge)]

    def run(self, chunk: torch.Tensor, cache: Any, hooks: Sequence[Hook], use_cache: bool) -> tuple[torch.Tensor, Any]:
        handles = [m.register_forward_pre_hook(_cache_argument, with_kwargs=True) for m in self.attention]
        try:
            for name, fn in hooks:
                handles.append(self.points[name].register_forward_hook(_output_hook(fn)))
            if not use_cache:
                return self.model.bridge(chunk), None
            return self.model.bridge(chunk, return_type="logits_and_cache", use_cache=True, past_key_values=cache)
        finally:
            for handle in handles:
                handle.remove()


class HFBackend:
    """The bridge's HF model as plain `transformers` modules (weights shared), hooks on modules."""

    def __init__(self, model: LanguageModel):
        from transformers import AutoModelForCausalLM

        self.model = model
        original = model.bridge.original_model
        config = copy.deepcopy(original.config)
        with torch.device("meta"):
            self.hf_model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
        _share_tensors(original, self.hf_model)
        self.hf_model.eval()
        self.cache_kwarg = (
            "cache" if "cache" in inspect.signature(self.hf_model.forward).parameters else "past_key_values"
        )
        self.sites = _module_sites(model, original, self.hf_model)  # hook name -> (module, "in" | "out")
        self.checked: dict[frozenset[str], bool] = {}

    def supports(self, names: Sequence[str]) -> bool:
        """Whether these hooks run here, giving what the bridge gives (probed once per set)."""
        key = frozenset(names)
        if key not in self.checked:
            self.checked[key] = all(n in self.sites for n in key) and self._agrees(sorted(key))
        return self.checked[key]

    def run(
        self, chunk: torch.Tensor, cache: Any, hooks: Sequence[Hook], use_cache: bool, **inputs: torch.Tensor
    ) -> tuple[torch.Tensor, Any]:
        """`inputs`: more model inputs (a batch's `attention_mask` and `position_ids`)."""
        handles = []
        try:
            for name, fn in hooks:
                module, side = self.sites[name]
                if side == "out":
                    handles.append(module.register_forward_hook(_output_hook(fn)))
                else:
                    handles.append(module.register_forward_pre_hook(_input_hook(fn), with_kwargs=True))
            out = self.hf_model(
                input_ids=chunk,
                use_cache=use_cache,
                **({self.cache_kwarg: cache} if use_cache else {}),
                **inputs,
            )
        finally:
            for handle in handles:
                handle.remove()
        cache = getattr(out, "cache", None)  # transformers 5.x; `past_key_values` before
        return out.logits, cache if cache is not None else getattr(out, "past_key_values", None)

    @torch.no_grad()
    def _agrees(self, names: list[str]) -> bool:
        """Same logits and hooked values as the bridge on a probe sequence, uncached and cached."""
        vocab = int(self.model.bridge.cfg.d_vocab)
        probe = torch.arange(7, device=self.model.device)[None] * 37 % vocab
        seen: dict[str, dict[str, torch.Tensor]] = {"hf": {}, "bridge": {}}

        def keep(backend: str, name: str) -> HookFn:
            def fn(x: torch.Tensor) -> torch.Tensor:
                seen[backend][name] = x.detach().clone()
                return x

            return fn

        bridge_logits, _ = BridgeBackend(self.model).run(probe, None, [(n, keep("bridge", n)) for n in names], False)
        hf_logits, _ = self.run(probe, None, [(n, keep("hf", n)) for n in names], False)
        _, cache = self.run(probe[:, :4], None, [], True)
        step, _ = self.run(probe[:, 4:], cache, [], True)
        pairs = [(hf_logits, bridge_logits), (step, bridge_logits[:, 4:])]
        pairs += [(seen["hf"][n], seen["bridge"][n]) for n in names]
        tolerance = PROBE_TOLERANCE if bridge_logits.dtype == torch.float32 else 2e-2
        ok = all(_close(a, b, tolerance) for a, b in pairs)
        if not ok:
            log.warning(
                "%s: plain HF forward disagrees with the bridge on %s; using the bridge",
                self.model.name,
                names,
            )
        return ok


def hf_backend(model: LanguageModel) -> HFBackend | None:
    """The model's HFBackend (built once per model), or None where the bridge is not over a
    `transformers` model (the native tiny model) or its modules do not map back."""
    from transformers import PreTrainedModel

    if hasattr(model, CACHED_BACKEND):
        return getattr(model, CACHED_BACKEND)
    backend = None
    if isinstance(getattr(model.bridge, "original_model", None), PreTrainedModel):
        try:
            backend = HFBackend(model)
        except Exception as error:  # an architecture that does not map back: the bridge works
            log.warning("%s: no plain HF path (%s); steering uses the bridge", model.name, error)
    setattr(model, CACHED_BACKEND, backend)  # lives and dies with the model
    return backend


def _close(a: torch.Tensor, b: torch.Tensor, tolerance: float) -> bool:
    """Equal shapes and max |a - b| within `tolerance` x max(1, max |b|)."""
    scale = float(b.abs().max().clamp_min(1))
    return a.shape == b.shape and float((a - b).abs().max()) <= tolerance * scale


def _output_hook(fn: HookFn) -> Callable:
    def hook(module: torch.nn.Module, inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):  # attention modules return (output, weights)
            return (fn(output[0]), *output[1:])
        return fn(output)

    return hook


def _input_hook(fn: HookFn) -> Callable:
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

    return hook


def _share_tensors(bridged: torch.nn.Module, plain: torch.nn.Module) -> None:
    """Point every parameter and buffer of `plain` at the bridged model's tensor of that name."""
    tensors: dict[str, torch.Tensor] = {
        name.replace(BRIDGE_PREFIX, ""): t for name, t in bridged.named_parameters(remove_duplicate=False)
    }
    tensors.update((name.replace(BRIDGE_PREFIX, ""), t) for name, t in bridged.named_buffers(remove_duplicate=False))
    for name, _ in [
        *plain.named_parameters(remove_duplicate=False),
        *plain.named_buffers(remove_duplicate=False),
    ]:
        if name not in tensors:
            raise KeyError(f"no bridged tensor for {name}")
        owner_name, _, leaf = name.rpartition(".")
        owner = plain.get_submodule(owner_name)
        if leaf in owner._parameters:
            owner._parameters[leaf] = cast(torch.nn.Parameter, tensors[name])
        else:
            owner._buffers[leaf] = tensors[name]


def _module_sites(model: LanguageModel, bridged: torch.nn.Module, plain: torch.nn.Module) -> dict[str, tuple]:
    """TransformerLens hook name -> (plain HF module, "in" | "out") for components' boundary hooks."""
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    plain_modules = dict(plain.named_modules())
    hf_modules: dict[int, torch.nn.Module] = {}  # bridged HF module -> the plain one of that name
    for name, module in bridged.named_modules(remove_duplicate=False):  # bridges alias modules
        stripped = name.replace(BRIDGE_PREFIX, "")
        if stripped in plain_modules and id(module) not in hf_modules:
            hf_modules[id(module)] = plain_modules[stripped]
    boundary: dict[int, tuple[torch.nn.Module, str]] = {}
    for component in model.bridge.modules():
        if not isinstance(component, GeneralizedComponent):
            continue
        original = component.original_component
        if original is None or id(original) not in hf_modules:
            continue
        for side in ("in", "out"):
            point = getattr(component, f"hook_{side}", None)
            if point is not None and getattr(point, "hook_conversion", None) is None:
                boundary[id(point)] = (hf_modules[id(original)], side)
    points = model.bridge.hook_dict.items()
    return {name: boundary[id(point)] for name, point in points if id(point) in boundary}
