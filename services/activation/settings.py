"""Activation-service settings, from `LM_SAES_*` environment variables."""

from __future__ import annotations

from pydantic import Field

from lm_saes.config import DType
from services.common.job_host import JobServiceSettings


class ActivationSettings(JobServiceSettings):
    model: str = Field("smollm2-135m", description="Model for requests that name none")
    device: str = Field("cpu", description="Where models and SAEs run")
    dtype: DType = "float32"
    max_text_tokens: int = Field(1024, ge=1, description="Longest text (in tokens, BOS excluded) per request")
    batch_window_ms: float = Field(
        0.0,
        ge=0,
        description="How long a batch waits for more requests "
        "(0: none; requests queued during a forward form the next batch)",
    )
    max_batch: int = Field(32, ge=1, description="Most texts in one batched forward")
    max_new_tokens: int = Field(256, ge=1, le=1024, description="Most tokens one Generate request may ask for")
    max_generate_batch: int = Field(
        8, ge=1, le=64, description="Most continuations Generate decodes together (a compared request is two)"
    )
    max_interventions: int = Field(32, ge=1, description="Most feature interventions per Generate request")
    sae_cache_size: int = Field(4, ge=1, description="SAEs kept loaded (least recently used goes first)")
    stream_chunk_mb: float = Field(
        2.0, gt=0, description="Inline GetActivations chunk size; stays under the 4 MB default receive limit of clients"
    )
