"""A language model with TransformerLens hook names: the packaged SmolLM2, HF models, tiny ones.

Everything goes through TransformerLens 4's `TransformerBridge`, so hook names are the familiar
`blocks.6.hook_resid_post`, `blocks.3.hook_mlp_out`, ... for every architecture.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lm_saes.config import ModelConfig
from lm_saes.dtypes import TORCH_DTYPES
from lm_saes.models.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger(__name__)
_LAYER = re.compile(r"^blocks\.(\d+)\.")
TINY_LLAMA = "tiny-llama"


@dataclass
class LanguageModel:
    name: str
    bridge: TransformerBridge
    tokenizer: Tokenizer

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    def check_hooks(self, hooks: Iterable[str]) -> None:
        """Raise a ValueError naming close matches for hooks the model does not have."""
        check_hooks(self.name, set(self.bridge.hook_dict), hooks)

    def stop_layer(self, hooks: Iterable[str]) -> int | None:
        """First block that no hook needs: the forward pass stops before it."""
        layers = [hook_layer(h) for h in hooks]
        known = [layer for layer in layers if layer is not None]
        if len(known) < len(layers):
            return None
        last = max(known) + 1
        return None if last >= self.n_layers else last

    @torch.no_grad()
    def activations(self, tokens: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
        """Run only as far as the deepest hook; return {hook: [batch, pos, d]}."""
        _, captured = self._run(tokens, capture=hooks, stop_at_layer=self.stop_layer(hooks))
        return captured

    @torch.no_grad()
    def loss_per_token(
        self,
        tokens: torch.Tensor,
        capture: list[str] | tuple[str, ...] = (),
        replace: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Next-token cross-entropy [batch, pos-1] and the captured hooks.

        `replace` maps a hook to a function of its value whose result the model continues with;
        captures run first, so a replacement may use a hook captured earlier in the pass.
        """
        return self._run(tokens, capture=capture, replace=replace, return_type="loss")

    @torch.no_grad()
    def logits(
        self,
        tokens: torch.Tensor,
        capture: list[str] | tuple[str, ...] = (),
        replace: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits [batch, pos, vocab] and the captured hooks; `replace` as in `loss_per_token`."""
        return self._run(tokens, capture=capture, replace=replace, return_type="logits")

    def _run(self, tokens, capture=(), replace=None, stop_at_layer=None, return_type=None):
        captured: dict[str, torch.Tensor] = {}

        def capture_fn(name: str) -> Callable:
            def fn(tensor: torch.Tensor, hook) -> torch.Tensor:
                captured[name] = tensor.detach()
                return tensor

            return fn

        def replace_fn(fn: Callable) -> Callable:
            return lambda tensor, hook: fn(tensor)

        hooks = [(h, capture_fn(h)) for h in capture]
        hooks += [(h, replace_fn(fn)) for h, fn in (replace or {}).items()]
        kwargs = {"return_type": return_type, "loss_per_token": True} if return_type == "loss" else {}
        out = self.bridge.run_with_hooks(tokens.to(self.device), fwd_hooks=hooks, stop_at_layer=stop_at_layer, **kwargs)
        return out, captured


def hook_layer(hook: str) -> int | None:
    """`blocks.6.hook_resid_post` -> 6; hooks outside the blocks -> None (needs a full pass)."""
    match = _LAYER.match(hook)
    if match:
        return int(match.group(1))
    if hook.startswith(("hook_embed", "embed", "hook_pos_embed", "pos_embed")):
        return -1
    return None


def check_hooks(model: str, known: set[str], hooks: Iterable[str]) -> None:
    """Raise a ValueError naming close matches for `hooks` not in `known` (echoes cut short)."""
    for hook in hooks:
        if hook not in known:
            layer = hook_layer(hook) if len(hook) <= 200 else None
            examples = sorted(h for h in known if h.startswith(f"blocks.{layer or 0}.hook_"))[:8]
            shown = repr(hook[:100]) + ("..." if len(hook) > 100 else "")
            raise ValueError(f"model {model!r} has no hook {shown}; e.g. {examples}")


def load_language_model(cfg: ModelConfig) -> LanguageModel:
    """Build the model named in `cfg` on its device and dtype, in eval mode."""
    dtype = TORCH_DTYPES[cfg.dtype]
    if cfg.name == "tiny":
        return _tiny_model(cfg, dtype)
    if cfg.name == TINY_LLAMA:
        return _tiny_llama(cfg, dtype)
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.model_bridge.sources import transformers as _tl_transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from lm_saes.models.smollm2 import PACKAGED_NAME, smollm2_checkpoint

    hf_logging.disable_progress_bar()
    source: str | Path = smollm2_checkpoint() if cfg.name == PACKAGED_NAME else cfg.name
    if isinstance(source, str) and Path(source).expanduser().is_dir():
        source = Path(source).expanduser()
    hf_tokenizer = AutoTokenizer.from_pretrained(source)
    hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    bridge = TransformerBridge.boot_transformers(
        str(cfg.name), hf_model=hf_model, tokenizer=hf_tokenizer, dtype=dtype, device=cfg.device
    )
    bridge.eval()
    return LanguageModel(cfg.name, bridge, HFTokenizer(hf_tokenizer))


def _tiny_model(cfg: ModelConfig, dtype: torch.dtype) -> LanguageModel:
    """A random TransformerBridge model with a byte tokenizer: builds in milliseconds."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.model_bridge.sources import native as _tl_native  # noqa: F401

    tokenizer = ByteTokenizer()
    d_model = cfg.tiny_d_model
    n_heads = max(1, d_model // 16)
    tl_cfg = TransformerBridgeConfig(
        d_model=d_model,
        n_layers=cfg.tiny_layers,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=4 * d_model,
        d_vocab=max(cfg.tiny_vocab, tokenizer.vocab_size),
        n_ctx=1024,
        act_fn="gelu",
        normalization_type="LN",
        seed=cfg.seed,
    )
    # boot_native is attached to the class by setattr in sources.native, unseen by mypy.
    bridge = TransformerBridge.boot_native(tl_cfg, device=cfg.device, dtype=dtype)  # type: ignore[attr-defined]
    bridge.eval()
    return LanguageModel("tiny", bridge, tokenizer)


def _tiny_llama(cfg: ModelConfig, dtype: torch.dtype) -> LanguageModel:
    """A random Llama (SmolLM2's architecture) through the HF path, with a byte-level tokenizer.

    Unlike `tiny` it has what the HF models have, a KV cache and grouped-query attention, so
    code paths that need them (steered generation) are tested in milliseconds without files.
    """
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.model_bridge.sources import transformers as _tl_transformers  # noqa: F401
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    rust = RustTokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[]))
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    rust.decoder = decoders.ByteLevel()
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=rust,
        bos_token="<bos>",
        eos_token="<bos>",
        add_bos_token=True,
        name_or_path=TINY_LLAMA,
    )
    d_model = cfg.tiny_d_model
    n_heads = max(2, d_model // 16)
    torch.manual_seed(cfg.seed)
    hf_model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=max(cfg.tiny_vocab, len(hf_tokenizer)),
            hidden_size=d_model,
            intermediate_size=4 * d_model,
            num_hidden_layers=cfg.tiny_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_heads // 2,
            max_position_embeddings=1024,
            bos_token_id=hf_tokenizer.bos_token_id,
            eos_token_id=hf_tokenizer.eos_token_id,
            tie_word_embeddings=True,
        )
    ).to(dtype)  # type: ignore[arg-type]  # transformers types `to` through functools.wraps
    bridge = TransformerBridge.boot_transformers(
        TINY_LLAMA, hf_model=hf_model, tokenizer=hf_tokenizer, dtype=dtype, device=cfg.device
    )
    bridge.eval()
    return LanguageModel(TINY_LLAMA, bridge, HFTokenizer(hf_tokenizer))
