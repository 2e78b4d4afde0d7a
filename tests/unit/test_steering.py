"""Steered generation on a tiny random Llama (KV cache, GQA: SmolLM2's architecture).

References are written independently of `lm_saes.steering`: greedy loops that rerun the whole
sequence through `bridge.run_with_hooks` with hand-written hooks. Random SAEs suffice: every
claim here is an exact identity, whatever the features mean.
"""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from lm_saes.cli import main
from lm_saes.config import ModelConfig
from lm_saes.models import load_language_model
from lm_saes.saes import build_sae, parse_spec
from lm_saes.steering import (
    FeatureIntervention,
    GenerationConfig,
    Steerer,
    SteeringSAE,
    SteerRequest,
    token_ids,
)
from lm_saes.steering.interventions import resolve
from lm_saes.steering.runner import BridgeBackend, HFBackend, Runner, hf_backend
from lm_saes.steering.sampling import TextStream, choose
from lm_saes.steering.splice import Splice
from lm_saes.stores import open_store

RESID = "blocks.0.hook_resid_post"
MLP_IN, MLP_OUT = "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"
PROMPT = "The cat sat on"


@pytest.fixture(scope="module")
def llama():
    model = load_language_model(ModelConfig(name="tiny-llama", tiny_layers=2, tiny_d_model=32, seed=0))
    with torch.no_grad():  # sharper attention than a 0.02-std init gives, so patterns matter
        for name, weight in model.bridge.named_parameters():
            if ".q_proj." in name or ".k_proj." in name:
                weight.mul_(20)
    return model


def _sae(hook_in: str, hook_out: str, seed: int, scale: float = 0.5):
    spec = parse_spec(
        {
            "architecture": "topk",
            "hook_in": hook_in,
            "hook_out": hook_out,
            "d_in": 32,
            "d_out": 32,
            "d_sae": 64,
            "k": 8,
            "seed": seed,
            "model": "tiny-llama",
        }
    )
    sae = build_sae(spec).eval()
    sae.set_scales(scale, scale)  # output_scale != 1, so raw units are exercised
    return sae


@pytest.fixture(scope="module")
def steerer(llama):
    sae, transcoder = _sae(RESID, RESID, 1), _sae(MLP_IN, MLP_OUT, 2)
    return Steerer(llama, {"sae": SteeringSAE(sae, torch.linspace(1, 4, 64)), "tc": SteeringSAE(transcoder)})


def request(*interventions, n=6, **kw) -> SteerRequest:
    generation = {"max_new_tokens": n, **kw.pop("generation", {})}
    return SteerRequest(prompt=PROMPT, interventions=list(interventions), generation=generation, **kw)


def direction(steerer, sae_id: str, feature: int) -> torch.Tensor:
    sae = steerer.saes[sae_id].sae
    return (sae.W_dec[feature] / sae.output_scale).detach()


def reference(model, prompt_ids: list[int], n: int, hooks_for=lambda length: []) -> tuple[list[int], list]:
    """Greedy tokens and last-position logits, rerunning everything each step."""
    ids, logits = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(n):
            out = model.bridge.run_with_hooks(torch.tensor([ids]), fwd_hooks=hooks_for(len(ids)))
            logits.append(out[0, -1].float())
            ids.append(int(out[0, -1].argmax()))
    return ids[len(prompt_ids) :], logits


def active_feature(steerer, sae_id: str, position: int) -> tuple[int, float]:
    """The most active feature of an SAE at a prompt position, and its activation."""
    steering = steerer.saes[sae_id]
    ids = steerer.prompt_ids(PROMPT)
    x = steerer.model.activations(torch.tensor([ids]), [steering.hook_in])[steering.hook_in][0, position]
    acts = steering.sae.encode(x[None])[0]
    return int(acts.argmax()), float(acts.max())


def logits_of(completion) -> torch.Tensor:
    return torch.stack([step.logits for step in completion.steps])


@pytest.mark.parametrize("backend", [BridgeBackend, hf_backend])
def test_runner_extends_the_kv_cache_and_matches_a_full_forward(llama, backend):
    ids = [llama.tokenizer.bos_token_id, *llama.tokenizer.encode(PROMPT)]
    runner = Runner(llama, backend(llama))
    first = runner.forward(ids[:-3])
    steps = [runner.forward([t]) for t in ids[-3:]]
    full = llama.bridge(torch.tensor([ids]))[0].float()
    assert runner.use_cache and runner.positions_run == len(ids)  # one position per later step
    torch.testing.assert_close(first, full[-4], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack(steps), full[-3:], atol=1e-5, rtol=0)


def test_the_plain_hf_path_shares_weights_and_steers_like_the_bridge(llama, steerer):
    hf = steerer.hf
    assert hf is not None and hf is hf_backend(llama)  # built once per model
    assert hf.supports([RESID, MLP_IN, MLP_OUT, "blocks.1.hook_resid_mid"])
    embed = dict(hf.hf_model.named_parameters())["model.embed_tokens.weight"]
    assert embed.data_ptr() == llama.bridge.original_model.model.embed_tokens.weight.data_ptr()
    assert not hf.supports(["blocks.1.attn.hook_pattern"])  # not a module boundary: bridge only
    changes = [
        FeatureIntervention(sae="sae", feature=3, mode="clamp", strength=4.0),
        FeatureIntervention(sae="tc", feature=7, mode="scale", strength=3.0),
    ]
    splice = Splice(steerer.saes, resolve(changes, steerer.saes), prompt_len=5)
    assert steerer.backend(splice, frozen=False) is hf and steerer.backend(splice, frozen=True) is steerer.bridge
    bridge_only = Steerer(llama, steerer.saes, backend="bridge")
    assert bridge_only.hf is None
    fast = steerer.generate(request(*changes, n=8), keep_logits=True)
    slow = bridge_only.generate(request(*changes, n=8), keep_logits=True)
    assert fast.token_ids == slow.token_ids
    torch.testing.assert_close(logits_of(fast), logits_of(slow), atol=1e-5, rtol=0)


def test_the_hf_path_is_refused_where_it_disagrees_with_the_bridge(llama):
    hf = HFBackend(llama)  # its own, not the model's shared one
    hf.sites[RESID] = hf.sites["blocks.0.hook_resid_pre"]  # a wrong module for this hook
    assert not hf.supports([RESID])
    assert hf.supports(["blocks.1.hook_resid_pre"])


def test_a_model_without_kv_cache_reruns_the_sequence(tiny_model):
    assert hf_backend(tiny_model) is None
    runner = Runner(tiny_model, BridgeBackend(tiny_model))
    runner.forward([tiny_model.tokenizer.bos_token_id, 72, 105])
    last = runner.forward([33])
    assert not runner.use_cache and runner.positions_run == 3 + 4
    full = tiny_model.bridge(torch.tensor([[tiny_model.tokenizer.bos_token_id, 72, 105, 33]]))[0, -1]
    torch.testing.assert_close(last, full.float(), atol=1e-6, rtol=0)


def test_plain_generation_equals_a_greedy_rerun_loop(steerer):
    completion = steerer.generate(request(n=8), keep_logits=True)
    tokens, logits = reference(steerer.model, steerer.prompt_ids(PROMPT), 8)
    assert completion.token_ids == tokens
    torch.testing.assert_close(logits_of(completion), torch.stack(logits), atol=1e-5, rtol=0)


def test_clamp_to_the_features_own_value_is_the_plain_model(steerer):
    last = len(steerer.prompt_ids(PROMPT)) - 1
    feature, value = active_feature(steerer, "sae", last)
    assert value > 0
    own = FeatureIntervention(
        sae="sae",
        feature=feature,
        mode="clamp",
        strength=value,
        positions="prompt",
        from_token=last,
    )
    plain = steerer.generate(request(n=4), keep_logits=True)
    clamped = steerer.generate(request(own, n=4), keep_logits=True)
    assert (logits_of(clamped) - logits_of(plain)).abs().max() <= 1e-5
    other = own.model_copy(update={"strength": value + 5})
    assert (
        logits_of(steerer.generate(request(other, n=1), keep_logits=True)) - logits_of(plain)[:1]
    ).abs().max() > 1e-3


def test_ablation_equals_a_hook_subtracting_the_decoder_contribution(steerer):
    feature, _ = active_feature(steerer, "sae", 2)
    sae = steerer.saes["sae"].sae
    row = direction(steerer, "sae", feature)

    def hooks_for(length):
        def subtract(x, hook):
            acts = sae.encode(x[0])[:, feature]
            acts[0] = 0  # BOS: from_token 1
            return x - acts[None, :, None] * row

        return [(RESID, subtract)]

    ablated = steerer.generate(
        request(FeatureIntervention(sae="sae", feature=feature, mode="ablate"), n=6),
        keep_logits=True,
    )
    tokens, logits = reference(steerer.model, steerer.prompt_ids(PROMPT), 6, hooks_for)
    assert ablated.token_ids == tokens
    torch.testing.assert_close(logits_of(ablated), torch.stack(logits), atol=1e-5, rtol=0)
    plain = steerer.generate(request(n=6), keep_logits=True)
    assert (logits_of(ablated) - logits_of(plain)).abs().max() > 1e-4  # the feature was active


def test_add_with_strength_zero_is_plain_and_add_equals_a_hand_written_hook(steerer):
    plain = steerer.generate(request(n=8), keep_logits=True)
    zero = steerer.generate(request(FeatureIntervention(sae="sae", feature=5, strength=0.0), n=8), keep_logits=True)
    assert zero.token_ids == plain.token_ids
    assert torch.equal(logits_of(zero), logits_of(plain))
    row = direction(steerer, "sae", 5)

    def hooks_for(length):
        return [(RESID, lambda x, hook: torch.cat([x[:, :1], x[:, 1:] + 6.0 * row], 1))]

    added = steerer.generate(request(FeatureIntervention(sae="sae", feature=5, strength=6.0), n=8), keep_logits=True)
    tokens, logits = reference(steerer.model, steerer.prompt_ids(PROMPT), 8, hooks_for)
    assert added.token_ids == tokens and added.token_ids != plain.token_ids
    torch.testing.assert_close(logits_of(added), torch.stack(logits), atol=1e-5, rtol=0)


@pytest.mark.parametrize("positions", ["prompt", "generated", "both"])
def test_positions_and_from_token_choose_where_the_change_applies(steerer, positions):
    prompt_len = len(steerer.prompt_ids(PROMPT))
    row = direction(steerer, "sae", 9)
    start = {"prompt": 3, "generated": 0, "both": prompt_len + 2}[positions]

    def hooks_for(length):
        pos = torch.arange(length)
        chosen = pos >= start
        if positions == "prompt":
            chosen &= pos < prompt_len
        elif positions == "generated":
            chosen &= pos >= prompt_len
        return [(RESID, lambda x, hook: x + 8.0 * chosen[None, :, None] * row)]

    change = FeatureIntervention(sae="sae", feature=9, strength=8.0, positions=positions, from_token=start)
    steered = steerer.generate(request(change, n=6), keep_logits=True)
    tokens, logits = reference(steerer.model, steerer.prompt_ids(PROMPT), 6, hooks_for)
    assert steered.token_ids == tokens
    torch.testing.assert_close(logits_of(steered), torch.stack(logits), atol=1e-5, rtol=0)
    plain = logits_of(steerer.generate(request(n=6), keep_logits=True))
    differs = (logits_of(steered) - plain).abs().amax(-1) > 1e-4
    # the first new token is predicted from the prompt: untouched when only generated tokens change
    assert bool(differs[0]) == (positions == "prompt") and bool(differs.any())


def test_transcoder_clamp_replaces_the_mlp_output_keeping_the_error(steerer):
    tc = steerer.saes["tc"].sae
    feature, _ = active_feature(steerer, "tc", 3)
    row = direction(steerer, "tc", feature)
    seen = {}

    def hooks_for(length):
        def read(x, hook):
            seen["acts"] = tc.encode(x[0])[:, feature]
            return x

        def write(y, hook):
            delta = 2.5 - seen["acts"]
            delta[0] = 0
            return y + delta[None, :, None] * row

        return [(MLP_IN, read), (MLP_OUT, write)]

    clamped = steerer.generate(
        request(FeatureIntervention(sae="tc", feature=feature, mode="clamp", strength=2.5), n=5),
        keep_logits=True,
    )
    tokens, logits = reference(steerer.model, steerer.prompt_ids(PROMPT), 5, hooks_for)
    assert clamped.token_ids == tokens
    torch.testing.assert_close(logits_of(clamped), torch.stack(logits), atol=1e-5, rtol=0)


def test_scale_and_relative_strengths(steerer):
    last = len(steerer.prompt_ids(PROMPT)) - 1
    feature, value = active_feature(steerer, "sae", last)
    # at one position, doubling the activation is adding its own value there
    where = {"sae": "sae", "feature": feature, "positions": "prompt", "from_token": last}
    doubled = steerer.generate(request(FeatureIntervention(mode="scale", strength=2.0, **where), n=3), keep_logits=True)
    added = steerer.generate(request(FeatureIntervention(strength=value, **where), n=3), keep_logits=True)
    plain = steerer.generate(request(n=3), keep_logits=True)
    torch.testing.assert_close(logits_of(doubled), logits_of(added), atol=1e-5, rtol=0)
    assert (logits_of(doubled) - logits_of(plain)).abs().max() > 1e-4
    past = FeatureIntervention(mode="scale", strength=2.0, **{**where, "from_token": last + 1})
    assert torch.equal(logits_of(steerer.generate(request(past, n=3), keep_logits=True)), logits_of(plain))
    # relative: in units of the feature's max activation from its analysis
    peak = float(steerer.saes["sae"].max_activation[feature])
    relative = FeatureIntervention(sae="sae", feature=feature, strength=2.0, relative=True)
    result = steerer.steer(request(relative, n=4), keep_logits=True)
    assert result.changes[0]["value"] == pytest.approx(2.0 * peak)
    absolute = relative.model_copy(update={"strength": 2.0 * peak, "relative": False})
    expected = steerer.generate(request(absolute, n=4), keep_logits=True)
    assert (logits_of(result.steered) - logits_of(expected)).abs().max() <= 1e-5  # steer() batches the pair


@pytest.mark.parametrize("frozen", [False, True])
def test_kv_cached_steered_generation_equals_uncached(steerer, frozen):
    changes = [
        FeatureIntervention(sae="sae", feature=3, mode="clamp", strength=4.0),
        FeatureIntervention(sae="tc", feature=7, mode="scale", strength=3.0, positions="prompt"),
        FeatureIntervention(sae="sae", feature=11, strength=5.0, positions="generated"),
        FeatureIntervention(sae="tc", feature=2, mode="ablate", from_token=3),
    ]
    cached = steerer.generate(request(*changes, n=10, frozen_attention=frozen), keep_logits=True)
    uncached = steerer.generate(
        request(*changes, n=10, frozen_attention=frozen, generation={"use_cache": False}),
        keep_logits=True,
    )
    assert cached.token_ids == uncached.token_ids
    assert (logits_of(cached) - logits_of(uncached)).abs().max() <= 1e-4


def test_frozen_attention_uses_the_unsteered_patterns_on_the_same_tokens(steerer):
    model = steerer.model
    row = direction(steerer, "sae", 4)
    patterns = [h for h in model.bridge.hook_dict if h.endswith("attn.hook_pattern")]
    add = FeatureIntervention(sae="sae", feature=4, strength=0.1)
    frozen = steerer.generate(request(add, n=6, frozen_attention=True), keep_logits=True)
    ids = steerer.prompt_ids(PROMPT) + frozen.token_ids[:-1]
    clean: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        model.bridge.run_with_hooks(
            torch.tensor([ids]),
            fwd_hooks=[(h, lambda t, hook: clean.__setitem__(hook.name, t.clone())) for h in patterns],
        )
        hooks = [(h, lambda t, hook: clean[hook.name]) for h in patterns]
        hooks.append((RESID, lambda x, hook: torch.cat([x[:, :1], x[:, 1:] + 0.1 * row], 1)))
        expected = model.bridge.run_with_hooks(torch.tensor([ids]), fwd_hooks=hooks)[0].float()
    prompt_len = len(steerer.prompt_ids(PROMPT))
    torch.testing.assert_close(logits_of(frozen), expected[prompt_len - 1 :], atol=1e-5, rtol=0)
    live = steerer.generate(request(add, n=6), keep_logits=True)
    assert (logits_of(live)[0] - logits_of(frozen)[0]).abs().max() > 1e-2


def test_sampling_is_deterministic_with_a_seed(steerer):
    def sampled(seed, top_p=1.0):
        return steerer.generate(request(n=20, generation={"temperature": 1.5, "top_p": top_p, "seed": seed})).token_ids

    assert sampled(7) == sampled(7)
    assert sampled(7) != sampled(8)
    assert sampled(7, top_p=1e-6) == steerer.generate(request(n=20)).token_ids  # only the top token is left
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    generator = torch.Generator().manual_seed(0)
    drawn = {choose(logits, GenerationConfig(temperature=1, top_p=0.7), generator) for _ in range(300)}
    assert drawn == {0, 1}


def test_default_and_steered_side_by_side_do_not_leak(steerer):
    add = FeatureIntervention(sae="sae", feature=5, strength=6.0)
    result = steerer.steer(request(add, n=8, track=[65, 66]), keep_logits=True)
    alone_default = steerer.generate(request(n=8), keep_logits=True)
    alone_steered = steerer.generate(request(add, n=8), keep_logits=True)
    # the pair runs as one batch of two: equal up to the batched matmuls' rounding
    assert (logits_of(result.default) - logits_of(alone_default)).abs().max() <= 1e-5
    assert (logits_of(result.steered) - logits_of(alone_steered)).abs().max() <= 1e-5
    assert result.default.token_ids != result.steered.token_ids
    assert result.prompt_tokens[0] == "<bos>" and len(result.prompt_tokens) == len(steerer.prompt_ids(PROMPT))
    for step in result.steered.steps:
        probs = step.logits.softmax(-1)
        assert step.probability == pytest.approx(float(probs[step.token_id]))
        assert step.tracked == pytest.approx({65: float(probs[65]), 66: float(probs[66])})
    dumped = json.loads(result.model_dump_json())
    assert "logits" not in dumped["steered"]["steps"][0] and dumped["steered"]["steps"][0]["tracked"]


MIXED = [  # different prompt lengths, interventions, lengths and samplers
    SteerRequest(
        prompt="A",
        interventions=[FeatureIntervention(sae="sae", feature=3, mode="clamp", strength=4.0)],
        generation={"max_new_tokens": 4},
    ),
    SteerRequest(
        prompt="The cat sat on the mat and looked",
        interventions=[
            FeatureIntervention(sae="tc", feature=7, mode="scale", strength=3.0, positions="prompt"),
            FeatureIntervention(sae="sae", feature=11, strength=5.0, positions="generated"),
        ],
        generation={"max_new_tokens": 9, "temperature": 1.2, "seed": 3},
        track=[65],
    ),
    SteerRequest(prompt="Once upon", generation={"max_new_tokens": 6}),
    SteerRequest(
        prompt="Dogs bark at",
        interventions=[FeatureIntervention(sae="tc", feature=2, mode="ablate", from_token=3)],
        generation={"max_new_tokens": 7, "stop": ["zz"]},
    ),
]


def _by_key(pairs) -> dict:
    steps: dict = {}
    for key, step in pairs:
        steps.setdefault(key, []).append(step)
    return steps


def assert_same_as_alone(steerer, request_: SteerRequest, steps: list) -> None:
    alone = steerer.generate(request_, keep_logits=True)
    assert [s.token_id for s in steps] == alone.token_ids
    assert steps[-1].finish_reason == alone.finish_reason
    assert "".join(s.text for s in steps) == alone.text
    batched = torch.stack([s.logits for s in steps])
    assert (batched - logits_of(alone)).abs().max() <= 1e-4
    assert [s.tracked.keys() for s in steps] == [s.tracked.keys() for s in alone.steps]


def test_a_batch_of_mixed_requests_equals_each_run_alone(steerer):
    assert all(steerer.batchable(r) for r in MIXED)
    pairs = [pair for step in steerer.stream_batch([(r, True) for r in MIXED], keep_logits=True) for pair in step]
    steps = _by_key(pairs)
    for index, request_ in enumerate(MIXED):
        assert_same_as_alone(steerer, request_, steps[index])


def test_sequences_join_and_leave_a_running_batch(steerer):
    batch = steerer.batch()
    seen: list = []
    steerer.add_to(batch, "short", MIXED[0], keep_logits=True)
    steerer.add_to(batch, "sampled", MIXED[1], keep_logits=True)
    seen += batch.step() + batch.step()
    steerer.add_to(batch, "late", MIXED[3], keep_logits=True)  # joins a batch two tokens in
    steerer.add_to(batch, "cancelled", MIXED[2], keep_logits=True)
    seen += batch.step() + batch.step()
    batch.drop({"cancelled"})
    width = batch.mask.shape[1]
    while len(batch):
        seen += batch.step()
        assert batch.mask is None or batch.mask.shape[1] <= width + 9  # no growth past the longest row
    steps = _by_key(seen)
    assert len(steps["cancelled"]) == 2 and not steps["cancelled"][-1].finish_reason
    for key, request_ in (("short", MIXED[0]), ("sampled", MIXED[1]), ("late", MIXED[3])):
        assert_same_as_alone(steerer, request_, steps[key])
    assert batch.cache is None and not batch.rows


def test_padding_columns_leave_with_the_long_row(steerer):
    batch = steerer.batch()
    long = MIXED[1].model_copy(update={"generation": GenerationConfig(max_new_tokens=2)})
    steerer.add_to(batch, "long", long)
    steerer.add_to(batch, "short", MIXED[2])
    batch.step()
    assert batch.mask.shape[1] == len(steerer.prompt_ids(long.prompt))
    batch.step()  # the long prompt's row ends: the short row's padding columns go with it
    assert [r.key for r in batch.rows] == ["short"]
    assert batch.mask.shape[1] == len(steerer.prompt_ids(MIXED[2].prompt)) + 1
    assert int(batch.mask.min()) == 1 and batch.cache.get_seq_length() == batch.mask.shape[1]


def test_frozen_attention_and_uncached_runs_are_not_batched(steerer, tiny_model):
    assert not steerer.batchable(MIXED[2].model_copy(update={"frozen_attention": True}))
    assert not steerer.batchable(MIXED[2].model_copy(update={"generation": GenerationConfig(use_cache=False)}))
    with pytest.raises(ValueError, match="no plain HF path"):
        Steerer(tiny_model, {}).batch()


def test_text_stream_holds_back_partial_characters_and_stops(llama):
    tokenizer = llama.tokenizer
    stream = TextStream(tokenizer, ["STOP"])
    pieces = [stream.push(t) for t in tokenizer.encode("Hé ST")]
    assert pieces == ["H", "", "é", " ", "", ""]  # é is two byte tokens; "ST" may begin "STOP"
    pieces += [stream.push(t) for t in tokenizer.encode("OP now")]
    assert stream.stopped and "".join(pieces) == "Hé " and stream.flush() == ""
    other = TextStream(tokenizer, ["STOP"])
    text = "".join(other.push(t) for t in tokenizer.encode("a ST")) + other.flush()
    assert text == "a ST" and not other.stopped


def test_stop_sequences_and_eos_end_the_generation(steerer, monkeypatch):
    plain = steerer.generate(request(n=8))
    stop = plain.text[2:4]
    stopped = steerer.generate(request(n=8, generation={"stop": [stop]}))
    assert stopped.finish_reason == "stop" and stopped.text == plain.text[: plain.text.index(stop)]
    assert "".join(s.text for s in stopped.steps) == stopped.text and plain.finish_reason == "length"
    ids = plain.token_ids
    first_new = next((k for k in range(1, len(ids)) if ids[k] not in ids[:k]), 0)
    monkeypatch.setattr(steerer, "eos", ids[first_new])
    ended = steerer.generate(request(n=8))
    assert ended.finish_reason == "eos" and ended.token_ids == ids[: first_new + 1]
    assert ended.text == steerer.model.tokenizer.decode(ids[:first_new]) and ended.steps[-1].text == ""


def test_errors_name_the_field(steerer, llama):
    def fails(match, *changes, **kw):
        with pytest.raises(ValueError, match=match):
            steerer.generate(request(*changes, **kw))

    fails(
        r"interventions\[0\]\.feature: 64 is out of range",
        FeatureIntervention(sae="sae", feature=64),
    )
    fails(
        r"interventions\[1\]\.sae: no SAE 'x'",
        FeatureIntervention(sae="sae", feature=1),
        FeatureIntervention(sae="x", feature=1),
    )
    fails(r"interventions\[0\]\.sae: name one of", FeatureIntervention(feature=1))
    fails(
        r"interventions\[0\]\.relative: SAE 'tc' has no analysis",
        FeatureIntervention(sae="tc", feature=1, relative=True),
    )
    fails(r"track: token ids \[9999\]", track=[9999])
    fails(r"generation.max_new_tokens: .* context of 1024", n=1020)
    with pytest.raises(ValidationError, match="strength"):
        FeatureIntervention(feature=1, strength=float("inf"))
    with pytest.raises(ValidationError, match="mode"):
        FeatureIntervention(feature=1, mode="boost")
    with pytest.raises(ValidationError, match="relative: only"):
        FeatureIntervention(feature=1, mode="scale", strength=2, relative=True)
    with pytest.raises(ValidationError, match="strength: ablate"):
        FeatureIntervention(feature=1, mode="ablate", strength=3)
    with pytest.raises(ValidationError, match="feature"):
        FeatureIntervention(feature=-1)
    with pytest.raises(ValueError, match="has no hook 'blocks.9.hook_resid_post'"):
        Steerer(
            llama,
            {"s": SteeringSAE(_sae("blocks.9.hook_resid_post", "blocks.9.hook_resid_post", 0))},
        )
    with pytest.raises(ValueError, match=r"track: 'ab' is 2 tokens"):
        token_ids(llama, ["ab"])


def test_cli_steers_a_saved_sae(tmp_path, capsys):
    spec = parse_spec(
        {
            "architecture": "topk",
            "hook_in": "blocks.0.hook_resid_post",
            "hook_out": "blocks.0.hook_resid_post",
            "d_in": 64,
            "d_out": 64,
            "d_sae": 128,
            "k": 8,
            "model": "tiny-llama",
        }
    )
    build_sae(spec).save(open_store(str(tmp_path / "sae")))
    argv = [
        "steer",
        "--sae",
        str(tmp_path / "sae"),
        "--feature",
        "3",
        "--strength",
        "30",
        "--prompt",
        "Hi there",
        "--max-tokens",
        "5",
        "--track",
        "a",
    ]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["changes"] == [
        {
            "sae": "sae",
            "feature": 3,
            "mode": "add",
            "value": 30.0,
            "positions": "both",
            "from_token": 1,
        }
    ]
    assert len(result["steered"]["token_ids"]) == 5 and result["steered"]["token_ids"] != result["default"]["token_ids"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "default (length):" in text and "steered (length):" in text and "add feature 3 (30)" in text
    assert text.count("P('a') per step:") == 2
    assert main([*argv, "--relative", "--documents", str(tmp_path / "none.sqlite")]) == 1
    assert "--relative needs the SAE's analysis" in capsys.readouterr().err
