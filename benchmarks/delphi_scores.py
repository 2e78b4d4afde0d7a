"""Score explanations with EleutherAI delphi's own DetectionScorer and FuzzingScorer.

Runs inside `.venv-delphi` (scripts/make_delphi_venv.sh), never in lm-saes's venv:

    .venv-delphi/bin/python benchmarks/delphi_scores.py CASES.json BASE_URL MODEL OUT.json

CASES.json (written by benchmarks/delphi_crosscheck.py) holds, per feature, the explanation,
the held-out activating contexts and the silent ones, exactly as lm-saes's scorers saw them.
delphi's scorers run unchanged, with their own prompts, shuffling and parsing, against the same
OpenAI-compatible server; the only code of ours is the small client below (delphi's clients are
OpenRouter's hosted API and vLLM) and the import of its scorer modules without the package
`__init__`s, which pull in vLLM, a GPU inference engine that neither installs nor runs here and
that the scorers do not use.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import types
from pathlib import Path

import httpx
import torch


def _bare_package(name: str) -> types.ModuleType:
    """Register `name` as a package whose submodules import without running its __init__."""
    spec = importlib.util.find_spec(name)
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)  # type: ignore[union-attr]
    sys.modules[name] = module
    return module


latents_pkg = _bare_package("delphi.latents")
_bare_package("delphi.clients")
_bare_package("delphi.scorers")
latents = importlib.import_module("delphi.latents.latents")
for name in ("ActivatingExample", "NonActivatingExample", "LatentRecord", "Latent", "Example"):
    setattr(latents_pkg, name, getattr(latents, name))
client_mod = importlib.import_module("delphi.clients.client")
DetectionScorer = importlib.import_module("delphi.scorers.classifier.detection").DetectionScorer
FuzzingScorer = importlib.import_module("delphi.scorers.classifier.fuzz").FuzzingScorer
metrics = None  # delphi.log.result_analysis needs pandas/plotly; its formula is two lines, below


class ServerClient(client_mod.Client):
    """delphi's Client interface over an OpenAI-compatible /v1/chat/completions endpoint."""

    def __init__(self, base_url: str, model: str):
        super().__init__(model)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.http = httpx.AsyncClient(timeout=300)

    async def generate(self, prompt, **kwargs):
        body = {
            "model": self.model,
            "messages": prompt,
            "max_tokens": kwargs.get("max_tokens", 64),
            "temperature": kwargs.get("temperature", 0.0),
        }
        response = await self.http.post(self.url, json=body)
        response.raise_for_status()
        return client_mod.Response(text=response.json()["choices"][0]["message"]["content"])


def record(case: dict):
    def tensor(values):
        return torch.tensor(values, dtype=torch.float32)

    test = [
        latents.ActivatingExample(
            tokens=torch.zeros(len(c["tokens"]), dtype=torch.long),
            activations=tensor(c["activations"]),
            str_tokens=c["tokens"],
            quantile=0,
        )
        for c in case["activating"]
    ]
    silent = [
        latents.NonActivatingExample(
            tokens=torch.zeros(len(c["tokens"]), dtype=torch.long),
            activations=tensor([0.0] * len(c["tokens"])),
            str_tokens=c["tokens"],
            distance=-1.0,
        )
        for c in case["negatives"]
    ]
    r = latents.LatentRecord(latents.Latent("sae", case["index"]))
    r.test, r.not_active, r.explanation = test, silent, case["explanation"]
    return r


def balanced_accuracy(outputs) -> dict:
    """delphi's log/result_analysis.py: compute_confusion + compute_classification_metrics."""
    valid = [o for o in outputs if o.prediction is not None]
    pos = [o for o in valid if o.activating]
    neg = [o for o in valid if not o.activating]
    tpr = sum(bool(o.prediction) for o in pos) / len(pos) if pos else 0.0
    tnr = sum(not o.prediction for o in neg) / len(neg) if neg else 0.0
    return {"value": (tpr + tnr) / 2 if valid else None, "examples": len(valid), "failed": len(outputs) - len(valid)}


async def main(cases_path: str, base_url: str, model: str, out_path: str, per_prompt: int = 5) -> None:
    cases = json.loads(Path(cases_path).read_text())
    client = ServerClient(base_url, model)
    scorers = {
        "detection": DetectionScorer(client, n_examples_shown=per_prompt, temperature=0.0, max_tokens=40),
        "fuzzing": FuzzingScorer(client, n_examples_shown=per_prompt, temperature=0.0, max_tokens=40),
    }
    results = []
    for case in cases:
        row = {"index": case["index"]}
        for name, scorer in scorers.items():
            scored = await scorer(record(case))
            row[name] = balanced_accuracy(scored.score)
        results.append(row)
        print(json.dumps(row), flush=True)
    Path(out_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
