"""Text sources: the offline default corpus, local .txt/.jsonl files, or HF datasets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".jsonl")


def iter_texts(source: str, text_field: str = "text") -> Iterator[str]:
    """Documents of `source`, in a fixed order.

    `default`: the offline Wikipedia corpus (built on first use); `hf:NAME[:SPLIT]`: a HF
    dataset, streamed (needs internet); otherwise a .txt file (one document), a .jsonl file
    (one document per line, in `text_field`) or a folder of such files.
    """
    if source == "default":
        from lm_saes.data.corpus import ensure_default_corpus

        yield from _iter_jsonl(ensure_default_corpus(), "text")
    elif source.startswith("hf:"):
        yield from _iter_hf(source[3:], text_field)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"data.source = {source!r} does not exist; use 'default', a .txt/.jsonl path "
                "or folder, or 'hf:DATASET[:SPLIT]'"
            )
        files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"data.source folder {path} has no .txt or .jsonl files")
        for file in files:
            if file.suffix == ".jsonl":
                yield from _iter_jsonl(file, text_field)
            else:
                yield file.read_text(encoding="utf-8", errors="replace")


def _iter_jsonl(path: Path, field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if field not in record:
                raise ValueError(f"{path}:{number} has no field {field!r}; set data.text_field")
            yield record[field]


def _iter_hf(spec: str, field: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise RuntimeError("HF datasets need `pip install datasets` (the 'hf' extra)") from None
    name, _, split = spec.partition(":")
    for record in datasets.load_dataset(name, split=split or "train", streaming=True):
        yield record[field]
