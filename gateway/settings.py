"""Gateway settings from `LM_SAES_*` environment variables (shared prefix with the services)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Scope = Literal["read", "compute", "submit"]


class GatewaySettings(BaseSettings):
    """Every field maps to `LM_SAES_<FIELD>`; the listen address has `gateway_` names so it
    never collides with a service's `LM_SAES_PORT` in a shared environment."""

    model_config = SettingsConfigDict(env_prefix="LM_SAES_", extra="ignore", validate_default=True)

    gateway_host: str = Field("0.0.0.0", description="Interface uvicorn listens on")
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
    api_tokens: dict[str, list[Scope]] = Field(default_factory=dict, repr=False,
                                               description='JSON {"token": ["read", "compute", "submit"]}')
    public_reads: bool = Field(True, description="Read endpoints need no token (else scope `read`)")
    cors_origins: list[str] = Field(default_factory=list, description='JSON list, e.g. ["http://localhost:5173"]')
    static_dir: str = Field("frontend/dist", description="Built frontend served on / when the folder exists")
    max_text_chars: int = Field(4000, ge=1, description="Longest text accepted by compute endpoints")
    search_token_top_k: int = Field(64, ge=1, description="Per-token features summed by POST /search "
                                    "(exact for SAEs that activate at most this many per token)")
    log_level: str = "INFO"
