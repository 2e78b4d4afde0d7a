"""Choosing the next token (greedy, or temperature + top-p with a seed) and streaming its text."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from lm_saes.models import Tokenizer

MAX_NEW_TOKENS = 1024


class GenerationConfig(BaseModel):
    """How to continue the prompt; the default and the steered run share it (and its seed)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_new_tokens: int = Field(32, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.0, ge=0, le=100, description="0 is greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="sample from the smallest set of tokens with this mass")
    seed: int = Field(0, ge=0)
    stop: list[str] = Field(default_factory=list, max_length=16, description="end the text before any of these")
    stop_at_eos: bool = True
    use_cache: bool = True


def choose(logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator) -> int:
    """Next token from last-position logits [vocab]; sampling runs on the CPU so that a seed
    gives the same tokens on every device."""
    if cfg.temperature == 0:
        return int(logits.argmax())
    probs = (logits.float().cpu() / cfg.temperature).softmax(-1)
    if cfg.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        # a token is outside when the tokens ranked above it already hold top_p
        outside = sorted_probs.cumsum(-1) - sorted_probs >= cfg.top_p
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


class TextStream:
    """Text of the generated tokens, released as it becomes final.

    Held back: an incomplete UTF-8 character (decodes to U+FFFD) and any tail that could still
    become a stop sequence. A stop sequence ends the text just before it.
    """

    def __init__(self, tokenizer: Tokenizer, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""  # released so far
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; return the newly released text (sets `stopped` at a stop sequence)."""
        self.ids.append(token)
        full = self.tokenizer.decode(self.ids)
        hits = [i for i in (full.find(s, max(0, len(self.text) - len(s))) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return self._release(full[: min(hits)])
        if full.endswith("\ufffd"):
            return ""
        return self._release(full[: len(full) - self._partial_stop(full)])

    def flush(self) -> str:
        """Release everything held back (the generation ended without a stop)."""
        return "" if self.stopped else self._release(self.tokenizer.decode(self.ids))

    def _release(self, final: str) -> str:
        if not final.startswith(self.text):  # decoding rewrote released text (rare): skip
            return ""
        piece, self.text = final[len(self.text) :], final
        return piece

    def _partial_stop(self, full: str) -> int:
        """Length of the longest tail of `full` that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(full)), best, -1):
                if full.endswith(stop[:n]):
                    best = n
                    break
        return best
