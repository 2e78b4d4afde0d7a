"""Steered generation: the KV-cached loop, one token per step, default and steered side by side.

`Steerer.stream` yields a `Step` per generated token (id, released text, probabilities), which is
what a server streams; `Steerer.steer` runs the default and the steered continuation of one
prompt with the same settings and seed, so with no effective change they are identical.

Frozen attention (`frozen_attention=True`) is one of two semantics users ask for, so it is a
switch: every attention pattern of the steered run is replaced by the pattern the *unsteered*
model computes on the same tokens (a shadow run stepped in lockstep, on its own cache). Steering
then changes what heads move (values, MLPs, the residual stream) but never where they look.
Norm scales are not frozen. Off (the default), the model recomputes attention from the steered
residual stream, as the live model would.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field

from lm_saes.models import LanguageModel
from lm_saes.steering.batch import Batch
from lm_saes.steering.interventions import Change, FeatureIntervention, SteeringSAE, resolve
from lm_saes.steering.runner import Backend, BridgeBackend, Hook, Runner, hf_backend
from lm_saes.steering.sampling import GenerationConfig, TextStream, choose
from lm_saes.steering.splice import Splice, hook_names

FinishReason = Literal["length", "stop", "eos"]
MAX_TRACKED = 64
PATTERN_SUFFIX = "attn.hook_pattern"


class SteerRequest(BaseModel):
    """One prompt, the changes to make, and how to generate."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str
    interventions: list[FeatureIntervention] = Field(default_factory=list, max_length=256)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    track: list[int] = Field(
        default_factory=list,
        max_length=MAX_TRACKED,
        description="token ids whose probability is reported at every step",
    )
    frozen_attention: bool = False


class Step(BaseModel):
    """One generated token. `text` is what it releases (may be empty while a multi-byte
    character or a possible stop sequence is incomplete); probabilities are the model's own
    (temperature 1, before top-p)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: int
    token_id: int
    token: str
    text: str
    probability: float
    tracked: dict[int, float] = Field(default_factory=dict)
    finish_reason: FinishReason | None = None
    # [vocab] last-position logits, kept only when asked (tests, scripts); never serialized
    logits: torch.Tensor | None = Field(None, exclude=True, repr=False)


class Completion(BaseModel):
    text: str
    token_ids: list[int]
    steps: list[Step]
    finish_reason: FinishReason


class SteerResult(BaseModel):
    prompt_tokens: list[str]  # as the model sees them, BOS first: `from_token` indexes this list
    changes: list[dict]  # each intervention resolved: sae, feature, mode, absolute value, positions
    default: Completion
    steered: Completion
    frozen_attention: bool


class Steerer:
    """A model and the SAEs that interventions may name (by id).

    Runs one forward at a time (hooks live on the model's modules while a forward runs): a
    server holds its per-model lock around each step, or around a whole request.
    """

    def __init__(
        self,
        model: LanguageModel,
        saes: Mapping[str, SteeringSAE],
        backend: Literal["auto", "bridge"] = "auto",
    ):
        self.model = model
        self.saes = dict(saes)
        for sae_id, steering in self.saes.items():
            model.check_hooks([steering.hook_in, steering.hook_out])
            if steering.sae.spec.model and steering.sae.spec.model != model.name:
                raise ValueError(f"SAE {sae_id!r} was trained on {steering.sae.spec.model!r}, not {model.name!r}")
            steering.sae.to(model.device)
        self.bridge = BridgeBackend(model)
        self.hf = hf_backend(model) if backend == "auto" else None
        self.patterns = [h for h in self.bridge.points if h.endswith(PATTERN_SUFFIX)]
        self.eos = getattr(getattr(model.tokenizer, "hf", None), "eos_token_id", None)

    def prompt_ids(self, prompt: str) -> list[int]:
        return [self.model.tokenizer.bos_token_id, *self.model.tokenizer.encode(prompt)]

    def stream(self, request: SteerRequest, steered: bool = True, keep_logits: bool = False) -> Iterator[Step]:
        """Generate token by token; the last step carries the finish reason. Checks the request
        before the first step, so errors come from this call, not from iterating."""
        changes = resolve(request.interventions, self.saes) if steered else {}
        prompt = self.prompt_ids(request.prompt)
        self._check(len(prompt), request)
        splice = Splice(self.saes, changes, len(prompt)) if changes else None
        return self._loop(prompt, request, splice, keep_logits)

    def generate(self, request: SteerRequest, steered: bool = True, keep_logits: bool = False) -> Completion:
        return _complete(list(self.stream(request, steered, keep_logits)))

    def steer(self, request: SteerRequest, keep_logits: bool = False) -> SteerResult:
        """Default and steered continuations, stepped together (same seed, same settings)."""
        changes = resolve(request.interventions, self.saes)
        if self.batchable(request):  # one forward per step for both
            default_steps: list[Step] = []
            steered_steps: list[Step] = []
            for steps in self.stream_batch([(request, False), (request, True)], keep_logits):
                for index, step in steps:
                    (steered_steps if index else default_steps).append(step)
        else:
            default = self.stream(request, steered=False, keep_logits=keep_logits)
            steered = self.stream(request, keep_logits=keep_logits)
            default_steps, steered_steps = _interleave(default, steered)
        strings = self.model.tokenizer.token_strings(self.prompt_ids(request.prompt))
        return SteerResult(
            prompt_tokens=strings,
            changes=_describe(changes),
            default=_complete(default_steps),
            steered=_complete(steered_steps),
            frozen_attention=request.frozen_attention,
        )

    def _loop(
        self, prompt: list[int], request: SteerRequest, splice: Splice | None, keep_logits: bool
    ) -> Iterator[Step]:
        cfg = request.generation
        frozen = request.frozen_attention and splice is not None
        runner = Runner(self.model, self.backend(splice, frozen), cfg.use_cache)
        shadow = Runner(self.model, self.bridge, cfg.use_cache) if frozen else None
        continuation = Continuation(self, request, keep_logits)
        new = prompt
        while True:
            step = continuation.step(self._forward(runner, shadow, splice, new))
            yield step
            if step.finish_reason:
                return
            new = [step.token_id]

    def batchable(self, request: SteerRequest) -> bool:
        """Whether this request may share a `Batch` with others: the plain HF path runs its
        hooks, with a KV cache, and its attention is not frozen."""
        if self.hf is None or request.frozen_attention or not request.generation.use_cache:
            return False
        return self.hf.supports(hook_names(self.saes, resolve(request.interventions, self.saes)))

    def batch(self) -> Batch:
        """An empty batch on this model's HF path (see `batchable`)."""
        if self.hf is None:
            raise ValueError(f"{self.model.name}: no plain HF path, so no batched generation")
        return Batch(self.hf, self.model.tokenizer.bos_token_id)

    def add_to(
        self, batch: Batch, key: Hashable, request: SteerRequest, steered: bool = True, keep_logits: bool = False
    ) -> None:
        """Queue one continuation of `request` in `batch` (checked here, as `stream` checks)."""
        changes = resolve(request.interventions, self.saes) if steered else {}
        prompt = self.prompt_ids(request.prompt)
        self._check(len(prompt), request)
        splice = Splice(self.saes, changes, len(prompt)) if changes else None
        batch.add(key, Continuation(self, request, keep_logits), prompt, splice)

    def stream_batch(
        self, items: Sequence[tuple[SteerRequest, bool]], keep_logits: bool = False
    ) -> Iterator[list[tuple[int, Step]]]:
        """Several continuations ((request, steered) each) in one batch: per step, the
        (item index, Step) pairs it produced, until every one has finished."""
        batch = self.batch()
        for index, (request, steered) in enumerate(items):
            self.add_to(batch, index, request, steered, keep_logits)
        return _drain(batch)

    def backend(self, splice: Splice | None, frozen: bool) -> Backend:
        """The plain HF path when it runs these hooks like the bridge; frozen attention needs
        the bridge's `attn.hook_pattern`."""
        if frozen or self.hf is None or not self.hf.supports(splice.hook_names if splice else []):
            return self.bridge
        return self.hf

    def _forward(self, runner: Runner, shadow: Runner | None, splice: Splice | None, new: list[int]) -> torch.Tensor:
        if splice is None:
            return runner.forward(new)
        if shadow is None:
            return runner.forward(new, splice.hooks)
        patterns: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
            def fn(pattern: torch.Tensor) -> torch.Tensor:
                patterns[name] = pattern
                return pattern

            return fn

        def capture(start: int, n: int) -> list[Hook]:
            return [(h, keep(h)) for h in self.patterns]

        shadow.forward(new, capture)

        def frozen(start: int, n: int) -> list[Hook]:
            return [
                *((h, lambda t, h=h: patterns[h]) for h in self.patterns),
                *splice.hooks(start, n),
            ]

        return runner.forward(new, frozen)

    def _check(self, prompt_len: int, request: SteerRequest) -> None:
        n_ctx, vocab = int(self.model.bridge.cfg.n_ctx), int(self.model.bridge.cfg.d_vocab)
        if prompt_len + request.generation.max_new_tokens > n_ctx:
            raise ValueError(
                f"generation.max_new_tokens: {prompt_len} prompt tokens + "
                f"{request.generation.max_new_tokens} is more than the model's context of {n_ctx}"
            )
        bad = [t for t in request.track if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"track: token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})")


class Continuation:
    """One continuation's own state: sampler, seed, text and tracked tokens; turns each step's
    last-position logits into a `Step` (the lone loop and `Batch` share it)."""

    def __init__(self, steerer: Steerer, request: SteerRequest, keep_logits: bool):
        self.cfg = request.generation
        self.eos = steerer.eos
        self.tokenizer = steerer.model.tokenizer
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        self.text = TextStream(self.tokenizer, self.cfg.stop)
        self.track = request.track
        self.track_ids = torch.tensor(request.track, dtype=torch.long)
        self.keep_logits = keep_logits
        self.index = 0

    def step(self, logits: torch.Tensor) -> Step:
        cfg, index = self.cfg, self.index
        token = choose(logits, cfg, self.generator)
        probs = logits.softmax(-1)
        finish: FinishReason | None = None
        if cfg.stop_at_eos and token == self.eos:
            piece, finish = self.text.flush(), "eos"
        else:
            piece = self.text.push(token)
            finish = "stop" if self.text.stopped else None
            if finish is None and index == cfg.max_new_tokens - 1:
                piece, finish = piece + self.text.flush(), "length"
        tracked = (
            dict(zip(self.track, probs[self.track_ids.to(probs.device)].tolist(), strict=True)) if self.track else {}
        )
        self.index += 1
        return Step(
            index=index,
            token_id=token,
            token=self.tokenizer.token_strings([token])[0],
            text=piece,
            probability=float(probs[token]),
            tracked=tracked,
            finish_reason=finish,
            logits=logits if self.keep_logits else None,
        )


def _drain(batch: Batch) -> Iterator[list[tuple[int, Step]]]:
    while len(batch):
        yield [(cast(int, key), step) for key, step in batch.step()]


def _complete(steps: list[Step]) -> Completion:
    return Completion(
        text="".join(s.text for s in steps),
        token_ids=[s.token_id for s in steps],
        steps=steps,
        finish_reason=steps[-1].finish_reason or "length",
    )


def _interleave(a: Iterator[Step], b: Iterator[Step]) -> tuple[list[Step], list[Step]]:
    out_a: list[Step] = []
    out_b: list[Step] = []
    for source, out in ((a, out_a), (b, out_b)):
        out.append(next(source))
    while not (out_a[-1].finish_reason and out_b[-1].finish_reason):
        for source, out in ((a, out_a), (b, out_b)):
            if not out[-1].finish_reason:
                out.append(next(source))
    return out_a, out_b


def _describe(changes: Mapping[str, list[Change]]) -> list[dict]:
    return [
        {
            "sae": sae_id,
            "feature": c.feature,
            "mode": c.mode,
            "value": c.value,
            "positions": c.positions,
            "from_token": c.from_token,
        }
        for sae_id, group in changes.items()
        for c in group
    ]


def token_ids(model: LanguageModel, texts: Sequence[str]) -> list[int]:
    """Each text's single token id (for `track`); an error names a text that is not one token."""
    ids = []
    for text in texts:
        encoded = model.tokenizer.encode(text)
        if len(encoded) != 1:
            raise ValueError(
                f"track: {text!r} is {len(encoded)} tokens, not one "
                f"({model.tokenizer.token_strings(encoded)}); give a single token"
            )
        ids.append(encoded[0])
    return ids
