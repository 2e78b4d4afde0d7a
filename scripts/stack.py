"""Local stack: every service as a local process (`make up`, `make up-real`, `make down`).

    python scripts/stack.py up            embedded defaults (local folder + SQLite)
    python scripts/stack.py up --real     also a real S3 server (moto) and MongoDB wire server
                                          (jongodb), with the services pointed at them
    python scripts/stack.py down          stop everything this script started, by pid

State (pids, logs, ports) lives in runs/stack/. Existing LM_SAES_* settings in the environment
(e.g. LM_SAES_OBJECT_STORE=s3://..., LM_SAES_DOCUMENTS=mongodb://...) are passed through.
Without LM_SAES_API_TOKENS the gateway gets one fresh local token with every scope (kept in
runs/stack/api-token, printed): compute and job submission always need a token. The services
get a fresh token table (runs/stack/service-tokens.json, mode 600) holding the gateway's own
service token and that local token, so `lm-saes activations` and the Python client work with
LM_SAES_TOKEN=$(cat runs/stack/api-token).

A local OpenAI-compatible LLM server (`lm-saes llm-server`, on the packaged SmolLM2) comes up too,
on 127.0.0.1:8080, and the analysis service gets LM_SAES_LLM_BASE_URL and LM_SAES_LLM_MODEL
pointing at it (autointerp). With LM_SAES_LLM_BASE_URL already set (another server or a hosted
API; LM_SAES_LLM_API_KEY with it), none is started and the settings are passed through.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / "runs" / "stack"
SERVICES = {"activation": 50051, "training": 50052, "analysis": 50053, "tracing": 50054}
GATEWAY_PORT = 8000
LLM_PORT, LLM_MODEL = 8080, "smollm2-135m-instruct"
MOTO_PORT, JONGODB_BIN = 9000, REPO / ".cache/jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb"


def _llm_env(env: dict[str, str]) -> dict[str, str]:
    """Start the local LLM server unless one is configured; the LM_SAES_LLM_* the analysis service gets."""
    if env.get("LM_SAES_LLM_BASE_URL"):
        return {}
    if importlib.util.find_spec("xllamacpp") is None:
        print("    no LLM server: xllamacpp is missing (pip install -e '.[autointerp]'); autointerp jobs will fail")
        return {}
    argv = [sys.executable, "-m", "lm_saes.cli", "llm-server", "--port", str(LLM_PORT), "--name", LLM_MODEL]
    _spawn("llm", argv, env)
    return {"LM_SAES_LLM_BASE_URL": f"http://127.0.0.1:{LLM_PORT}/v1", "LM_SAES_LLM_MODEL": LLM_MODEL}


def _wait_port(port: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s; see {STATE}/*.log")


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> int:
    log = (STATE / f"{name}.log").open("a")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (STATE / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _secret_file(name: str, text: str) -> Path:
    path = STATE / name
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def up(real: bool) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LM_SAES_HOST": "127.0.0.1"}
    env.setdefault("LM_SAES_READ_ROOTS", json.dumps(["runs"]))  # SAEs trained by `make run` may be analyzed
    token: str | None = None
    if "LM_SAES_API_TOKENS" not in os.environ:
        token = secrets.token_urlsafe(16)
        _secret_file("api-token", token + "\n")
        env["LM_SAES_API_TOKENS"] = json.dumps(
            {token: {"name": "local", "scopes": ["read", "compute", "submit", "admin"]}}
        )
    service_token = secrets.token_urlsafe(24)
    table = {service_token: {"name": "gateway", "scopes": ["read", "compute", "submit", "admin", "service"]}}
    if token:
        table[token] = {"name": "local", "scopes": ["read", "compute", "submit", "admin"]}
    if "LM_SAES_TOKENS_FILE" not in os.environ:
        env["LM_SAES_TOKENS_FILE"] = str(_secret_file("service-tokens.json", json.dumps(table)))
    if real:
        _spawn("moto", [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(MOTO_PORT)], env)
        _wait_port(MOTO_PORT)
        _spawn("jongodb", [str(JONGODB_BIN), "--host=127.0.0.1", "--port=27017"], env)
        _wait_port(27017)
        env.update(
            LM_SAES_S3_ENDPOINT=f"127.0.0.1:{MOTO_PORT}",
            LM_SAES_S3_SECURE="0",
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",
            AWS_REGION="us-east-1",
            LM_SAES_OBJECT_STORE="s3://lm-saes/objects",
            LM_SAES_DOCUMENTS="mongodb://127.0.0.1:27017/lm_saes",
        )
    llm_env = _llm_env(env)
    for offset, (name, port) in enumerate(SERVICES.items()):
        service_env = {**env, "LM_SAES_PORT": str(port), "LM_SAES_METRICS_PORT": str(9091 + offset)}
        if name == "analysis":
            service_env.update(llm_env)
        _spawn(name, [sys.executable, "-m", f"services.{name}"], service_env)
    gateway_env = {
        **env,
        "LM_SAES_GATEWAY_PORT": str(GATEWAY_PORT),
        "LM_SAES_GATEWAY_HOST": "127.0.0.1",
        "LM_SAES_SERVICE_TOKEN": service_token,
        **{f"LM_SAES_{name.upper()}_ADDRESS": f"127.0.0.1:{port}" for name, port in SERVICES.items()},
    }
    _spawn("gateway", [sys.executable, "-m", "gateway"], gateway_env)
    for port in [*SERVICES.values(), GATEWAY_PORT, *([LLM_PORT] if llm_env else [])]:
        _wait_port(port)
    endpoints = {name: f"127.0.0.1:{port}" for name, port in SERVICES.items()}
    (STATE / "endpoints.json").write_text(json.dumps(endpoints, indent=2))
    print(f"up: {endpoints} (metrics on ports 9091-9094; logs in {STATE})")
    print(f"    gateway: http://127.0.0.1:{GATEWAY_PORT}/ (dashboards; OpenAPI at /docs)")
    if token:
        print(f"    API token for compute and jobs (paste it into the header's token box): {token}")
    llm_url = llm_env.get("LM_SAES_LLM_BASE_URL") or env.get("LM_SAES_LLM_BASE_URL")
    print(f"    LLM for autointerp: {llm_url or 'none'}" + (" (local SmolLM2, lm-saes llm-server)" if llm_env else ""))
    print(
        f"    object store {env.get('LM_SAES_OBJECT_STORE', 'runs/objects')}, "
        f"documents {env.get('LM_SAES_DOCUMENTS', 'runs/lm-saes.sqlite')}"
    )


def down() -> None:
    for pid_file in sorted(STATE.glob("*.pid")):
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            print(f"stopped {pid_file.stem} (pid {pid})")
        except ProcessLookupError:
            print(f"{pid_file.stem} (pid {pid}) was not running")
        pid_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--real", action="store_true", help="also start moto (S3) and jongodb (MongoDB)")
    args = parser.parse_args()
    up(args.real) if args.action == "up" else down()


if __name__ == "__main__":
    main()
