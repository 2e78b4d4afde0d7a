"""Steering on the real SmolLM2-135M with the session's small trained SAE (slow)."""

from __future__ import annotations

import re
import statistics
from collections import Counter

import pytest
import torch

from lm_saes.config import ModelConfig
from lm_saes.data.packing import load_token_splits
from lm_saes.models import load_language_model
from lm_saes.steering import FeatureIntervention, Steerer, SteeringSAE, SteerRequest
from lm_saes.steering.runner import Runner

pytestmark = pytest.mark.slow
PROMPTS = ["I think that", "Here is a short story:", "We talked for a while about"]


@pytest.fixture(scope="module")
def steerer(smollm2_run):
    _, run = smollm2_run
    return Steerer(load_language_model(ModelConfig()), {"sae": SteeringSAE(run.sae)})


def logits(completion) -> torch.Tensor:
    return torch.stack([s.logits for s in completion.steps])


def test_steered_generation_is_exact_on_smollm2(steerer):
    changes = [
        FeatureIntervention(feature=5, mode="clamp", strength=3.0),
        FeatureIntervention(feature=9, strength=8.0, positions="generated"),
        FeatureIntervention(feature=11, mode="ablate", from_token=2),
    ]

    def run(**kw):
        generation = {"max_new_tokens": 12, "use_cache": kw.pop("use_cache", True)}
        request = SteerRequest(prompt=PROMPTS[0], interventions=changes, generation=generation, **kw)
        return steerer.generate(request, keep_logits=True)

    cached, uncached = run(), run(use_cache=False)
    assert cached.token_ids == uncached.token_ids
    assert (logits(cached) - logits(uncached)).abs().max() <= 1e-4
    assert steerer.hf is not None and steerer.hf.supports([steerer.saes["sae"].hook_in])  # the fast path ran
    bridge = Steerer(steerer.model, steerer.saes, backend="bridge")
    slow = bridge.generate(
        SteerRequest(prompt=PROMPTS[0], interventions=changes, generation={"max_new_tokens": 12}),
        keep_logits=True,
    )
    assert slow.token_ids == cached.token_ids and (logits(slow) - logits(cached)).abs().max() <= 1e-4
    frozen, frozen_uncached = (
        run(frozen_attention=True),
        run(frozen_attention=True, use_cache=False),
    )
    assert frozen.token_ids == frozen_uncached.token_ids
    assert (logits(frozen) - logits(frozen_uncached)).abs().max() <= 1e-4


def test_clamping_a_feature_to_its_own_value_is_the_plain_model(steerer):
    """Its own value as the steered run computes it (the same backend: the plain HF path; read
    through the bridge instead, it differs by float rounding, ~1e-6, which SmolLM2 amplifies to
    ~4e-5 on the logits)."""
    sae = steerer.saes["sae"].sae
    ids = steerer.prompt_ids(PROMPTS[1])
    seen = {}

    def keep(x: torch.Tensor) -> torch.Tensor:
        seen["x"] = x[0, -1].clone()
        return x

    Runner(steerer.model, steerer.hf).forward(ids, lambda start, n: [(sae.spec.hook_in, keep)])
    acts = sae.encode(seen["x"][None])[0]
    feature, value = int(acts.argmax()), float(acts.max())
    own = FeatureIntervention(
        feature=feature, mode="clamp", strength=value, positions="prompt", from_token=len(ids) - 1
    )
    generation = {"max_new_tokens": 4}
    plain = steerer.generate(SteerRequest(prompt=PROMPTS[1], generation=generation), keep_logits=True)
    clamped = steerer.generate(
        SteerRequest(prompt=PROMPTS[1], interventions=[own], generation=generation),
        keep_logits=True,
    )
    # float32 rounding of the clamp value (~1e-7 relative) grows through 24 layers: 0.5-3e-5 on
    # logits of magnitude ~20 depending on the machine's threads, so the bound is relative
    scale = logits(plain).abs().max()
    assert value > 0 and (logits(clamped) - logits(plain)).abs().max() <= 5e-6 * scale
    other = own.model_copy(update={"strength": value + 1})
    moved = steerer.generate(
        SteerRequest(prompt=PROMPTS[1], interventions=[other], generation=generation),
        keep_logits=True,
    )
    assert (logits(moved) - logits(plain)).abs().max() > 1e-3


def test_adding_a_feature_promotes_its_logit_lens_token_more_than_subtracting_it(smollm2_run, steerer):
    """For the 5 features whose decoder most directly promotes a word seen in the training text,
    adding the direction (half the mean residual norm) makes that word more likely than
    subtracting it does, on neutral prompts."""
    cfg, _ = smollm2_run
    sae, model = steerer.saes["sae"].sae, steerer.model
    counts = Counter(load_token_splits(cfg.data, model.tokenizer).train.flatten().tolist())
    top_values, top_ids = (sae.W_dec.detach() @ model.bridge.W_U.detach()).max(dim=1)
    strings = model.tokenizer.token_strings(top_ids.tolist())
    chosen = [
        f
        for f in top_values.argsort(descending=True).tolist()
        if re.fullmatch(r" ?[A-Za-z]{3,}", strings[f]) and counts[int(top_ids[f])] >= 10
    ][:5]
    strength = 0.5 * (576**0.5 / sae.spec.input_scale) * sae.spec.output_scale  # raw norm: half the mean

    def p_token(feature: int, sign: float) -> float:
        token = int(top_ids[feature])
        change = [FeatureIntervention(feature=feature, strength=sign * strength)]
        return statistics.fmean(
            steerer.generate(
                SteerRequest(prompt=p, interventions=change, track=[token], generation={"max_new_tokens": 1})
            )
            .steps[0]
            .tracked[token]
            for p in PROMPTS
        )

    promoted = [p_token(f, 1.0) > p_token(f, -1.0) for f in chosen]
    assert len(chosen) == 5 and sum(promoted) >= 4, (chosen, promoted)


def test_a_batch_of_requests_on_smollm2_equals_each_run_alone(steerer):
    """Continuous batching on the real model: prompts of different lengths (left padding),
    different interventions and samplers, decoded together, give each request's own tokens."""
    requests = [
        SteerRequest(
            prompt=prompt,
            interventions=[FeatureIntervention(feature=3 + i, strength=4.0 * i)],
            generation={"max_new_tokens": 8 + 2 * i, "temperature": 0.7 * (i % 2), "seed": i},
        )
        for i, prompt in enumerate(PROMPTS)
    ]
    steps: dict[int, list] = {}
    for pairs in steerer.stream_batch([(r, True) for r in requests], keep_logits=True):
        for index, step in pairs:
            steps.setdefault(index, []).append(step)
    for index, request in enumerate(requests):
        alone = steerer.generate(request, keep_logits=True)
        assert [s.token_id for s in steps[index]] == alone.token_ids
        batched = torch.stack([s.logits for s in steps[index]])
        assert (batched - logits(alone)).abs().max() <= 1e-4 * logits(alone).abs().max()
