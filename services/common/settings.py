"""Settings every service reads from `LM_SAES_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Server basics; each service subclasses this with its own fields.

    Every field maps to `LM_SAES_<FIELD>` (e.g. `LM_SAES_PORT=50051`); unknown `LM_SAES_*`
    variables are ignored because other components share the prefix.
    """

    model_config = SettingsConfigDict(env_prefix="LM_SAES_", extra="ignore", validate_default=True)

    host: str = Field("0.0.0.0", description="Interface for gRPC and metrics")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    max_message_mb: int = Field(64, ge=4, description="Largest gRPC message either way")
    workers: int = Field(16, ge=1, description="RPC worker threads (batched requests wait in them)")
    grace_s: float = Field(10.0, ge=0, description="SIGTERM: time in-flight RPCs get to finish")
    object_store: str = Field("runs/objects", description="Folder or s3://bucket/prefix for artifacts")
    documents: str = Field("runs/lm-saes.sqlite", description="SQLite file or mongodb://HOST:PORT/DB")
    log_level: str = "INFO"

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S]) -> S:
    """Settings from the environment; a bad value exits with the variable named, no traceback."""
    from pydantic import ValidationError

    try:
        return cls()
    except ValidationError as error:
        problems = "; ".join(f"LM_SAES_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']} (got {e.get('input')!r})"
                             for e in error.errors())
        raise SystemExit(f"invalid settings: {problems}") from None

