"""The embedded default: one SQLite file, no server.

WAL mode lets one writer and any number of readers (other processes included) work at once:
readers see the last committed state. Each `put_features` batch, with its rows in the token
side table, is one transaction, so a reader sees none or all of a batch.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lm_saes.stores.documents.base import (
    SUMMARY_FIELDS,
    DocumentStore,
    Kind,
    project,
    token_entries,
)

SCHEMA_VERSION = 2  # 2: features.score (the explanation's summary score, a sort key)
SCHEMA = """
CREATE TABLE IF NOT EXISTS models (key TEXT PRIMARY KEY, owner TEXT, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS saes (key TEXT PRIMARY KEY, owner TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS saes_owner ON saes (owner, key);
CREATE TABLE IF NOT EXISTS analyses (key TEXT PRIMARY KEY, owner TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS analyses_owner ON analyses (owner, key);
CREATE TABLE IF NOT EXISTS jobs (key TEXT PRIMARY KEY, owner TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, key);
CREATE TABLE IF NOT EXISTS graphs (key TEXT PRIMARY KEY, owner TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS graphs_owner ON graphs (owner, key);
CREATE TABLE IF NOT EXISTS features (
    sae_id TEXT NOT NULL, idx INTEGER NOT NULL,
    density REAL NOT NULL, max_activation REAL NOT NULL, doc TEXT NOT NULL, score REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS features_key ON features (sae_id, idx);
CREATE INDEX IF NOT EXISTS features_density ON features (sae_id, density, idx);
CREATE INDEX IF NOT EXISTS features_max_activation ON features (sae_id, max_activation, idx);
CREATE INDEX IF NOT EXISTS features_score ON features (sae_id, score, idx);
CREATE TABLE IF NOT EXISTS feature_tokens (
    sae_id TEXT NOT NULL, feature_index INTEGER NOT NULL, token TEXT NOT NULL,
    max_activation REAL NOT NULL, entry TEXT NOT NULL,
    PRIMARY KEY (sae_id, feature_index, token)
);
CREATE INDEX IF NOT EXISTS feature_tokens_rank
    ON feature_tokens (sae_id, token, max_activation DESC, feature_index);
"""
SORT_COLUMNS = {"index": "idx", "density": "density", "max_activation": "max_activation", "score": "score"}
# Each step brings a store written at version N-1 to N (before SCHEMA's CREATE IF NOT EXISTS).
MIGRATIONS = {2: "ALTER TABLE features ADD COLUMN score REAL"}


class SQLiteDocumentStore(DocumentStore):
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.uri = f"sqlite:///{self.path}"
        # One connection shared by threads (a web server's pool), serialized by the lock;
        # autocommit mode so transactions are exactly the BEGIN/COMMIT written below.
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; never corrupt
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema {version}; this lm-saes reads {SCHEMA_VERSION}")
            has_features = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'features'").fetchone()
            for step in range(max(version, 1) + 1, SCHEMA_VERSION + 1) if has_features else ():
                conn.execute(MIGRATIONS[step])
            for statement in filter(str.strip, SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; IMMEDIATE takes the write lock up front (no upgrade deadlock)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same snapshot (a page and its count)."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _put_record(self, kind: Kind, doc: dict[str, Any]) -> None:
        owner = doc.get(kind.owner) if kind.owner else None
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO {kind.collection} (key, owner, doc) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, doc = excluded.doc",
                (doc[kind.key], owner, json.dumps(doc)),
            )

    def _get_record(self, kind: Kind, key: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT doc FROM {kind.collection} WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _update_if(
        self, kind: Kind, key: str, expected: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        with self._write() as conn:  # BEGIN IMMEDIATE: no other process writes in between
            row = conn.execute(f"SELECT doc FROM {kind.collection} WHERE key = ?", (key,)).fetchone()
            doc = json.loads(row[0]) if row else None
            if doc is None or any(doc.get(k) != v for k, v in expected.items()):
                return None
            doc.update(changes)
            owner = doc.get(kind.owner) if kind.owner else None
            conn.execute(
                f"UPDATE {kind.collection} SET owner = ?, doc = ? WHERE key = ?", (owner, json.dumps(doc), key)
            )
        return doc

    def _list_records(self, kind: Kind, owner: str | None) -> list[dict[str, Any]]:
        where, args = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
        with self._read() as conn:
            rows = conn.execute(f"SELECT doc FROM {kind.collection} {where} ORDER BY key", args).fetchall()
        return [json.loads(row[0]) for row in rows]

    def _put_features(self, docs: list[dict[str, Any]]) -> None:
        # Encode before taking the write lock: readers in WAL never wait, other writers wait less.
        rows = [
            (d["sae_id"], d["index"], d["density"], d["max_activation"], d.get("score"), json.dumps(d)) for d in docs
        ]
        keys = [(d["sae_id"], d["index"]) for d in docs]
        tokens = [
            (d["sae_id"], d["index"], token, entry["max_activation"], json.dumps(entry))
            for d in docs
            for token, entry in token_entries(d).items()
        ]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO features (sae_id, idx, density, max_activation, score, doc) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (sae_id, idx) DO UPDATE SET density = excluded.density, "
                "max_activation = excluded.max_activation, score = excluded.score, doc = excluded.doc",
                rows,
            )
            conn.executemany("DELETE FROM feature_tokens WHERE sae_id = ? AND feature_index = ?", keys)
            conn.executemany("INSERT INTO feature_tokens VALUES (?, ?, ?, ?, ?)", tokens)

    def _get_feature(self, sae_id: str, index: int) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute("SELECT doc FROM features WHERE sae_id = ? AND idx = ?", (sae_id, index)).fetchone()
        return json.loads(row[0]) if row else None

    def _list_features(
        self,
        sae_id: str,
        sort: str,
        descending: bool,
        offset: int,
        limit: int,
        fields: list[str] | None,
    ) -> tuple[list[dict[str, Any]], int]:
        direction = "DESC" if descending else "ASC"
        order = f"{SORT_COLUMNS[sort]} {direction}, idx {direction}"  # walks one index, no sort
        summary = fields is not None and set(fields) <= SUMMARY_FIELDS
        columns = "sae_id, idx, density, max_activation, score" if summary else "doc"
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {columns} FROM features WHERE sae_id = ? ORDER BY {order} LIMIT ? OFFSET ?",
                (sae_id, limit, offset),
            ).fetchall()
            total = conn.execute("SELECT COUNT(*) FROM features WHERE sae_id = ?", (sae_id,)).fetchone()[0]
        if summary:
            names = ("sae_id", "index", "density", "max_activation", "score")
            docs = [{k: v for k, v in zip(names, row, strict=True) if v is not None} for row in rows]
        else:
            docs = [json.loads(row[0]) for row in rows]
        return [project(doc, fields) for doc in docs], total

    def _features_for_token(self, sae_id: str, token: str, limit: int) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT f.sae_id, f.idx, f.density, f.max_activation, t.entry FROM feature_tokens t "
                "JOIN features f ON f.sae_id = t.sae_id AND f.idx = t.feature_index "
                "WHERE t.sae_id = ? AND t.token = ? "
                "ORDER BY t.max_activation DESC, t.feature_index ASC LIMIT ?",
                (sae_id, token, limit),
            ).fetchall()
        names = ("sae_id", "index", "density", "max_activation")
        return [{**dict(zip(names, row[:4], strict=True)), "top_token": json.loads(row[4])} for row in rows]

    def delete_features(self, sae_id: str) -> int:
        with self._write() as conn:
            conn.execute("DELETE FROM feature_tokens WHERE sae_id = ?", (sae_id,))
            return conn.execute("DELETE FROM features WHERE sae_id = ?", (sae_id,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()
