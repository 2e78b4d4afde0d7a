"""Settings every service reads from `LM_SAES_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lm_saes.auth import TokenTable


class ServiceSettings(BaseSettings):
    """Server basics; each service subclasses this with its own fields.

    Every field maps to `LM_SAES_<FIELD>` (e.g. `LM_SAES_PORT=50051`); unknown `LM_SAES_*`
    variables are ignored because other components share the prefix.
    """

    model_config = SettingsConfigDict(env_prefix="LM_SAES_", extra="ignore", validate_default=True)

    host: str = Field("127.0.0.1", description="Interface for gRPC and metrics (the chart sets 0.0.0.0)")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    max_message_mb: int = Field(64, ge=4, description="Largest gRPC message either way")
    workers: int = Field(16, ge=2, description="RPC worker threads (batched requests wait in them)")
    grace_s: float = Field(10.0, ge=0, description="SIGTERM: time in-flight RPCs get to finish")
    object_store: str = Field(
        "runs/objects",
        description="Folder or s3://bucket/prefix for artifacts; every "
        "location a caller names for outputs, SAEs, transcoders or activations must be inside it",
    )
    documents: str = Field("runs/lm-saes.sqlite", description="SQLite file or mongodb://HOST:PORT/DB")
    log_level: str = "INFO"
    # --- security (README "Security") ---
    tokens_file: str = Field("", description="JSON token table (lm_saes.auth), e.g. mounted from a Secret")
    tokens: str = Field("", repr=False, description="The token table inline (JSON); tokens_file wins")
    tls_cert_file: str = Field("", description="PEM certificate chain: serve TLS instead of plaintext")
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file")
    tls_client_ca_file: str = Field("", description="PEM CA bundle: require client certificates it signed (mTLS)")
    read_roots: list[str] = Field(
        default_factory=list,
        description="JSON list of folders or s3:// prefixes, "
        "besides object_store, that callers may read SAEs, transcoders and activations from",
    )
    data_roots: list[str] = Field(
        default_factory=list,
        description="JSON list of folders callers may read "
        "text from (data.source); 'default' (the packaged corpus) is always allowed",
    )
    model_roots: list[str] = Field(
        default_factory=list, description="JSON list of folders of local HF checkpoints callers may name as a model"
    )
    models: list[str] = Field(
        default_factory=lambda: ["smollm2-135m", "tiny"],
        description="Model names callers may use (besides folders under model_roots)",
    )
    max_streams: int = Field(8, ge=1, description="Open server streams (Watch) at once; keep below workers")
    max_streams_per_caller: int = Field(4, ge=1, description="Open server streams per principal")
    max_text_chars: int = Field(20_000, ge=1, description="Longest text or prompt accepted, before tokenizing")
    max_config_bytes: int = Field(64 * 1024, ge=1024, description="Largest submitted config (JSON or TOML)")
    max_job_memory_gb: float = Field(24.0, gt=0, description="Refuse jobs whose estimated memory exceeds this")
    max_job_storage_gb: float = Field(200.0, gt=0, description="Refuse jobs whose activation shards would exceed this")
    max_job_shards: int = Field(
        8, ge=1, le=64, description="Most worker processes (or pods) one sharded analysis or activations job may use"
    )
    store_wait_s: float = Field(
        2.0, gt=0, description="Longest an RPC waits for an unreachable store before answering UNAVAILABLE"
    )

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    def token_table(self) -> TokenTable:
        """The configured tokens; a service never starts without them."""
        import json

        if self.tokens_file:
            return TokenTable.load(self.tokens_file)
        if self.tokens:
            try:
                return TokenTable.parse(json.loads(self.tokens), "LM_SAES_TOKENS")
            except json.JSONDecodeError:
                raise ValueError("LM_SAES_TOKENS: not valid JSON") from None
        raise ValueError(
            "no tokens configured: set LM_SAES_TOKENS_FILE (a JSON token table, see "
            "lm_saes/auth.py) or LM_SAES_TOKENS; services do not run unauthenticated"
        )


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S]) -> S:
    """Settings from the environment; exits naming the variable on a bad value or missing tokens."""
    from lm_saes.settings import load_settings as load

    settings = load(cls)
    try:
        settings.token_table()
    except ValueError as error:
        raise SystemExit(f"invalid settings: {error}") from None
    return settings
