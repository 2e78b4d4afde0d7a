"""The real services as OS processes (local object store + SQLite) and a tiny SAE trained and
analyzed through the gateway: shared by tests/gateway (gateway in process) and tests/e2e
(gateway as a process, driven by a browser).

Fixtures (registered in tests/conftest.py): `stack_services` (which services a module starts;
override it in a module to start fewer), `stack` and `trained`. `trained` needs a `client`
fixture from the module: any httpx client of the gateway (a TestClient or an httpx.Client).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import REPO, free_port
from tests.integration.test_job_services import TINY, Service

TOKENS = {"submitter": ["submit", "read"], "computer": ["compute"], "reader-token": ["read"]}
SUBMIT = {"Authorization": "Bearer submitter"}
COMPUTE = {"Authorization": "Bearer computer"}
READ = {"Authorization": "Bearer reader-token"}
SAE_ID = "gw-tiny"
ANALYZE = {
    "data": {"context_size": 64, "max_tokens": 3000, "eval_tokens": 0},
    "analysis": {"top_n": 5, "batch_contexts": 8},
}
SERVICES = ("activation", "training", "analysis", "tracing")


@pytest.fixture(scope="module")
def stack_services() -> tuple[str, ...]:
    return SERVICES


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Extra LM_SAES_* settings for a module's services (override it in a module)."""
    return {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, stack_services, stack_env):
    """({name: Service}, tmp folder): the services, sharing `tmp/docs.sqlite` and `tmp/objects`."""
    tmp = tmp_path_factory.mktemp("stack")
    env = {
        "LM_SAES_DOCUMENTS": str(tmp / "docs.sqlite"),
        "LM_SAES_OBJECT_STORE": str(tmp / "objects"),
        "HF_HUB_OFFLINE": "1",
        "LM_SAES_MODEL": "tiny",
        "LM_SAES_WORKERS": "4",
        # transcoders trained in process under tmp (tests/e2e) may be analyzed and traced
        "LM_SAES_READ_ROOTS": json.dumps([str(tmp)]),
        **stack_env,
    }
    with ThreadPoolExecutor(len(stack_services)) as pool:  # start-ups overlap (each imports torch)
        services = list(pool.map(lambda name: Service(f"services.{name}", env, tmp / f"{name}.log"), stack_services))
    yield dict(zip(stack_services, services, strict=True)), tmp
    for service in services:
        if service.proc.poll() is None:
            service.stop(signal.SIGTERM)


@contextlib.contextmanager
def gateway_process(services: dict[str, Service], tmp: Path, **settings: str) -> Iterator[tuple[str, Path]]:
    """`python -m gateway` on a free port over `services` ((url, log)); `settings` are extra
    LM_SAES_* variables (e.g. LM_SAES_PUBLIC_READS="false")."""
    port = free_port()
    env = {
        **os.environ,
        "LM_SAES_GATEWAY_HOST": "127.0.0.1",
        "LM_SAES_GATEWAY_PORT": str(port),
        "LM_SAES_DOCUMENTS": str(tmp / "docs.sqlite"),
        "LM_SAES_API_TOKENS": json.dumps(TOKENS),
        **{f"LM_SAES_{name.upper()}_ADDRESS": f"127.0.0.1:{s.port}" for name, s in services.items()},
        **settings,
    }
    log = tmp / f"gateway-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the gateway exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail(f"the gateway did not answer /healthz in 60 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def job_events(client: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    """Read the job's SSE stream to its end: [(event name, data)]."""
    events, name = [], ""
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def train_and_analyze(client: httpx.Client, sae_id: str = SAE_ID, request_id: str = "gw-1") -> dict[str, Any]:
    """Train a tiny SAE through the gateway, follow it over SSE, analyze it as `sae_id`;
    returns the training job with its result."""
    config = {**TINY, "data": {**TINY["data"], "max_tokens": 5000}}
    config.pop("output")
    body = {"config": config, "request_id": request_id}
    response = client.post("/api/v1/jobs/training", json=body, headers=SUBMIT)
    assert response.status_code == 201, response.text
    job = response.json()
    again = client.post("/api/v1/jobs/training", json=body, headers=SUBMIT)
    assert again.json()["id"] == job["id"]  # idempotent
    events = job_events(client, job["id"])
    progress = [data for name, data in events if name == "progress"]
    assert events[-1][0] == "end" and events[-1][1]["state"] == "succeeded", events[-1]
    assert progress[-1]["state"] == "succeeded" and progress[-1]["step"] == progress[-1]["total_steps"] > 0
    assert [p["step"] for p in progress] == sorted(p["step"] for p in progress)
    assert any(p["state"] == "running" for p in progress)  # streamed live, not only the outcome
    result = events[-1][1]["result"]

    response = client.post(
        "/api/v1/jobs/analysis", headers=SUBMIT, json={"sae_uri": result["sae"], "sae_id": sae_id, "config": ANALYZE}
    )
    assert response.status_code == 201, response.text
    events = job_events(client, response.json()["id"])
    assert events[-1][0] == "end" and events[-1][1]["state"] == "succeeded", events[-1]
    return {**job, "result": result}


@pytest.fixture(scope="module")
def trained(client) -> dict[str, Any]:
    """A tiny SAE (`SAE_ID`) trained and analyzed through the module's gateway `client`."""
    return train_and_analyze(client)
