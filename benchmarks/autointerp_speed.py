"""`make bench` autointerp: explanations and scores per minute with the local LLM server.

The packaged SmolLM2-135M-Instruct on the local OpenAI-compatible server, 2 requests in flight,
over a copy of the main job's document store: N features explained (explainer only), then the
same N scored (detection + fuzzing + embedding, silent contexts found by a forward pass
included). A quality figure needs far more features: benchmarks/autointerp_quality.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from lm_saes.autointerp.run import AutointerpConfig, run_autointerp

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ROOT / "runs" / "lm-saes.sqlite"


def bench_autointerp(features: int = 8, sae_id: str = "smollm2-l6-topk") -> dict[str, float]:
    if not DOCUMENTS.is_file():
        return {}
    from lm_saes.autointerp.server import LocalLLMServer

    with tempfile.TemporaryDirectory() as tmp, LocalLLMServer(parallel=2, threads=os.cpu_count()) as server:
        documents = Path(tmp) / "docs.sqlite"
        shutil.copy(DOCUMENTS, documents)
        base = dict(
            documents=str(documents),
            sae_id=sae_id,
            max_features=features,
            min_density=1e-4,
            redo=True,
            seed=7,
            llm=server.settings().model_copy(update={"max_concurrency": 2}).model_dump(),
        )
        started = time.perf_counter()
        explained = run_autointerp(AutointerpConfig(**base, scorers=[]))
        explain_s = time.perf_counter() - started
        started = time.perf_counter()
        scored = run_autointerp(AutointerpConfig(**{**base, "redo": False}, explain=False))
        score_s = time.perf_counter() - started
    return {
        "features": features,
        "explained_per_min": explained.explained / (explain_s / 60),
        "scored_per_min": scored.scored / (score_s / 60),
        "explain_prompt_tokens_per_feature": explained.prompt_tokens / max(1, explained.explained),
        "score_prompt_tokens_per_feature": scored.prompt_tokens / max(1, scored.scored),
    }
