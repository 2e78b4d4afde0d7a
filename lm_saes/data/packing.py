"""Tokenize documents and pack them into fixed-length contexts that start with BOS."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch

from lm_saes.config import DataConfig
from lm_saes.data.sources import iter_texts
from lm_saes.models.tokenizers import Tokenizer


class TokenSplits(NamedTuple):
    train: torch.Tensor  # [n_train_contexts, context_size]
    eval: torch.Tensor  # [n_eval_contexts, context_size]


def pack(docs: Iterable[list[int]], bos: int, context_size: int, max_contexts: int) -> torch.Tensor:
    """Concatenate documents separated by BOS; cut into contexts of BOS + (context_size-1) tokens."""
    body = context_size - 1
    contexts: list[list[int]] = []
    stream: list[int] = []
    for doc in docs:
        stream.extend(doc)
        stream.append(bos)
        while len(stream) >= body and len(contexts) < max_contexts:
            contexts.append([bos, *stream[:body]])
            del stream[:body]
        if len(contexts) >= max_contexts:
            break
    if not contexts:
        raise ValueError(f"the text yields fewer than {body} tokens: too little for one context")
    return torch.tensor(contexts, dtype=torch.long)


def non_bos_tokens(contexts: torch.Tensor, bos: int) -> int:
    return int((contexts != bos).sum())


def load_token_splits(cfg: DataConfig, tokenizer: Tokenizer) -> TokenSplits:
    """Enough contexts for `max_tokens` training and `eval_tokens` held-out tokens, shuffled by seed."""
    body = cfg.context_size - 1
    n_train = -(-cfg.max_tokens // body)
    n_eval = -(-cfg.eval_tokens // body) if cfg.eval_tokens else 0
    encode_batch = getattr(tokenizer, "encode_batch", None)

    def docs():
        batch: list[str] = []
        for text in iter_texts(cfg.source, cfg.text_field):
            batch.append(text)
            if len(batch) == 64:
                yield from encode_batch(batch) if encode_batch else map(tokenizer.encode, batch)
                batch = []
        if batch:
            yield from encode_batch(batch) if encode_batch else map(tokenizer.encode, batch)

    contexts = pack(docs(), tokenizer.bos_token_id, cfg.context_size, n_train + n_eval)
    order = torch.randperm(len(contexts), generator=torch.Generator().manual_seed(cfg.seed))
    contexts = contexts[order]
    if len(contexts) < n_train + n_eval:  # small corpus: keep the eval share, train on the rest
        n_eval = min(n_eval, len(contexts) // 10) if n_eval else 0
    split = len(contexts) - n_eval
    return TokenSplits(train=contexts[:split], eval=contexts[split:])
