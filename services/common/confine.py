"""Confined storage: every location a caller names must lie inside roots the server is given.

Services decide this before any work starts, so a request can neither read a server file
(a secret named as `data.source`, then published in feature documents) nor write outside the
object store (`../..`, `~`, absolute paths, `file://`, another bucket). Local paths are
resolved with symlinks followed; S3 keys may not hold `.`/`..`/empty segments; nothing here
creates a bucket. The local CLI does not use this module: it keeps full freedom.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from services.common.errors import invalid, short

MAX_URI = 1024
_BUCKET = re.compile(r"^(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SEGMENT_BAD = {"", ".", ".."}


@dataclass(frozen=True)
class Location:
    """A root: an S3 bucket + key prefix, or a resolved local folder."""

    bucket: str | None
    path: str  # key prefix (S3, no slashes at either end) or absolute resolved folder

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.path}".rstrip("/") if self.bucket else self.path

    def contains(self, other: Location) -> bool:
        if self.bucket != other.bucket:
            return False
        if self.bucket is None:
            return other.path == self.path or other.path.startswith(self.path.rstrip("/") + "/")
        return not self.path or other.path == self.path or other.path.startswith(self.path + "/")


def _s3(uri: str, field_name: str) -> Location:
    parsed = urlparse(uri)
    if not _BUCKET.match(parsed.netloc or ""):
        raise invalid(field_name, f"{short(uri)} names no valid bucket (3-63 lowercase letters, digits, '.', '-')")
    key = parsed.path.lstrip("/")
    segments = key.rstrip("/").split("/") if key.rstrip("/") else []
    if any(s in _SEGMENT_BAD for s in segments) or parsed.query or parsed.fragment or parsed.params:
        raise invalid(field_name, f"{short(uri)}: keys may not contain empty, '.' or '..' segments, '?' or '#'")
    return Location(parsed.netloc, "/".join(segments))


def _local(path: str, field_name: str) -> Location:
    if path.startswith("~"):
        raise invalid(field_name, f"{short(path)}: '~' is not expanded on the server; give a path inside the roots")
    return Location(None, os.path.realpath(path))  # follows symlinks: a link cannot lead out


def parse_location(uri: str, field_name: str) -> Location:
    """`s3://bucket/key`, `file://path` or a path; refuses what no store can mean."""
    if not uri:
        raise invalid(field_name, "required")
    if len(uri) > MAX_URI:
        raise invalid(field_name, f"is {len(uri)} characters long; at most {MAX_URI}")
    if any(ord(c) < 32 or c == "\x7f" for c in uri):
        raise invalid(field_name, "contains control characters")
    if uri.startswith("s3://"):
        return _s3(uri, field_name)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        if scheme != "file":
            raise invalid(field_name, f"scheme {short(scheme, 20)!r} is not served; use s3:// or a path")
        uri = uri[len("file://") :]
    return _local(uri, field_name)


def _root(text: str) -> Location:
    if text.startswith("s3://"):
        parsed = urlparse(text)
        return Location(parsed.netloc, parsed.path.strip("/"))
    return Location(None, os.path.realpath(Path(text.removeprefix("file://"))))


@dataclass(frozen=True)
class Roots:
    """Where callers may write (`objects`), read artifacts (`objects` + `reads`) and read text
    (`data`), and which models they may name."""

    objects: Location
    reads: tuple[Location, ...] = ()
    data: tuple[Location, ...] = ()
    models: tuple[str, ...] = ()
    model_folders: tuple[Location, ...] = ()
    allow_hf_data: bool = False

    @classmethod
    def from_settings(cls, settings) -> Roots:
        data = [d for d in settings.data_roots if d != "hf:"]
        return cls(
            objects=_root(settings.object_store),
            reads=tuple(_root(r) for r in settings.read_roots),
            data=tuple(_root(d) for d in data),
            models=tuple(settings.models),
            model_folders=tuple(_root(m) for m in settings.model_roots),
            allow_hf_data="hf:" in settings.data_roots,
        )

    def writable(self, field_name: str, uri: str) -> str:
        """`uri` if it lies inside the object store, as the server will use it."""
        location = parse_location(uri, field_name)
        if not self.objects.contains(location):
            raise invalid(field_name, f"{short(uri)} is outside the object store; write under {self.objects}")
        return str(location)

    def readable(self, field_name: str, uri: str) -> str:
        """`uri` if it lies inside the object store or a read root (SAEs, transcoders, activations)."""
        location = parse_location(uri, field_name)
        allowed = (self.objects, *self.reads)
        if not any(root.contains(location) for root in allowed):
            raise invalid(
                field_name, f"{short(uri)} is outside the roots this server reads: {', '.join(map(str, allowed))}"
            )
        return str(location)

    def data_source(self, field_name: str, source: str) -> str:
        """A text source callers may read: the packaged corpus or a path inside a data root."""
        if source == "default":
            return source
        if source.startswith("hf:"):
            if self.allow_hf_data:
                return source
            raise invalid(field_name, 'HF datasets are not served here (add "hf:" to LM_SAES_DATA_ROOTS to allow)')
        location = parse_location(source, field_name)
        if location.bucket is None and any(root.contains(location) for root in self.data):
            return location.path
        roots = ", ".join(map(str, self.data)) or "none configured (LM_SAES_DATA_ROOTS)"
        raise invalid(field_name, f"{short(source)} is not readable here; use 'default' or a path inside: {roots}")

    def model(self, field_name: str, name: str) -> str:
        """A model callers may load: a served name or a folder inside a model root."""
        if name in self.models:
            return name
        if self.model_folders and ("/" in name or name.startswith(".")):
            location = parse_location(name, field_name)
            if location.bucket is None and any(root.contains(location) for root in self.model_folders):
                return location.path
        raise invalid(
            field_name,
            f"{short(name)} is not served here; choose one of {list(self.models)}"
            + (f" or a folder inside {', '.join(map(str, self.model_folders))}" if self.model_folders else ""),
        )
