"""Document stores for analysis results: SQLite (embedded, the default) or MongoDB."""

from __future__ import annotations

from pathlib import Path

from lm_saes.stores.documents.base import DocumentStore
from lm_saes.stores.documents.sqlite import SQLiteDocumentStore


def open_document_store(uri: str | Path) -> DocumentStore:
    """`mongodb://host:port/db` (db defaults to lm_saes) opens MongoDB; `sqlite:///abs/path.db`
    or a plain file path opens (creating) a SQLite file."""
    text = str(uri)
    if text.startswith(("mongodb://", "mongodb+srv://")):
        from lm_saes.stores.documents.mongo import MongoDocumentStore

        return MongoDocumentStore(text)
    for prefix in ("sqlite://", "file://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    else:
        if "://" in text:
            raise ValueError(f"{uri!r}: unknown scheme; use mongodb://HOST:PORT/DB, sqlite:///PATH or a file path")
    if not text:
        raise ValueError(f"{uri!r} names no file; use sqlite:///ABSOLUTE/PATH.db")
    return SQLiteDocumentStore(text)


__all__ = ["DocumentStore", "SQLiteDocumentStore", "open_document_store"]
