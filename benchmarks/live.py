"""Live feature activations over gRPC vs in process (part of `make bench`).

Starts the activation service as a separate process with the main job's SAE registered, then:
- live.p50_ms / p99_ms: sequential GetFeatureActivations for a 64-token text;
- live.bare_ms: the same work in this process (forward to the hook + SAE encode), median;
- live.concurrent_speedup: throughput with 16 concurrent clients / sequential throughput;
- live.inprocess_batch_speedup: the ceiling for that on this machine, texts/s of one in-process
  forward of 16 texts / texts/s of single-text forwards (batching cannot beat the hardware).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from lm_saes.config import ModelConfig
from lm_saes.models import load_language_model
from lm_saes.rpc.client import ActivationClient
from lm_saes.saes import build_sae, load_sae
from lm_saes.stores import LocalObjectStore
from lm_saes.stores.documents import open_document_store

REPO = Path(__file__).resolve().parents[1]
TEXT_TOKENS = 64


STEER_REQUESTS = 10
MULTI_LAYERS = (2, 10, 14)  # with the main SAE (layer 6): four SAEs on four hooks of one model
MULTI_ROUNDS = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _text(model, n_tokens: int) -> str:
    """A Wikipedia-like sentence cut to exactly `n_tokens` tokens."""
    words = (
        "The capital of France is Paris, a city on the Seine known for its museums, its cafes and "
        "the long history of its streets, bridges and gardens, which attract millions of visitors "
        "every year from all over the world and inspire writers, painters and musicians alike. "
    ) * 4
    ids = model.tokenizer.encode(words)[:n_tokens]
    return model.tokenizer.decode(ids)


def bench_live(sae_dir: Path, requests: int = 40, clients: int = 16) -> dict[str, float]:
    model = load_language_model(ModelConfig())
    sae = load_sae(str(sae_dir))
    text = _text(model, TEXT_TOKENS)
    tokens = torch.tensor([[model.tokenizer.bos_token_id, *model.tokenizer.encode(text)]])

    def in_process() -> float:
        start = time.perf_counter()
        x = model.activations(tokens, [sae.spec.hook_in])[sae.spec.hook_in][0, 1:]
        sae.encode(x)
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        documents = f"{tmp}/live.sqlite"
        with open_document_store(documents) as store:
            store.put_sae(
                {
                    "id": "live",
                    "model": sae.spec.model,
                    "hook_in": sae.spec.hook_in,
                    "hook_out": sae.spec.hook_out,
                    "architecture": sae.spec.architecture,
                    "d_sae": sae.d_sae,
                    "config": {},
                    "metrics": {},
                    "artifact": str(sae_dir),
                }
            )
            for layer in MULTI_LAYERS:  # untrained SAEs of the main shape on other hooks: only time is measured
                hook = f"blocks.{layer}.hook_resid_post"
                spec = sae.spec.model_copy(update={"hook_in": hook, "hook_out": hook, "seed": layer})
                build_sae(spec).save(LocalObjectStore(f"{tmp}/sae-{layer}"), "sae")
                store.put_sae(
                    {
                        "id": f"live-{layer}",
                        "model": sae.spec.model,
                        "hook_in": hook,
                        "hook_out": hook,
                        "architecture": spec.architecture,
                        "d_sae": sae.d_sae,
                        "artifact": f"{tmp}/sae-{layer}/sae",
                    }
                )
        port = _free_port()
        token = secrets.token_urlsafe(16)  # the service, as deployed, needs one; its check is in the timing
        env = {
            **os.environ,
            "LM_SAES_PORT": str(port),
            "LM_SAES_HOST": "127.0.0.1",
            "LM_SAES_METRICS_PORT": "0",
            "LM_SAES_DOCUMENTS": documents,
            "HF_HUB_OFFLINE": "1",
            "LM_SAES_LOG_LEVEL": "WARNING",
            "LM_SAES_TOKENS": json.dumps({token: ["compute"]}),
        }
        server = subprocess.Popen([sys.executable, "-m", "services.activation"], cwd=REPO, env=env)
        try:
            with ActivationClient(f"127.0.0.1:{port}", timeout=300, token=token) as client:
                deadline = time.time() + 120
                while True:
                    try:
                        client.feature_activations("live", text, top_k=5)  # warm: loads model + SAE
                        break
                    except Exception:
                        if time.time() > deadline:
                            raise
                        time.sleep(1)
                latencies, bare = [], []
                for _ in range(requests):  # alternate: the machine's speed drifts
                    bare.append(in_process())
                    start = time.perf_counter()
                    client.feature_activations("live", text, top_k=5)
                    latencies.append(time.perf_counter() - start)
                sequential_rps = 1 / statistics.mean(latencies)
                total = clients * 4
                start = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    list(pool.map(lambda _: client.feature_activations("live", text, top_k=5), range(total)))
                concurrent_rps = total / (time.perf_counter() - start)
                many = ["live", *(f"live-{layer}" for layer in MULTI_LAYERS)]
                client.many_feature_activations(many, text)  # warm: loads the other SAEs
                one_each, together = [], []
                for _ in range(MULTI_ROUNDS):  # alternating
                    start = time.perf_counter()
                    for sae_id in many:
                        client.feature_activations(sae_id, text, top_k=5)
                    one_each.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    client.many_feature_activations(many, text, top_k=5)
                    together.append(time.perf_counter() - start)
                first_token = []  # steered generation: time to its first streamed token
                steer = [{"sae_id": "live", "feature": 0, "strength": 4.0}]
                for _ in range(1 + STEER_REQUESTS):
                    start = time.perf_counter()
                    stream = client.generate("I think that", steer, compare=False, max_new_tokens=4)
                    next(stream)
                    first_token.append(time.perf_counter() - start)
                    list(stream)
                first_token = first_token[1:]  # the first builds the steerer (and probes its fast path)
        finally:
            server.terminate()
            server.wait(timeout=60)
    latencies.sort()
    batched = tokens.repeat(clients, 1)
    single_s = statistics.median(in_process() for _ in range(5))
    batch_times = []
    for _ in range(3):
        start = time.perf_counter()
        sae.encode(model.activations(batched, [sae.spec.hook_in])[sae.spec.hook_in][:, 1:].reshape(-1, sae.spec.d_in))
        batch_times.append(time.perf_counter() - start)
    return {
        "inprocess_batch_speedup": clients * single_s / statistics.median(batch_times),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "bare_ms": 1000 * statistics.median(bare),
        "p50_over_bare": statistics.median(latencies) / statistics.median(bare),
        "sequential_rps": sequential_rps,
        "concurrent_rps": concurrent_rps,
        "concurrent_speedup": concurrent_rps / sequential_rps,
        "clients": clients,
        "text_tokens": TEXT_TOKENS,
        "steer_first_token_ms": 1000 * statistics.median(first_token),
        "multi_sae_saes": len(many),
        "multi_sae_one_request_ms": 1000 * statistics.median(together),
        "multi_sae_one_per_sae_ms": 1000 * statistics.median(one_each),
        "multi_sae_speedup": statistics.median(one_each) / statistics.median(together),
    }


if __name__ == "__main__":
    print(bench_live(REPO / "runs" / "smollm2-l6-topk" / "sae"))
