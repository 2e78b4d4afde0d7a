"""Object stores for tensors and artifacts: a local folder by default, or S3/MinIO.

Keys are '/'-separated paths below the store's root. Every `put` is atomic: readers see the
old object or the complete new one, never a partial write (local: temp file + rename; S3: a
single PUT, which S3 makes visible only when complete).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import safetensors.torch
import torch

from lm_saes.extras import require


class ObjectNotFound(KeyError):
    """The key does not exist in the store."""


class ObjectStore(ABC):
    """Minimal blob store: enough for shards, manifests, checkpoints and SAE artifacts."""

    uri: str
    can_append = False  # object stores cannot; a local folder can

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    def append_bytes(self, key: str, data: bytes) -> None:
        """Add `data` to the end of `key` (only where `can_append`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot append; write whole objects")

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys under `prefix` (recursive), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def put_json(self, key: str, value: Any) -> None:
        self.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def put_tensors(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        self.put_bytes(key, safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()}, metadata))

    def get_tensors(self, key: str) -> dict[str, torch.Tensor]:
        return safetensors.torch.load(self.get_bytes(key))

    def delete_prefix(self, prefix: str) -> None:
        for key in self.list(prefix):
            self.delete(key)

    def child(self, prefix: str) -> ObjectStore:
        """A view of this store rooted at `prefix`."""
        return PrefixedStore(self, prefix)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class LocalObjectStore(ObjectStore):
    can_append = True

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"key {key!r} escapes the store root {self.root}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def append_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            handle.write(data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.uri}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.endswith(".tmp")
        )
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # drop folders the delete left empty, up to the root
            if parent == self.root or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()


class S3ObjectStore(ObjectStore):
    """S3 or MinIO through the `minio` SDK.

    Credentials and endpoint come from the environment, never from configs:
    `LM_SAES_S3_ENDPOINT` (host:port, default s3.amazonaws.com), `AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, `LM_SAES_S3_SECURE` (default 1), `AWS_REGION`.

    Opening a store and reading never create anything; the first write creates a missing
    bucket only when `create_bucket` is on (the CLI's default; services confine writes to the
    bucket they are configured with).
    """

    def __init__(self, bucket: str, prefix: str = "", client: Any = None, create_bucket: bool = True):
        Minio = require("minio", "s3", "an s3:// object store").Minio  # noqa: N806 (a class)

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client or Minio(
            os.environ.get("LM_SAES_S3_ENDPOINT", "s3.amazonaws.com"),
            access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
            secure=os.environ.get("LM_SAES_S3_SECURE", "1") not in ("0", "false", "False"),
            region=os.environ.get("AWS_REGION"),
        )
        self.create_bucket = create_bucket
        self._bucket_known = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes) -> None:
        if not self._bucket_known:
            if self.create_bucket and not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
            self._bucket_known = True
        self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, self._key(key))
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchBucket"):
                raise ObjectNotFound(f"{key} not found in {self.uri}") from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self._key(key))
            return True
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
        from minio.error import S3Error

        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            return sorted(
                obj.object_name[strip:] for obj in self.client.list_objects(self.bucket, prefix=full, recursive=True)
            )
        except S3Error as error:
            if error.code == "NoSuchBucket":
                return []
            raise

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, self._key(key))


class PrefixedStore(ObjectStore):
    def __init__(self, parent: ObjectStore, prefix: str):
        self.parent = parent
        self.prefix = prefix.strip("/")
        self.uri = f"{parent.uri.rstrip('/')}/{self.prefix}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if key else self.prefix

    def put_bytes(self, key: str, data: bytes) -> None:
        self.parent.put_bytes(self._key(key), data)

    @property
    def can_append(self) -> bool:  # type: ignore[override]
        return self.parent.can_append

    def append_bytes(self, key: str, data: bytes) -> None:
        self.parent.append_bytes(self._key(key), data)

    def get_bytes(self, key: str) -> bytes:
        return self.parent.get_bytes(self._key(key))

    def exists(self, key: str) -> bool:
        return self.parent.exists(self._key(key))

    def list(self, prefix: str = "") -> list[str]:
        strip = len(self.prefix) + 1
        return [k[strip:] for k in self.parent.list(self._key(prefix))]

    def delete(self, key: str) -> None:
        self.parent.delete(self._key(key))


def open_store(uri: str | Path, create_bucket: bool = True) -> ObjectStore:
    """`s3://bucket/prefix` opens S3/MinIO; anything else is a local folder."""
    text = str(uri)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise ValueError(f"{text[:100]!r} names no bucket; use s3://BUCKET/PREFIX")
        return S3ObjectStore(parsed.netloc, parsed.path, create_bucket=create_bucket)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return LocalObjectStore(text)
