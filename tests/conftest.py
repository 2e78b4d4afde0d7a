"""Shared fixtures: offline mode, a private cache, a tiny random model."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from lm_saes.config import ModelConfig  # noqa: E402
from lm_saes.models import load_language_model  # noqa: E402

# `mongodb_uri`: a real MongoDB wire server; `stack`, `trained`: the services as processes and a
# tiny SAE trained and analyzed through the gateway (tests/gateway, tests/e2e).
pytest_plugins = ["tests.mongo_server", "tests.service_stack"]


@pytest.fixture(scope="session")
def tiny_model():
    return load_language_model(ModelConfig(name="tiny", tiny_layers=2, tiny_d_model=32, seed=0))


@pytest.fixture
def tiny_contexts(tiny_model):
    """Random byte 'text' packed as BOS + 31 tokens."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(32, 127, (24, 32), generator=g)
    tokens[:, 0] = tiny_model.tokenizer.bos_token_id
    tokens[3, 10] = tiny_model.tokenizer.bos_token_id  # a document boundary
    return tokens
