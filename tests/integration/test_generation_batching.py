"""Concurrent Generate requests share one continuously batched decode (services/activation/generation.py).

The batcher runs in-process on a tiny random Llama (the HF path batches; the native tiny model
of the service tests has none): callers on their own threads, as gRPC handlers are.
"""

from __future__ import annotations

import threading

import pytest
import torch

from lm_saes.config import ModelConfig
from lm_saes.models import load_language_model
from lm_saes.saes import build_sae, parse_spec
from lm_saes.steering import FeatureIntervention, Steerer, SteeringSAE, SteerRequest
from services.activation.generation import GenerationBatcher, GenerationClosed

RESID = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def steerer():
    model = load_language_model(ModelConfig(name="tiny-llama", tiny_layers=2, tiny_d_model=32, seed=0))
    spec = parse_spec(
        {"architecture": "topk", "hook_in": RESID, "hook_out": RESID, "d_in": 32, "d_out": 32, "d_sae": 64, "k": 8}
        | {"seed": 1, "model": "tiny-llama"}
    )
    return Steerer(model, {"sae": SteeringSAE(build_sae(spec).eval())})


def requests() -> list[SteerRequest]:
    prompts = ["A", "The cat sat on the mat and", "Once upon a", "Dogs"]
    return [
        SteerRequest(
            prompt=prompt,
            interventions=[FeatureIntervention(sae="sae", feature=3 + i, strength=2.0 + i)],
            generation={"max_new_tokens": 5 + 3 * i, "temperature": 0.8 * (i % 2), "seed": i},
        )
        for i, prompt in enumerate(prompts)
    ]


@pytest.fixture
def forwards(steerer, monkeypatch):
    """The batch size of every batched forward (one with an attention mask; the fast path's
    probe and lone runs have none)."""
    sizes: list[int] = []
    run = type(steerer.hf).run

    def counted(self, chunk, *args, **kwargs):
        if "attention_mask" in kwargs:
            sizes.append(int(chunk.shape[0]))
        return run(self, chunk, *args, **kwargs)

    monkeypatch.setattr(type(steerer.hf), "run", counted)
    return sizes


def collect(batcher: GenerationBatcher, rows, out: dict, key, queued: threading.Semaphore | None = None) -> None:
    steps = batcher.submit(rows)
    if queued:
        queued.release()
    out[key] = [(run, step.token_id) for run, step in steps]


def test_concurrent_requests_are_decoded_together_and_each_equals_its_lone_run(steerer, forwards):
    lock = threading.Lock()
    batcher = GenerationBatcher(steerer, lock, max_rows=8, name="test")
    out: dict = {}
    queued = threading.Semaphore(0)
    with lock:  # every request is queued before the first forward can run
        threads = [
            threading.Thread(
                target=collect, args=(batcher, [("steered", r, True), ("default", r, False)], out, i, queued)
            )
            for i, r in enumerate(requests())
        ]
        for thread in threads:
            thread.start()
        for _ in threads:
            assert queued.acquire(timeout=30)
    for thread in threads:
        thread.join(60)
    batcher.close()
    sizes = list(forwards)
    for i, request in enumerate(requests()):
        steered = [t for run, t in out[i] if run == "steered"]
        default = [t for run, t in out[i] if run == "default"]
        assert steered == steerer.generate(request).token_ids
        assert default == steerer.generate(request, steered=False).token_ids
    longest = max(r.generation.max_new_tokens for r in requests())
    assert max(sizes) == 8  # all eight continuations in one forward
    assert len(sizes) <= longest + 2  # one forward per step, plus the prefills of who joined


def test_rows_beyond_max_rows_wait_and_a_cancelled_caller_leaves_the_batch(steerer, forwards):
    lock = threading.Lock()
    batcher = GenerationBatcher(steerer, lock, max_rows=2, name="test")
    reqs = requests()
    first = batcher.submit([("steered", reqs[3], True)])  # 14 tokens: outlives the others
    seen = [next(first), next(first)]
    out: dict = {}
    threads = [
        threading.Thread(target=collect, args=(batcher, [("steered", r, True)], out, i)) for i, r in enumerate(reqs[:2])
    ]
    for thread in threads:
        thread.start()
    seen.append(next(first))
    first.close()  # the client went away: its row leaves, the waiting ones run
    for thread in threads:
        thread.join(60)
    batcher.close()
    assert [step.index for _, step in seen] == [0, 1, 2]
    for i in range(2):
        assert [t for _, t in out[i]] == steerer.generate(reqs[i]).token_ids
    assert max(forwards) <= 2
    with pytest.raises(GenerationClosed):
        batcher.submit([("steered", reqs[0], True)])


def test_a_request_that_fails_to_join_gets_the_error_and_the_others_go_on(steerer):
    batcher = GenerationBatcher(steerer, threading.Lock(), max_rows=4, name="test")
    good = requests()[0]
    too_long = good.model_copy(update={"prompt": "x" * (int(steerer.model.bridge.cfg.n_ctx) + 10)})
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(batcher.submit([("steered", too_long, True)]))
    assert [s.token_id for _, s in batcher.submit([("steered", good, True)])] == steerer.generate(good).token_ids
    batcher.close()
    batcher._thread.join(10)  # noqa: SLF001
    assert not batcher._thread.is_alive()  # noqa: SLF001


def test_a_lone_batched_step_matches_the_hf_logits(steerer):
    """The batch's first forward is the model's own: its logits equal a plain HF forward."""
    request = requests()[2].model_copy(update={"interventions": []})
    steps = [s for pairs in steerer.stream_batch([(request, False)], keep_logits=True) for _, s in pairs]
    ids = torch.tensor([steerer.prompt_ids(request.prompt)])
    with torch.no_grad():
        expected = steerer.hf.hf_model(input_ids=ids).logits[0, -1].float()
    assert (steps[0].logits - expected).abs().max() <= 1e-5
