"""POST /steer: steered generation streamed as server-sent events (scope `compute`).

The body is checked here (sizes, strengths, SAEs that exist, features in range), then the
ActivationService generates; its first event is awaited before the response starts, so a
request the service refuses gets a problem-details answer, not a broken stream. Events:
`start` (the prompt as tokens, each change resolved), one `token` per generated token and run
("steered", and "default" with `compare`), then `end`, or `error` if the service fails later.
Steer streams share the gateway's stream slots with job event streams (429 past the cap).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Generator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from gateway import auth
from gateway.backends import Backends, backends
from gateway.errors import PROBLEMS, from_service, invalid
from gateway.routers.catalog import sae_or_404
from gateway.routers.jobs import StreamSlots
from gateway.schemas import SteerRequest
from lm_saes.rpc.client import ServiceError

router = APIRouter(tags=["compute"], responses=PROBLEMS)
Store = Annotated[Backends, Depends(backends)]
# the service's field names -> this body's
FIELDS = {
    "prompt": "prompt",
    "max_new_tokens": "max_new_tokens",
    "track": "track",
    "stop": "stop",
    "interventions": "features",
}


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _check(store: Backends, body: SteerRequest) -> None:
    if len(body.prompt) > store.settings.max_text_chars:
        raise invalid(
            "prompt", f"{len(body.prompt)} characters is more than the limit of {store.settings.max_text_chars}"
        )
    if body.max_new_tokens > store.settings.steer_max_tokens:
        raise invalid("max_new_tokens", f"at most {store.settings.steer_max_tokens} on this gateway (steer_max_tokens)")
    for number, feature in enumerate(body.features):
        sae = sae_or_404(store, feature.sae_id)
        if sae.d_sae is not None and feature.feature >= sae.d_sae:
            raise invalid(f"features.{number}.feature", f"must be < d_sae = {sae.d_sae} of {feature.sae_id!r}")


def _field(error: ServiceError) -> dict[str, str]:
    """interventions[2].feature -> features.2.feature, for the problem's `field`."""
    head = error.details.split(":", 1)[0]
    if head.startswith("interventions["):
        number, _, rest = head.removeprefix("interventions[").partition("]")
        return {head: f"features.{number}{rest}"}
    return {}


@router.post(
    "/steer",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`start`, then `token` events (run, index, text, probability, "
            "tracked), then `end` or `error`",
        },
        429: PROBLEMS[429],
    },
)
async def steer(request: Request, store: Store, body: SteerRequest, user: auth.Computer) -> StreamingResponse:
    """Continue `prompt` with `features` changed, beside the default continuation."""
    await run_in_threadpool(_check, store, body)
    slots: StreamSlots = request.app.state.event_streams
    settings = store.settings
    slots.acquire(user.name, settings.max_streams, settings.max_streams_per_caller)
    generation = {
        "max_new_tokens": body.max_new_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "stop": body.stop,
        "track": body.track,
        "frozen_attention": body.frozen_attention,
    }
    features = [f.model_dump() for f in body.features]

    def start() -> tuple[Generator[dict[str, Any], None, None], dict[str, Any] | None]:
        """Open the stream and read its first event; the call carries the user's identity from
        its start, so the rest may be read from any thread."""
        with store.as_user(user):
            stream = store.activation.generate(
                body.prompt, features, compare=body.compare, timeout=settings.grpc_timeout_s * 10, **generation
            )
            return stream, next(stream, None)

    try:
        stream, first = await run_in_threadpool(start)
    except ServiceError as error:
        slots.release(user.name)
        raise from_service(error, "activation", rename={**FIELDS, **_field(error)}) from None
    except BaseException:
        slots.release(user.name)
        raise

    async def body_stream() -> AsyncIterator[str]:
        try:
            if first is None:
                yield _sse("end", {})
                return
            yield _sse("start", {"prompt_tokens": first.pop("prompt_tokens", []), "changes": first.pop("changes", [])})
            yield _sse("token", first)
            try:
                async for event in iterate_in_threadpool(stream):
                    yield _sse("token", event)
                    if await request.is_disconnected():
                        return
            except ServiceError as error:
                yield _sse("error", {"status": 502, "title": "Bad gateway", "detail": error.details[:500]})
                return
            yield _sse("end", {})
        finally:
            with contextlib.suppress(ValueError):  # a next() still running in a worker thread
                stream.close()  # ends the gRPC call: the service stops generating
            slots.release(user.name)

    return StreamingResponse(
        body_stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
