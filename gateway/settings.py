"""Gateway settings from `LM_SAES_*` environment variables (shared prefix with the services)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lm_saes.auth import Scope, TokenTable

__all__ = ["GatewaySettings", "Scope"]


class GatewaySettings(BaseSettings):
    """Every field maps to `LM_SAES_<FIELD>`; the listen address has `gateway_` names so it
    never collides with a service's `LM_SAES_PORT` in a shared environment."""

    model_config = SettingsConfigDict(env_prefix="LM_SAES_", extra="ignore", validate_default=True)

    gateway_host: str = Field("127.0.0.1", description="Interface uvicorn listens on (the chart sets 0.0.0.0)")
    gateway_port: int = Field(8000, ge=0, le=65535, description="HTTP port")
    documents: str = Field("runs/lm-saes.sqlite", description="SQLite file or mongodb://HOST:PORT/DB")
    activation_address: str = Field("localhost:50051", description="ActivationService host:port")
    training_address: str = Field("localhost:50052", description="TrainingService host:port")
    analysis_address: str = Field("localhost:50053", description="AnalysisService host:port")
    tracing_address: str = Field("localhost:50054", description="CircuitService host:port")
    grpc_timeout_s: float = Field(60.0, gt=0, description="Deadline of unary RPCs")
    health_timeout_s: float = Field(2.0, gt=0, description="Deadline of each /readyz probe")
    watch_timeout_s: float = Field(6 * 3600.0, gt=0, description="Longest a /events stream follows a job")
    # repr=False: tokens are secrets and must not show up in logs or tracebacks.
    api_tokens: TokenTable = Field(
        default_factory=TokenTable,
        repr=False,
        description='JSON {"token": ["read", "compute", "submit"]} or '
        '{"token": {"name": "alice", "scopes": [...]}} (lm_saes/auth.py); "admin" '
        "sees and cancels every user's jobs",
    )
    service_token: str = Field(
        "",
        repr=False,
        description="The gateway's own token for the services (scopes "
        "read, compute, submit, service; admin to pass admins on)",
    )
    tls_ca_file: str = Field("", description="PEM CA the services' certificates chain to: talk TLS to them")
    tls_client_cert_file: str = Field("", description="PEM client certificate for services that require mTLS")
    tls_client_key_file: str = Field("", description="PEM key of tls_client_cert_file")
    tls_server_name: str = Field("", description="Name to check in the services' certificates (default: host)")
    max_streams: int = Field(256, ge=1, description="Open /events streams at once")
    max_streams_per_caller: int = Field(16, ge=1, description="Open /events streams per token (or client address)")
    watch_poll_s: float = Field(0.5, gt=0, description="How often an /events stream reads its job record")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body")
    public_reads: bool = Field(True, description="Read endpoints need no token (else scope `read`)")
    cors_origins: list[str] = Field(default_factory=list, description='JSON list, e.g. ["http://localhost:5173"]')
    static_dir: str = Field("frontend/dist", description="Built frontend served on / when the folder exists")
    max_text_chars: int = Field(4000, ge=1, description="Longest text accepted by compute endpoints")
    search_token_top_k: int = Field(
        64,
        ge=1,
        description="Per-token features summed by POST /search "
        "(exact for SAEs that activate at most this many per token)",
    )
    steer_max_tokens: int = Field(128, ge=1, le=1024, description="Most new tokens one /steer request generates")
    log_level: str = "INFO"

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> TokenTable:
        return value if isinstance(value, TokenTable) else TokenTable.parse(value, "LM_SAES_API_TOKENS")
