"""A local OpenAI-compatible LLM server on the packaged SmolLM2-135M-Instruct GGUF, for autointerp
without an API key or network: `LocalLLMServer` (a context manager running it as a subprocess),
`lm-saes llm-server` (in the foreground until Ctrl-C) and `make up` (beside the services).

The server is llama.cpp's own HTTP server, in-process through xllamacpp (extra `autointerp`):
continuous batching over `parallel` slots of `context` tokens each, `/v1/chat/completions` with
token usage, `/v1/models`, `/health`, `/slots`, `/metrics`.

Why xllamacpp: measured against llama-cpp-python[server] and `transformers serve` by
benchmarks/llm_servers.py (benchmarks/llm_servers.json), on this project's machine (2 CPU cores,
shared with other work: load average 4-5). Install: `pip install` of the candidate alone into a
fresh venv; start-up: spawning until `/v1/models` answers; prompt: a 979-token prompt, 1 token out;
generation: 64 tokens from a short prompt; 2 at once: two such requests together, tokens/s overall.

| server                      | install s | start-up s | prompt tok/s | generation tok/s | 2 at once tok/s | peak RSS MiB |
| --------------------------- | --------: | ---------: | -----------: | ---------------: | --------------: | -----------: |
| xllamacpp, 1 thread         |       2.0 |        1.6 |           50 |               27 |              27 |          437 |
| llama-cpp-python, 1 thread  |    1227.7 |        2.1 |           50 |               27 |              27 |          675 |
| transformers, 1 thread      |     100.4 |       13.9 |          109 |              6.5 |             8.0 |         1143 |
| xllamacpp, 2 threads        |           |        2.0 |           60 |               18 |              17 |          436 |
| llama-cpp-python, 2 threads |           |        1.8 |           54 |               17 |              20 |          673 |
| transformers, 2 threads     |           |       11.2 |          130 |              4.1 |             3.2 |         1111 |

- xllamacpp installs in 2 s: one 34 MB wheel (manylinux, abi3) with no dependencies, so it never
  touches torch. llama-cpp-python has no wheel on PyPI for any version: pip compiles llama.cpp,
  20 minutes here. `transformers serve` needs torch (1.1 GB venv, 100 s; in the project's venv,
  which has torch, only openai and jiter more).
- It starts in under 2 s (transformers: 11-14 s) and generates 4x faster than transformers; on the
  same engine llama-cpp-python runs alike, but serves one request at a time.
- `transformers serve` 5.24 cannot serve the packaged GGUF at all (its config has no
  `architectures`: TypeError); it was measured on the float32 checkpoint dequantized from it.
  It does process prompts about 2x faster (torch's float32 matrix products against llama.cpp's
  Q4_1 kernels), which is the one figure it wins; a Q8_0 copy of the GGUF narrows that for
  llama.cpp (1.7x faster prompts in a side test, same generation speed), not done here.
- Threads: on 2 shared cores every server generated 1.5-2.5x faster with 1 thread than with 2
  (prompts: within 20 % either way here, half as fast with 2 in an earlier run): llama.cpp's
  threads meet after each operation, so one thread waiting for a core stalls the rest. The
  default is therefore every core but one (`--threads` to change it).
  That earlier run gave xllamacpp 99.5 prompt / 41.4 generation tok/s and transformers 234.5 / 13.2
  with 1 thread: the absolute figures move with the machine's load, the ratios roughly hold.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lm_saes.extras import require
from lm_saes.processes import die_with_parent

if TYPE_CHECKING:
    from lm_saes.autointerp.llm import LLMSettings

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_CONTEXT = 4096  # tokens per slot: a ~3000-token prompt and its answer
DEFAULT_PARALLEL = 2
DEFAULT_PORT = 8080  # `lm-saes llm-server` and `make up`; LocalLLMServer takes a free one
SERVER_KEY_ENV = "LM_SAES_LLM_SERVER_API_KEY"  # handed to the child by environment, never by argv
LOG_TAIL_LINES = 40


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Every core but one: llama.cpp's threads meet at a barrier after each operation, so one of
    them waiting for a core stalls all (on 2 shared cores, 2 threads generated 1.5-2.5x slower than 1)."""
    return max(1, cpu_count() - 1)


def _packaged_gguf() -> Path:
    from lm_saes.models.smollm2 import gguf_path

    return gguf_path()


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    model_path: str | Path | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    parallel: int = DEFAULT_PARALLEL,
    context: int = DEFAULT_CONTEXT,
    threads: int | None = None,
    api_key: str | None = None,
    ready_file: str | Path | None = None,
    announce: bool = True,
) -> None:
    """Run the server in this process until SIGINT or SIGTERM. Port 0 takes a free one; the
    address it listens on is written to `ready_file` once the model is loaded."""
    xlc = require("xllamacpp", "autointerp", "the local LLM server")
    path = Path(model_path) if model_path is not None else _packaged_gguf()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF model at {path}")
    threads = threads or default_threads()
    params = xlc.CommonParams()
    params.model.path = str(path)
    params.model_alias = {model_name}
    params.hostnames = [host]
    params.port = port
    params.n_parallel = parallel
    params.n_ctx = context * parallel  # the KV cache is split evenly over the slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.endpoint_metrics = True
    if api_key:
        params.api_keys = [api_key]
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = xlc.Server(params)  # loads the model, then listens; RuntimeError if either fails
        address = server.listening_address
        if ready_file is not None:
            staging = Path(f"{ready_file}.tmp")
            staging.write_text(address)
            staging.replace(ready_file)
        if announce:
            print(
                f"LLM server: {address}/v1 (model {model_name}, {parallel} slots of {context} tokens, "
                f"{threads} thread{'s' if threads != 1 else ''}); Ctrl-C stops it",
                flush=True,
            )
        while not stop.wait(0.5):
            pass
        del server  # stops the HTTP server and the slots cleanly
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _http_ok(url: str, api_key: str | None, timeout: float = 2.0) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalLLMServer:
    """The local server as a subprocess on loopback, for tests, jobs and scripts:

        with LocalLLMServer() as server:
            client = ChatClient(server.settings())

    `port=None` takes a free port. Start-up fails with RuntimeError (with the end of the
    server's log) if the process exits first, or after `startup_timeout_s`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        parallel: int = DEFAULT_PARALLEL,
        context: int = DEFAULT_CONTEXT,
        threads: int | None = None,
        model_path: str | Path | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
        api_key: str | None = None,
        startup_timeout_s: float = 180.0,
        log_path: str | Path | None = None,
    ) -> None:
        if parallel < 1 or context < 256:
            raise ValueError(f"parallel >= 1 and context >= 256 tokens, not {parallel} and {context}")
        self.host, self.port = host, port
        self.parallel, self.context, self.threads = parallel, context, threads or default_threads()
        self.model_path, self.model_name = model_path, model_name
        self.api_key = api_key or None
        self.startup_timeout_s = startup_timeout_s
        self._log_path = Path(log_path) if log_path is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.address: str | None = None  # http://host:port once started
        self.startup_s: float | None = None  # seconds from spawning to answering /v1/models

    def __repr__(self) -> str:
        return f"LocalLLMServer({self.address or 'not started'}, model={self.model_name!r})"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def base_url(self) -> str:
        if self.address is None:
            raise RuntimeError("the LLM server is not started")
        return f"{self.address}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def settings(self, **overrides: Any) -> LLMSettings:
        """LLMSettings pointing at this server: one request in flight per slot."""
        from lm_saes.autointerp.llm import LLMSettings

        values: dict[str, Any] = {
            "base_url": self.base_url,
            "model": self.model_name,
            "api_key": self.api_key,  # explicit, so a remote provider's $LM_SAES_LLM_API_KEY is not sent here
            "max_concurrency": self.parallel,
        }
        return LLMSettings(**(values | overrides))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self._log_path is None or not self._log_path.is_file():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> LocalLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalLLMServer:
        if self._proc is not None:
            raise RuntimeError("the LLM server is already started")
        require("xllamacpp", "autointerp", "the local LLM server")
        model_path = Path(self.model_path) if self.model_path is not None else _packaged_gguf()
        if not model_path.is_file():
            raise FileNotFoundError(f"no GGUF model at {model_path}")
        self._tmp = tempfile.TemporaryDirectory(prefix="lm-saes-llm-")
        if self._log_path is None:
            self._log_path = Path(self._tmp.name) / "server.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        ready = Path(self._tmp.name) / "address"
        argv = [
            sys.executable,
            "-m",
            "lm_saes.autointerp.server",
            *("--host", self.host, "--port", str(self.port or 0)),
            *("--parallel", str(self.parallel), "--context", str(self.context), "--threads", str(self.threads)),
            *("--model", str(model_path), "--name", self.model_name, "--ready-file", str(ready)),
        ]
        root = str(Path(__file__).resolve().parents[2])  # so the child imports this very lm_saes
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        env.pop(SERVER_KEY_ENV, None)
        if self.api_key:
            env[SERVER_KEY_ENV] = self.api_key
        self._log = self._log_path.open("ab")
        started = time.monotonic()
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            self._wait_ready(ready, started)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, ready: Path, started: float) -> None:
        assert self._proc is not None
        deadline = started + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"the LLM server exited with code {code} before it was ready; "
                    f"the end of its log ({self._log_path}):\n{self.log_tail()}"
                )
            if ready.is_file():
                address = ready.read_text().strip()
                if _http_ok(f"{address}/v1/models", self.api_key):
                    self.address = address
                    self.startup_s = time.monotonic() - started
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"the LLM server was not ready after {self.startup_timeout_s:g} s; "
            f"the end of its log ({self._log_path}):\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the server's process group, SIGKILL if it has not exited after timeout_s."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None and proc.poll() is None:
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.address = None
        if self._tmp is not None:
            if self._log_path is not None and self._log_path.is_relative_to(self._tmp.name):
                self._log_path = None  # the temporary log goes with its folder
            self._tmp.cleanup()
            self._tmp = None


def add_arguments(parser: argparse.ArgumentParser, default_port: int = DEFAULT_PORT) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port, help=f"0 takes a free one (default {default_port})")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, help="requests decoded together (slots)")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="tokens per slot (prompt and answer)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core but one)")
    parser.add_argument("--model", default=None, help="a GGUF file (default: the packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="the model's name in the API")


def run_from_args(args: argparse.Namespace, ready_file: str | None = None) -> None:
    serve(
        args.host,
        args.port,
        model_path=args.model,
        model_name=args.name,
        parallel=args.parallel,
        context=args.context,
        threads=args.threads,
        api_key=os.environ.get(SERVER_KEY_ENV) or None,
        ready_file=ready_file,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The child process of LocalLLMServer (and `python -m lm_saes.autointerp.server`)."""
    parser = argparse.ArgumentParser(prog="python -m lm_saes.autointerp.server", description=__doc__.split("\n\n")[0])
    add_arguments(parser, default_port=0)
    parser.add_argument("--ready-file", help="write the listening address here once ready")
    args = parser.parse_args(argv)
    try:
        run_from_args(args, args.ready_file)
    except (RuntimeError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
