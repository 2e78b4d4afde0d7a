"""MongoDB through pymongo, for a shared server.

Uses only the commands a minimal wire-protocol server has (tests run on jongodb): no `drop`,
no `listCollections`, no `$max`/`$push` in `$group`. Projections are done in `aggregate`'s
`$project`, which every server applies (some ignore `find`'s projection), and `_id` is always
removed on the way out.
"""

from __future__ import annotations

from typing import Any

from lm_saes.extras import require
from lm_saes.stores.documents.base import (
    ANALYSES,
    GRAPHS,
    JOBS,
    MODELS,
    SAES,
    DocumentStore,
    Kind,
    project,
)

DEFAULT_DATABASE = "lm_saes"


class MongoDocumentStore(DocumentStore):
    def __init__(self, uri: str, client: Any = None):
        pymongo = require("pymongo", "mongo", "a mongodb:// document store")

        # Fail fast when the server is gone (callers retry within a bounded wait): 1 s, not pymongo's 30.
        timeouts = {} if "serverSelectionTimeoutMS" in uri else {"serverSelectionTimeoutMS": 1000}
        self.client = client or pymongo.MongoClient(uri, **timeouts)
        self.db = self.client.get_default_database(DEFAULT_DATABASE)
        self.uri = uri
        self._create_indexes()

    def _create_indexes(self) -> None:
        """Idempotent: create_index is a no-op for an index that already exists."""
        from pymongo import ASCENDING as UP

        for kind in (MODELS, SAES, ANALYSES, JOBS, GRAPHS):
            self.db[kind.collection].create_index([(kind.key, UP)], unique=True)
            if kind.owner:
                self.db[kind.collection].create_index([(kind.owner, UP), (kind.key, UP)])
        features = self.db.features
        features.create_index([("sae_id", UP), ("index", UP)], unique=True)
        features.create_index([("sae_id", UP), ("density", UP), ("index", UP)])
        features.create_index([("sae_id", UP), ("max_activation", UP), ("index", UP)])
        features.create_index([("sae_id", UP), ("score", UP), ("index", UP)])
        features.create_index([("sae_id", UP), ("top_tokens.token", UP)])  # multikey

    def _put_record(self, kind: Kind, doc: dict[str, Any]) -> None:
        self.db[kind.collection].replace_one({kind.key: doc[kind.key]}, doc, upsert=True)

    def _get_record(self, kind: Kind, key: str) -> dict[str, Any] | None:
        doc = self.db[kind.collection].find_one({kind.key: key})
        return project(doc, None) if doc else None

    def _update_if(
        self, kind: Kind, key: str, expected: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        from pymongo import ReturnDocument

        doc = self.db[kind.collection].find_one_and_update(
            {kind.key: key, **expected}, {"$set": changes}, return_document=ReturnDocument.AFTER
        )
        return project(doc, None) if doc else None

    def _list_records(self, kind: Kind, owner: str | None) -> list[dict[str, Any]]:
        query = {kind.owner: owner} if owner is not None and kind.owner else {}
        return [project(doc, None) for doc in self.db[kind.collection].find(query).sort(kind.key, 1)]

    def _put_features(self, docs: list[dict[str, Any]]) -> None:
        from pymongo import ReplaceOne

        # Each document is replaced whole by the server, so none is ever seen half-written
        # (the batch as a whole is not atomic: that needs a replica set's transactions).
        requests = [ReplaceOne({"sae_id": d["sae_id"], "index": d["index"]}, d, upsert=True) for d in docs]
        self.db.features.bulk_write(requests, ordered=True)

    def _get_feature(self, sae_id: str, index: int) -> dict[str, Any] | None:
        doc = self.db.features.find_one({"sae_id": sae_id, "index": index})
        return project(doc, None) if doc else None

    def _list_features(
        self,
        sae_id: str,
        sort: str,
        descending: bool,
        offset: int,
        limit: int,
        fields: list[str] | None,
    ) -> tuple[list[dict[str, Any]], int]:
        direction = -1 if descending else 1
        order = {sort: direction, "index": direction} if sort != "index" else {"index": direction}
        pipeline: list[dict[str, Any]] = [
            {"$match": {"sae_id": sae_id}},
            {"$sort": order},
            {"$skip": offset},
            {"$limit": limit},
        ]
        if fields is not None:
            pipeline.append({"$project": {"_id": 0, **dict.fromkeys(fields, 1)}})
        page = [project(doc, fields) for doc in self.db.features.aggregate(pipeline)]
        return page, self.db.features.count_documents({"sae_id": sae_id})

    def _features_for_token(self, sae_id: str, token: str, limit: int) -> list[dict[str, Any]]:
        # One row per matching top_tokens entry, strongest first; the first row of each feature
        # is its strongest entry, so de-duplicating in order equals a $group/$max.
        pipeline = [
            {"$match": {"sae_id": sae_id, "top_tokens.token": token}},
            {"$project": {"_id": 0, "sae_id": 1, "index": 1, "density": 1, "max_activation": 1, "top_tokens": 1}},
            {"$unwind": "$top_tokens"},
            {"$match": {"top_tokens.token": token}},
            {"$sort": {"top_tokens.max_activation": -1, "index": 1}},
        ]
        results: dict[int, dict[str, Any]] = {}
        with self.db.features.aggregate(pipeline, batchSize=limit + 1) as cursor:
            for row in cursor:
                if row["index"] not in results:
                    entry = row.pop("top_tokens")
                    results[row["index"]] = {**project(row, None), "top_token": entry}
                    if len(results) == limit:
                        break
        return list(results.values())

    def delete_features(self, sae_id: str) -> int:
        return self.db.features.delete_many({"sae_id": sae_id}).deleted_count

    def close(self) -> None:
        self.client.close()
