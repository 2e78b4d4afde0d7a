"""A small tokenizer interface so tiny test models need no vocabulary files."""

from __future__ import annotations

from typing import Any, Protocol


class Tokenizer(Protocol):
    bos_token_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_strings(self, ids: list[int]) -> list[str]: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255 and BOS as 256: for tiny random models in tests."""

    bos_token_id = 256
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_strings(self, ids: list[int]) -> list[str]:
        return [
            bytes([i]).decode("latin-1") if i < 256 else "<bos>" if i == self.bos_token_id else f"<{i}>" for i in ids
        ]


class HFTokenizer:
    """Adapter over a `transformers` tokenizer."""

    def __init__(self, tokenizer: Any):
        self.hf = tokenizer
        bos = tokenizer.bos_token_id
        if bos is None:
            bos = tokenizer.eos_token_id
        if bos is None:
            raise ValueError("the tokenizer has neither a BOS nor an EOS token to start contexts with")
        self.bos_token_id = int(bos)
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=False)["input_ids"]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.hf(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids)

    def token_strings(self, ids: list[int]) -> list[str]:
        return self.hf.batch_decode([[i] for i in ids])
