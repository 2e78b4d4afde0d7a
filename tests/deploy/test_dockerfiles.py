"""Dockerfiles: entry points exist, COPY sources exist (and are not in .dockerignore), final stage hardened."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex

import pytest

from tests.deploy.conftest import REPO

DOCKER = REPO / "docker"
IMAGES = {"activation": 50051, "training": 50052, "analysis": 50053, "tracing": 50054, "gateway": 8000}
ENTRY_MODULES = {name: f"services.{name}" for name in IMAGES} | {"gateway": "gateway"}
# The services' HEALTHCHECK (and the chart's exec probes under TLS): gRPC health, TLS-aware.
HEALTHCHECK_MODULE = "services.common.healthcheck"


def instructions(name: str) -> list[tuple[str, str]]:
    text = (DOCKER / f"{name}.Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip()
    ]


def stages(name: str) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(name):
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(p, pattern.removeprefix("**/")) or fnmatch.fnmatch(p, pattern)
        for pattern in dockerignore()
        for p in prefixes
    )


@pytest.mark.parametrize("name", list(IMAGES))
def test_entry_point_module_exists(name):
    entry = next(args for ins, args in reversed(instructions(name)) if ins in ("ENTRYPOINT", "CMD"))
    argv = json.loads(entry)
    assert argv == ["python", "-m", ENTRY_MODULES[name]], argv
    main = REPO / ENTRY_MODULES[name].replace(".", "/") / "__main__.py"
    assert main.is_file()


@pytest.mark.parametrize("name", list(IMAGES))
def test_copy_sources_exist_in_the_build_context(name):
    checked = 0
    for ins, args in instructions(name):
        if ins not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from=") for w in words):
            continue
        for src in [w for w in words if not w.startswith("--")][:-1]:
            assert (REPO / src).exists(), f"{name}: COPY {src} not in the repository"
            assert not ignored(src), f"{name}: COPY {src} is excluded by .dockerignore"
            checked += 1
    assert checked


@pytest.mark.parametrize("name", list(IMAGES))
def test_final_stage_is_hardened(name):
    all_stages = stages(name)
    assert len(all_stages) >= 2, "multi-stage: a builder and a runtime stage"
    for stage in all_stages:
        image = stage[0][1].split()[0]
        if not image.startswith("${"):
            assert ":" in image and not image.endswith(":latest"), image
    args = {
        m.group(1): m.group(2)
        for ins, a in instructions(name)
        if ins == "ARG"
        for m in [re.match(r"(\w+)=(\S+)", a)]
        if m
    }
    for key, value in args.items():  # every base image and version pinned
        if key.endswith("_IMAGE"):
            assert re.search(r":[\w.-]*\d", value) and "latest" not in value, (key, value)
        if key.endswith("_VERSION"):
            assert re.fullmatch(r"\d+(\.\d+)+", value), (key, value)
    final = dict.fromkeys(ins for ins, _ in all_stages[-1])
    body = {ins: [a for i, a in all_stages[-1] if i == ins] for ins in final}
    assert body["USER"] == ["10001:10001"]
    assert "HEALTHCHECK" in body and "CMD" in body["HEALTHCHECK"][0]
    health = body["HEALTHCHECK"][0]
    if name != "gateway":  # the shared, TLS-aware health-check command (reads LM_SAES_PORT itself)
        assert json.loads(health[health.index("CMD") + 3 :]) == ["python", "-m", HEALTHCHECK_MODULE], health
    else:
        assert "/healthz" in health
    env = " ".join(body["ENV"])
    assert "LM_SAES_HOST=0.0.0.0" in env
    if name == "gateway":  # HTTP API, UI and /metrics on one port
        assert "LM_SAES_GATEWAY_HOST=0.0.0.0" in env and "LM_SAES_GATEWAY_PORT=8000" in env
        assert body["EXPOSE"] == ["8000"] and "LM_SAES_GATEWAY_PORT" in health
    else:
        assert f"LM_SAES_PORT={IMAGES[name]}" in env and "LM_SAES_METRICS_PORT=9090" in env
        assert body["EXPOSE"] == [f"{IMAGES[name]} 9090"]
    runs = " ".join(body.get("RUN", []))
    assert not re.search(r"apt-get install|pip install|uv |gcc|build-essential", runs), "build tools in the final stage"
    copies = body["COPY"]
    assert all("--from=" in c for c in copies), "the final stage copies only built artifacts"
    assert not any(re.search(r"(?i)(secret|token|password)\s*=", e) for e in body["ENV"])
    if name != "gateway":
        assert "nvidia/cuda:" in args["CUDA_IMAGE"] and args["TORCH_INDEX"].startswith(
            "https://download.pytorch.org/whl/cu"
        )


def test_healthcheck_commands_exist():
    """Services: the health-check module is in the image (services/ is copied and installed) and
    checks gRPC health on LM_SAES_PORT, over TLS when configured; the gateway: its one-liner compiles."""
    module = REPO / (HEALTHCHECK_MODULE.replace(".", "/") + ".py")
    assert module.is_file() and not ignored(str(module.relative_to(REPO)))
    source = module.read_text()
    for needed in ("LM_SAES_PORT", "SERVING", "LM_SAES_TLS_CERT_FILE", "LM_SAES_TLS_CLIENT_CERT_FILE", "__main__"):
        assert needed in source, needed
    compile(source, str(module), "exec")
    for name in IMAGES:
        health = next(a for ins, a in instructions(name) if ins == "HEALTHCHECK")
        argv = json.loads(health[health.index("CMD") + 3 :].strip())
        if name == "gateway":
            assert argv[:2] == ["python", "-c"]
            compile(argv[2], f"{name}-healthcheck", "exec")
        else:
            assert argv == ["python", "-m", HEALTHCHECK_MODULE]
            copies = [shlex.split(a) for ins, a in stages(name)[-2] if ins == "COPY"]
            assert any("services" in words[-2:-1] for words in copies), f"{name}: services/ not in the image"


def test_dockerignore_keeps_junk_out():
    for path in (".venv", "runs", ".cache", ".git", "frontend/node_modules", "lm_saes/__pycache__"):
        assert ignored(path), path
    for path in (
        "pyproject.toml",
        "README.md",
        "lm_saes",
        "services",
        "gateway",
        "docker/requirements.lock",
        "docker/requirements-gateway.lock",
    ):
        assert not ignored(path), path


def test_lock_pins_every_runtime_dependency():
    lines = [
        line for line in (DOCKER / "requirements.lock").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert all(re.fullmatch(r"[a-z0-9._-]+==[\w.+-]+", line) for line in lines)
    names = {line.split("==")[0] for line in lines}
    assert {"grpcio", "grpcio-health-checking", "pydantic-settings", "transformer-lens", "minio", "pymongo"} <= names
    assert {"xllamacpp", "faiss-cpu", "scipy", "scikit-learn"} <= names  # the analysis service: autointerp, evals
    assert "torch" not in names and "lm-saes" not in names
