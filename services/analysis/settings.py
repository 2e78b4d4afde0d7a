"""The analysis service's settings: the job host's, and the LLM endpoint autointerp jobs use."""

from __future__ import annotations

from pydantic import Field

from services.common.job_host import JobServiceSettings


class AnalysisSettings(JobServiceSettings):
    llm_base_url: str = Field(
        "",
        description="OpenAI-compatible endpoint autointerp jobs explain and score with (e.g. http://host:8080/v1); "
        "empty: autointerp refused. The key, if any, is LM_SAES_LLM_API_KEY in the job's environment",
    )
    llm_model: str = Field("smollm2-135m-instruct", min_length=1, max_length=200, description="Model name sent to it")
    llm_max_concurrency: int = Field(2, ge=1, le=256, description="Requests in flight per autointerp job")
    llm_timeout_s: float = Field(120.0, gt=0, le=3600, description="Per request")
    max_autointerp_features: int = Field(100_000, ge=1, description="Most features one autointerp job may name")
