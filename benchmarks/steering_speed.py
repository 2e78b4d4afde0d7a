"""Steered generation speed (part of `make bench`, alone with `--only steer`).

Greedy, 64 new tokens (EOS ignored, so every run makes 64) after the same prompt, prefill
included; rounds alternate and medians are reported:
- steer.tokens_per_s: our KV-cached loop with one `add` intervention on the main SAE (every
  position from the first prompt token on);
- steer.generate_tokens_per_s: the same loop with no intervention;
- steer.hf_generate_tokens_per_s: `transformers` `generate` on the same checkpoint, loaded on its
  own (its default attention), same prompt and token count;
- steer.batch_tokens_per_s: four steered requests (different prompts and features, 64 tokens
  each) decoded together by continuous batching (`Steerer.stream_batch`, what the service does
  with concurrent Generate calls), tokens of all four per second; `batch_speedup` is that over
  the same four requests generated one after another.
"""

from __future__ import annotations

import statistics
import time

import torch

from lm_saes.models import LanguageModel
from lm_saes.steering import FeatureIntervention, Steerer, SteeringSAE, SteerRequest

PROMPT = "The history of the old town begins in the twelfth century, when"
BATCH_PROMPTS = [PROMPT, "My favourite recipe is", "In 1969 the first people to walk on the Moon", "Dear friend,"]
NEW_TOKENS = 64


def bench_steer(model: LanguageModel, sae, rounds: int = 3, feature: int = 0) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    from lm_saes.models.smollm2 import smollm2_checkpoint

    steerer = Steerer(model, {"sae": SteeringSAE(sae)})
    generation = {"max_new_tokens": NEW_TOKENS, "stop_at_eos": False}
    plain = SteerRequest(prompt=PROMPT, generation=generation)
    steered = plain.model_copy(update={"interventions": [FeatureIntervention(feature=feature, strength=4.0)]})
    hf = AutoModelForCausalLM.from_pretrained(smollm2_checkpoint(), dtype=torch.float32).eval()
    ids = torch.tensor([steerer.prompt_ids(PROMPT)])

    def ours(request: SteerRequest) -> float:
        start = time.perf_counter()
        n = len(steerer.generate(request).token_ids)
        return n / (time.perf_counter() - start)

    def theirs() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - start)

    several = [
        steered.model_copy(
            update={"prompt": p, "interventions": [FeatureIntervention(feature=feature + i, strength=4.0)]}
        )
        for i, p in enumerate(BATCH_PROMPTS)
    ]

    def one_by_one() -> float:
        start = time.perf_counter()
        n = sum(len(steerer.generate(r).token_ids) for r in several)
        return n / (time.perf_counter() - start)

    def batched() -> float:
        start = time.perf_counter()
        n = sum(len(pairs) for pairs in steerer.stream_batch([(r, True) for r in several]))
        return n / (time.perf_counter() - start)

    ours(plain), theirs(), batched()  # warm up
    runs: dict[str, list[float]] = {"steer": [], "generate": [], "hf": [], "batch": [], "serial": []}
    for _ in range(rounds):
        runs["steer"].append(ours(steered))
        runs["generate"].append(ours(plain))
        runs["hf"].append(theirs())
        runs["batch"].append(batched())
        runs["serial"].append(one_by_one())
    steer, generate, hf_rate, batch, serial = (
        statistics.median(runs[k]) for k in ("steer", "generate", "hf", "batch", "serial")
    )
    return {
        "tokens_per_s": steer,
        "generate_tokens_per_s": generate,
        "hf_generate_tokens_per_s": hf_rate,
        "ratio_to_generate": steer / generate,
        "generate_ratio_to_hf": generate / hf_rate,
        "batch_tokens_per_s": batch,
        "serial_tokens_per_s": serial,
        "batch_speedup": batch / serial,
        "batch_requests": len(several),
        "new_tokens": NEW_TOKENS,
        "prompt_tokens": int(ids.shape[1]),
        "rounds": rounds,
        "hf_attention": hf.config._attn_implementation,
    }
