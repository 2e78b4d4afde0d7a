"""Load what steering needs from a trained run: the SAE, its features' max activations, its model."""

from __future__ import annotations

import torch

from lm_saes.analysis.analyze import default_sae_id
from lm_saes.config import ModelConfig
from lm_saes.saes import load_sae
from lm_saes.steering.interventions import SteeringSAE
from lm_saes.stores.documents import DocumentStore

PAGE = 1000


def max_activations(documents: DocumentStore, sae_id: str, d_sae: int) -> torch.Tensor | None:
    """[d_sae] max activation per feature from the SAE's analysis; None if it has none."""
    out = torch.zeros(d_sae)
    offset, total = 0, None
    while total is None or offset < total:
        page, total = documents.list_features(sae_id, offset=offset, limit=PAGE, fields=["max_activation"])
        for doc in page:
            if 0 <= doc.index < d_sae and doc.max_activation is not None:
                out[doc.index] = doc.max_activation
        offset += PAGE
    return out if total else None


def load_steering_sae(
    location: str,
    documents: DocumentStore | None = None,
    sae_id: str | None = None,
    device: str = "cpu",
) -> SteeringSAE:
    """The SAE at `location`, with max activations from `documents` (its analysis) when given."""
    sae = load_sae(location, device=device)
    peaks = max_activations(documents, sae_id or default_sae_id(location), sae.d_sae) if documents else None
    return SteeringSAE(sae, peaks)


def model_config_for(location: str, device: str = "cpu") -> ModelConfig:
    """The model an SAE was trained on: its run's own config (config.json beside it) or its name."""
    from lm_saes.runner import _run_config_beside

    run_cfg = _run_config_beside(location)
    if run_cfg is not None:
        return run_cfg.model.model_copy(update={"device": device})
    return ModelConfig(name=load_sae(location).spec.model or ModelConfig().name, device=device)
