"""One growing token sequence run through the model with hooks, on HF's KV cache.

Why the bridge and not a separate HF model: steering hooks are TransformerLens hook names
(`blocks.6.hook_resid_post`, `blocks.6.mlp.hook_in`, `attn.hook_pattern` for frozen attention),
and the bridge resolves them for every architecture. Each step runs the bridge on the new tokens
with `past_key_values` (HF's own cache object), so a hook sees exactly the positions being
computed and the prefix is never recomputed.

One fix is needed for that: transformers 5.x passes the cache to attention modules as `cache`,
while TransformerLens 4.3's attention bridges read `past_key_values` (or `layer_past`) and so
silently attend to the new tokens alone. A forward pre-hook on each attention bridge renames the
argument for the duration of our own forwards only (nothing stays registered), and the first
step checks that the cache really grew; a model whose cache does not (the native `tiny` test
model has none) falls back to rerunning the whole sequence each step, which is correct, only
slower. Hooks are added per forward and removed after it, so two sequences on one model (default
and steered) can be stepped alternately.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from lm_saes.models import LanguageModel

log = logging.getLogger(__name__)
Hook = tuple[str, Callable[[torch.Tensor], torch.Tensor]]
HooksFor = Callable[[int, int], Sequence[Hook]]  # (start position, n positions) -> hooks


def _attention_bridges(model: LanguageModel) -> list[torch.nn.Module]:
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    return [m for m in model.bridge.modules() if isinstance(m, AttentionBridge)]


def _cache_argument(
    module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]
) -> tuple[tuple, dict]:
    if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
        kwargs["past_key_values"] = kwargs["cache"]
    return args, kwargs


class Runner:
    """Feed tokens in, get the last position's logits; `use_cache=False` reruns everything."""

    def __init__(
        self, model: LanguageModel, use_cache: bool = True, points: dict[str, Any] | None = None
    ):
        self.model = model
        self.use_cache = use_cache
        self.tokens: list[int] = []
        self.cache: Any = None
        self.cached = 0  # positions held in the cache
        self.positions_run = 0  # total positions computed: tells cached and uncached runs apart
        self._points = points if points is not None else model.bridge.hook_dict  # name -> HookPoint
        self._attention = _attention_bridges(model) if use_cache else []

    @torch.no_grad()
    def forward(self, new_tokens: Sequence[int], hooks_for: HooksFor | None = None) -> torch.Tensor:
        """Append `new_tokens`, run what the cache lacks, return the last logits [vocab] (float)."""
        self.tokens.extend(int(t) for t in new_tokens)
        start = self.cached if self.cache is not None else 0
        chunk = torch.tensor([self.tokens[start:]], device=self.model.device)
        hooks = list(hooks_for(start, chunk.shape[1])) if hooks_for else []
        with self._hooks(hooks):
            if self.use_cache:
                logits, cache = self.model.bridge(
                    chunk,
                    return_type="logits_and_cache",
                    use_cache=True,
                    past_key_values=self.cache,
                )
                self._keep(cache, len(self.tokens))
            else:
                logits = self.model.bridge(chunk)
        self.positions_run += chunk.shape[1]
        return logits[0, -1].float()

    def _keep(self, cache: Any, length: int) -> None:
        grown = (
            cache is not None
            and hasattr(cache, "get_seq_length")
            and cache.get_seq_length() == length
        )
        if grown:
            self.cache, self.cached = cache, length
            return
        if self.cache is None:
            log.info("%s: no usable KV cache; each step reruns the whole sequence", self.model.name)
        self.use_cache, self.cache, self.cached = False, None, 0

    @contextmanager
    def _hooks(self, hooks: Sequence[Hook]) -> Iterator[None]:
        handles = [
            m.register_forward_pre_hook(_cache_argument, with_kwargs=True) for m in self._attention
        ]
        try:
            for name, fn in hooks:
                handles.append(
                    self._points[name].register_forward_hook(
                        lambda module, inputs, output, fn=fn: fn(output)
                    )
                )
            yield
        finally:
            for handle in handles:
                handle.remove()
