"""Shared fixtures: offline mode, a private cache, a tiny random model, test credentials.

Every service these tests start inherits `LM_SAES_TOKENS` (the table below); clients made
in-process default to the admin token (`LM_SAES_TOKEN`) and gateways to the service token, so
a test that checks something other than auth need not repeat it. Tests of auth itself pass
their own tokens (or none) explicitly.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SERVICE_TOKEN = "test-service-token"  # the gateway's
ADMIN_TOKEN = "test-admin-token"
SERVICE_TOKENS = {
    SERVICE_TOKEN: {"name": "gateway", "scopes": ["read", "compute", "submit", "admin", "service"]},
    ADMIN_TOKEN: {"name": "tester", "scopes": ["read", "compute", "submit", "admin"]},
    "alice-token": {"name": "alice", "scopes": ["read", "compute", "submit"]},
    "bob-token-1": {"name": "bob", "scopes": ["read", "submit"]},
    "reader-token": {"name": "reader", "scopes": ["read"]},
}
os.environ["LM_SAES_TOKENS"] = json.dumps(SERVICE_TOKENS)
os.environ["LM_SAES_TOKEN"] = ADMIN_TOKEN
os.environ["LM_SAES_SERVICE_TOKEN"] = SERVICE_TOKEN

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
