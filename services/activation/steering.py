"""ActivationService.Generate: steered generation (lm_saes.steering) over the service's caches.

The request is checked whole before any model work (sizes, finite strengths, known SAEs on one
model, features in range, token ids in the vocabulary); then the SAEs come from the service's
SAE cache and a `Steerer` per (model, SAE set) is kept, so repeated requests reuse the model,
the SAEs and the steerer's probed fast path. Requests the plain HF path runs are decoded
together (`generation.GenerationBatcher`, continuous batching); the others (frozen attention,
hooks only the bridge has) hold their model's lock for their whole length: steering hooks are
module state, shared with live feature activations.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from pydantic import ValidationError

from lm_saes.rpc.v1 import activation_pb2
from lm_saes.steering import Steerer, SteeringSAE, SteerRequest, Step, max_activations
from lm_saes.steering.generate import _describe
from lm_saes.steering.interventions import resolve
from services.activation.generation import GenerationBatcher, GenerationClosed
from services.common.errors import RequestError, invalid

if TYPE_CHECKING:
    from services.activation.servicer import ActivationServicer

MODES = {
    activation_pb2.STEER_MODE_ADD: "add",
    activation_pb2.STEER_MODE_CLAMP: "clamp",
    activation_pb2.STEER_MODE_ABLATE: "ablate",
    activation_pb2.STEER_MODE_SCALE: "scale",
}
POSITIONS = {
    activation_pb2.STEER_POSITIONS_BOTH: "both",
    activation_pb2.STEER_POSITIONS_PROMPT: "prompt",
    activation_pb2.STEER_POSITIONS_GENERATED: "generated",
}
MAX_STRENGTH = 1e6
MAX_STOP_CHARS = 200
CACHED_STEERERS = 4


def steer_request(
    request: activation_pb2.GenerateRequest, max_new_tokens: int, max_interventions: int, max_chars: int
) -> SteerRequest:
    """The proto request as the core's `SteerRequest`, or INVALID_ARGUMENT naming the field."""
    if not request.prompt:
        raise invalid("prompt", "give the text to continue")
    if len(request.prompt) > max_chars:
        raise invalid("prompt", f"{len(request.prompt)} characters; at most {max_chars} (max_text_chars)")
    if not 0 <= request.max_new_tokens <= max_new_tokens:
        raise invalid("max_new_tokens", f"must be in [1, {max_new_tokens}] (0: 32; max_new_tokens setting)")
    if len(request.interventions) > max_interventions:
        raise invalid("interventions", f"at most {max_interventions} per request (max_interventions)")
    if any(len(s) > MAX_STOP_CHARS for s in request.stop):
        raise invalid("stop", f"each stop sequence at most {MAX_STOP_CHARS} characters")
    for number, item in enumerate(request.interventions):
        where = f"interventions[{number}]"
        if not item.sae_id or len(item.sae_id) > 200:
            raise invalid(f"{where}.sae_id", "name an SAE of the document store (at most 200 characters)")
        if item.mode not in MODES:
            raise invalid(f"{where}.mode", f"unknown mode {item.mode}; 0 add, 1 clamp, 2 ablate, 3 scale")
        if item.positions not in POSITIONS:
            raise invalid(f"{where}.positions", f"unknown value {item.positions}; 0 both, 1 prompt, 2 generated")
        if not (math.isfinite(item.strength) and abs(item.strength) <= MAX_STRENGTH):
            raise invalid(
                f"{where}.strength", f"must be a finite number within ±{MAX_STRENGTH:g}, got {item.strength!r}"
            )
    raw = {
        "prompt": request.prompt,
        "interventions": [
            {
                "sae": i.sae_id,
                "feature": i.feature,
                "mode": MODES[i.mode],
                "strength": i.strength,
                "relative": i.relative,
                "positions": POSITIONS[i.positions],
                "from_token": i.from_token or 1,
            }
            for i in request.interventions
        ],
        "generation": {
            "max_new_tokens": request.max_new_tokens or 32,
            "temperature": request.temperature,
            "top_p": request.top_p or 1.0,
            "seed": request.seed,
            "stop": list(request.stop),
            "stop_at_eos": not request.ignore_eos,
        },
        "track": list(request.track),
        "frozen_attention": request.frozen_attention,
    }
    try:
        return SteerRequest.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        raise invalid(_field(first["loc"]), first["msg"]) from None


def _field(loc: tuple) -> str:
    """("interventions", 2, "sae") -> "interventions[2].sae_id"; ("generation", "top_p") -> "top_p"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "generation":
            out += f".{'sae_id' if part == 'sae' else part}" if out else str(part)
    return out or "request"


def _event(step: Step, run: str) -> activation_pb2.GenerateEvent:
    return activation_pb2.GenerateEvent(
        run=run,
        index=step.index,
        token_id=step.token_id,
        token=step.token,
        text=step.text,
        probability=step.probability,
        tracked=step.tracked,
        finish_reason=step.finish_reason or "",
    )


@dataclass
class _Entry:
    steerer: Steerer
    lock: threading.Lock  # the model's
    batcher: GenerationBatcher | None  # None where the model has no plain HF path


class SteeringHost:
    """The Generate RPC's work, on the servicer's model and SAE caches."""

    def __init__(self, servicer: ActivationServicer):
        self.servicer = servicer
        self.entries: OrderedDict[tuple[str, ...], _Entry] = OrderedDict()
        self.lock = threading.Lock()

    def _entry(self, sae_ids: list[str]) -> _Entry:
        loaded = [self.servicer.sae(sae_id) for sae_id in sae_ids]
        models = {item.model.model.name for item in loaded}
        if len(models) > 1:
            raise invalid("interventions", f"the SAEs are on different models {sorted(models)}; steer one model")
        key = (next(iter(models)), *sorted(sae_ids))
        model = loaded[0].model
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        saes = {
            item.sae_id: SteeringSAE(item.sae, max_activations(self.servicer.documents, item.sae_id, item.sae.d_sae))
            for item in loaded
        }
        with model.lock:  # the steerer probes its fast path with a forward
            steerer = Steerer(model.model, saes)
        batcher = None
        if steerer.hf is not None:
            batcher = GenerationBatcher(steerer, model.lock, self.servicer.settings.max_generate_batch, "-".join(key))
        entry = _Entry(steerer, model.lock, batcher)
        with self.lock:
            self.entries[key] = entry
            while len(self.entries) > CACHED_STEERERS:
                evicted = self.entries.popitem(last=False)[1]
                if evicted.batcher:
                    evicted.batcher.close()
        return entry

    def close(self) -> None:
        with self.lock:
            for entry in self.entries.values():
                if entry.batcher:
                    entry.batcher.close()
            self.entries.clear()

    def generate(self, request: activation_pb2.GenerateRequest) -> Iterator[activation_pb2.GenerateEvent]:
        settings = self.servicer.settings
        steer = steer_request(request, settings.max_new_tokens, settings.max_interventions, settings.max_text_chars)
        if not steer.interventions:
            raise invalid("interventions", "give at least one feature to change (sae_id, feature, mode, strength)")
        entry = self._entry(sorted({i.sae for i in steer.interventions}))
        steerer = entry.steerer
        vocab = int(steerer.model.bridge.cfg.d_vocab)
        bad = [t for t in steer.track if not 0 <= t < vocab]
        if bad:
            raise invalid("track", f"token ids must be in [0, {vocab}), got {bad[:3]}")
        try:
            changes = resolve(steer.interventions, steerer.saes)
        except ValueError as error:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(error).replace(".sae:", ".sae_id:")) from None
        prompt = steerer.prompt_ids(steer.prompt)
        if len(prompt) + steer.generation.max_new_tokens > settings.max_text_tokens + 1:
            raise invalid(
                "prompt",
                f"{len(prompt) - 1} prompt tokens plus max_new_tokens exceed "
                f"{settings.max_text_tokens} (max_text_tokens)",
            )
        rows = [("steered", steer, True)] + ([("default", steer, False)] if request.compare else [])
        first = True
        for run, step in self._steps(entry, rows):
            event = _event(step, run)
            if first:
                event.prompt_tokens.extend(steerer.model.tokenizer.token_strings(prompt))
                event.changes_json = json.dumps(_describe(changes))
                first = False
            yield event

    def _steps(self, entry: _Entry, rows: list[tuple[str, SteerRequest, bool]]) -> Iterator[tuple[str, Step]]:
        """Batched with other requests where the HF path runs this request; else alone, holding
        the model's lock for the whole generation (the bridge's hooks and frozen attention)."""
        if entry.batcher and entry.steerer.batchable(rows[0][1]):
            try:
                steps = entry.batcher.submit(rows)
            except GenerationClosed:  # evicted just now: a fresh entry
                fresh = self._entry(sorted({i.sae for i in rows[0][1].interventions}))
                assert fresh.batcher is not None
                steps = fresh.batcher.submit(rows)
            yield from steps
            return
        with entry.lock:
            live = {run: entry.steerer.stream(request, steered) for run, request, steered in rows}
            while live:
                for run, steps_ in list(live.items()):
                    step = next(steps_, None)
                    if step is None:
                        del live[run]
                        continue
                    yield run, step
