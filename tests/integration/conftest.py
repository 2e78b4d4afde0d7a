"""Real servers for integration tests: an S3 server (moto) on a free loopback port; a small SAE
trained on SmolLM2 once per session for the slow tests that need a real one; and the local LLM
server (llama.cpp through xllamacpp) on the packaged SmolLM2 for autointerp."""

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lm_saes.config import RunConfig, load_config
from lm_saes.runner import run_train

REPO = Path(__file__).resolve().parents[2]
SAELENS_PY = REPO / ".venv-saelens" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint (moto_server) on loopback; sets the env the S3 store reads."""
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    env = {
        "LM_SAES_S3_ENDPOINT": f"127.0.0.1:{port}",
        "LM_SAES_S3_SECURE": "0",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def saelens_python() -> Path:
    if not SAELENS_PY.exists():
        pytest.skip("SAELens venv missing: run `make saelens-venv` (make test does)")
    return SAELENS_PY


@pytest.fixture(scope="session")
def smollm2_run(tmp_path_factory):
    """(config, TrainRun) of a 1152-latent TopK SAE on SmolLM2 layer 6, 24k tokens (slow tests)."""
    out = tmp_path_factory.mktemp("smollm2")
    cfg = load_config(
        REPO / "examples/configuration/train.toml",
        RunConfig,
        {
            "output": str(out / "run"),
            "data.max_tokens": 24_000,
            "data.eval_tokens": 1_500,
            "sae.d_sae": 1152,
            "sae.k": 16,
            "train.batch_size": 512,
            "train.epochs": 2,
            "train.checkpoint_every": 0,
            "train.lr_warmup_steps": 5,
        },
    )
    return cfg, run_train(cfg, progress=False)


@pytest.fixture(scope="session")
def local_llm_server(tmp_path_factory):
    """The local OpenAI-compatible LLM server (LocalLLMServer, 2 slots) on the packaged SmolLM2-135M-Instruct."""
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("the local LLM server needs the autointerp extra: pip install -e '.[autointerp]' (make install)")
    from lm_saes.autointerp.server import LocalLLMServer

    with LocalLLMServer(log_path=tmp_path_factory.mktemp("llm") / "server.log") as server:
        yield server


@pytest.fixture(scope="session")
def local_llm(local_llm_server):
    """LLMSettings pointing at the session's local LLM server."""
    return local_llm_server.settings()
