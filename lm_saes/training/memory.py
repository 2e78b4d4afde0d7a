"""Up-front estimates of what a training run needs: memory while it trains, and the object
store space its activation shards take. Services refuse runs past their ceilings at submit;
the figures are estimates (within ~2x), made to catch `d_sae = 2**40`, not to pack a GPU."""

from __future__ import annotations

from typing import NamedTuple

from lm_saes.config import ActivationsConfig, DataConfig, RunConfig

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class RunEstimate(NamedTuple):
    memory_bytes: int  # model + dictionaries with gradients and Adam state + batch + shuffle buffer
    storage_bytes: int  # stored activation shards (0 when generated on the fly or reused)

    def describe(self) -> str:
        return f"~{self.memory_bytes / 2**30:.2f} GiB of memory, ~{self.storage_bytes / 2**30:.2f} GiB of shards"


def shard_bytes(data: DataConfig, activations: ActivationsConfig, d_in: int) -> int:
    """Object-store space of the activation shards for `data` at every hook."""
    return (data.max_tokens + data.eval_tokens) * d_in * BYTES[activations.dtype] * len(activations.hooks)


def buffer_bytes(cfg: RunConfig, d_in: int) -> int:
    """The shuffle window of every hook: float32 rows (stored shards are read whole, so a window
    is buffer_tokens rounded up to whole shards), and the shards' own rows while they convert."""
    acts = cfg.activations
    tokens = -(-acts.buffer_tokens // acts.shard_tokens) * acts.shard_tokens if acts.store else acts.buffer_tokens
    return tokens * d_in * (4 + BYTES[acts.dtype]) * len(acts.hooks)


def estimate_run(cfg: RunConfig, d_in: int, model_bytes: int) -> RunEstimate:
    """Per rank, for `cfg` on a model with residual width `d_in` whose weights take `model_bytes`.

    A sweep holds every member's dictionary (weights, gradients, Adam state) at once but steps
    them one after another, so dictionaries add up and the per-step activations are the
    largest member's. With `train.feature_shards = n` a rank holds 1/n of each dictionary's
    features (b_dec is replicated) and of the step's [batch, d_sae] tensors."""
    if cfg.clt is not None:
        return _estimate_clt(cfg, d_in, model_bytes)
    if cfg.sweep is not None:
        members = [cfg.for_member(i) for i in range(len(cfg.sweep))]
        widths = [(member.sae.d_sae, member.train.batch_size) for member in members]
    else:
        n_saes = len(cfg.transcoders.layers) if cfg.transcoders else 1
        widths = [(cfg.sae.d_sae, cfg.train.batch_size)] * n_saes
    shards = cfg.train.feature_shards
    widths = [(d_sae // shards, batch) for d_sae, batch in widths]  # this rank's features
    dictionaries = sum((2 * d_in * d_sae + d_sae + d_in) * 4 * 4 for d_sae, _ in widths)  # fp32 w, grad, Adam x2
    step = max(batch * d_sae * 4 * 3 for d_sae, batch in widths)  # pre-acts, acts, their gradient
    buffer = buffer_bytes(cfg, d_in)
    storage = (
        shard_bytes(cfg.data, cfg.activations, d_in) if cfg.activations.store and cfg.activations.path is None else 0
    )
    return RunEstimate(model_bytes + dictionaries + step + buffer, storage)


def _estimate_clt(cfg: RunConfig, d_model: int, model_bytes: int) -> RunEstimate:
    """A cross-layer transcoder over L layers holds L encoders and L(L+1)/2 decoders of
    d_sae x d_model (fp32 weights, gradients and two Adam moments), so memory grows as L**2;
    a step holds [batch, L, d_sae] pre-activations, activations and their gradient."""
    from lm_saes.saes.crosslayer import clt_parameters

    assert cfg.clt is not None
    n_layers = len(cfg.clt.layers)
    parameters = clt_parameters(n_layers, cfg.clt.d_sae, d_model).parameters * 4 * 4
    step = cfg.train.batch_size * n_layers * (cfg.clt.d_sae * 3 + d_model * 4) * 4
    buffer = buffer_bytes(cfg, d_model)
    storage = (
        shard_bytes(cfg.data, cfg.activations, d_model) if cfg.activations.store and cfg.activations.path is None else 0
    )
    return RunEstimate(model_bytes + parameters + step + buffer, storage)
