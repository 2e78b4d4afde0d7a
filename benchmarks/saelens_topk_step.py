#!/usr/bin/env python3
"""Time SAELens's own TopK SAE training step (reference point for lm-saes).

Runs INSIDE the SAELens venv (see scripts/make_saelens_venv.sh), e.g.

    .venv-saelens/bin/python benchmarks/saelens_topk_step.py \
        --inputs X.safetensors --steps 5 --warmup 2 --out RESULT.json [--seed 0]

X.safetensors holds a float32 tensor ``x`` of shape [N, d_in]. Successive
``--batch-size`` (default 4096) row batches are fed, cycling (wrapping) over N.

What one timed step is -- exactly SAELens's per-step work, via its own trainer
(sae_lens.training.sae_trainer.SAETrainer):
  * ``SAETrainer.maybe_reset_sparsity()`` (what ``fit()`` does before each step),
  * ``SAETrainer.step(batch)`` -> ``_train_step``:
      ActivationScaler (identity for normalize_activations="none"),
      ``TopKTrainingSAE.training_forward_pass`` (encode with
      rescale_acts_by_decoder_norm=True, decode, MSE loss + TopK
      auxiliary-k loss on dead latents), firing/dead-latent statistics,
      ``loss.backward()``, ``clip_grad_norm_(params, 1.0)``, Adam step,
      ``zero_grad()``, lr-scheduler and coefficient-scheduler steps.
SAELens 6.x has no per-step decoder renormalisation: TopK training instead
divides by ||W_dec|| inside encode/decode (rescale_acts_by_decoder_norm=True by
default), which is included above.

Note on the aux loss: SAELens marks a latent dead only after it has not fired
for ``dead_feature_window`` steps (default 1000), so in a short benchmark the
aux-k loss is skipped (returns 0 after counting dead latents). Pass
``--dead-feature-window 0`` to make latents that did not fire in the previous
step count as dead, which exercises the aux-k path when any exist. The JSON
reports how many timed steps actually had a non-zero aux loss.

Sparse activations (TopKTrainingSAEConfig.use_sparse_activations=True; there is
no environment variable for it) are deliberately left OFF: on CPU the backward
pass crashes (NotImplementedError: aten::view on the SparseCPU backend).

torch.set_num_threads is left at its default.

With ``--bare``, a timed step is only ``TopKTrainingSAE.training_forward_pass`` (no dead mask,
so no aux-k), ``loss.backward()``, Adam and ``zero_grad()``: the counterpart of our bare step
(no schedule, no dead-latent bookkeeping, no clipping).

Writes JSON: {"tokens_per_s_median", "step_seconds", "sae_lens_version", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
import warnings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Time SAELens TopK training steps.")
    p.add_argument("--inputs", required=True, help="safetensors file with tensor 'x' [N, d_in]")
    p.add_argument("--steps", type=int, required=True, help="number of timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    p.add_argument("--out", required=True, help="result JSON path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-in", type=int, default=576)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4096, help="tokens per step (default 4096)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument(
        "--dead-feature-window",
        type=int,
        default=1000,
        help="SAETrainerConfig.dead_feature_window (SAELens default 1000)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--bare", action="store_true", help="time forward + backward + Adam only")
    p.add_argument(
        "--dead-fraction",
        type=float,
        default=0.0,
        help="before each step, mark this fraction of latents (the last ones) as not fired for "
        "longer than the window, so the aux-k loss always has a dead set of that size",
    )
    args = p.parse_args(argv)

    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        print(
            "saelens_topk_step: error: need --steps >= 1, --warmup >= 0, --batch-size >= 1",
            file=sys.stderr,
        )
        return 2
    if not os.path.isfile(args.inputs):
        print(f"saelens_topk_step: error: --inputs {args.inputs!r} does not exist", file=sys.stderr)
        return 2

    try:
        warnings.filterwarnings("ignore")
        import sae_lens
        import torch
        from sae_lens.config import LoggingConfig, SAETrainerConfig
        from sae_lens.saes.sae import TrainStepInput
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.training.sae_trainer import SAETrainer
        from safetensors.torch import load_file

        x = load_file(args.inputs)["x"]
        if x.ndim != 2 or x.shape[1] != args.d_in:
            raise ValueError(f"'x' must have shape [N, {args.d_in}], got {tuple(x.shape)}")
        x = x.to(torch.float32)
        n = x.shape[0]
        bs = args.batch_size
        total_steps = args.warmup + args.steps

        torch.manual_seed(args.seed)
        sae_cfg = TopKTrainingSAEConfig(
            d_in=args.d_in,
            d_sae=args.d_sae,
            k=args.k,
            dtype="float32",
            device=args.device,
            use_sparse_activations=False,  # crashes in backward on CPU
        )
        sae = TopKTrainingSAE(sae_cfg)

        def batches():
            i = 0
            while True:
                idx = torch.arange(i * bs, (i + 1) * bs) % n
                yield x[idx].contiguous()
                i += 1

        data = batches()
        trainer_cfg = SAETrainerConfig(
            total_training_samples=total_steps * bs,
            train_batch_size_samples=bs,
            lr=args.lr,
            lr_end=args.lr,  # SAELens's runner sets lr/10; only used by cosine schedules
            lr_scheduler_name="constant",
            device=args.device,
            autocast=False,
            dead_feature_window=args.dead_feature_window,
            logger=LoggingConfig(log_to_wandb=False),
        )
        trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data)
        trainer.sae.to(args.device)  # as SAETrainer.fit() does

        def sync():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        coefficients = trainer.get_coefficients()
        adam = torch.optim.Adam(sae.parameters(), lr=args.lr)

        def bare_step(batch, step):
            out = sae.training_forward_pass(
                TrainStepInput(
                    sae_in=batch,
                    coefficients=coefficients,
                    dead_neuron_mask=None,
                    n_training_steps=step,
                    is_logging_step=False,
                )
            )
            out.loss.backward()
            adam.step()
            adam.zero_grad()
            return out

        step_seconds: list[float] = []
        aux_nonzero = 0
        last_losses: dict[str, float] = {}
        for step in range(total_steps):
            batch = next(data)  # data loading is outside the timed region
            n_dead = int(args.dead_fraction * args.d_sae)
            if n_dead and not args.bare:  # a realistic dead set, as ours has (outside the timed region)
                trainer.n_forward_passes_since_fired[-n_dead:] = args.dead_feature_window + 1
            sync()
            t0 = time.perf_counter()
            if args.bare:
                out = bare_step(batch, step)
            else:
                trainer.maybe_reset_sparsity()
                out = trainer.step(batch)
            sync()
            dt = time.perf_counter() - t0
            trainer.n_training_steps += 1
            losses = {k: float(v) for k, v in out.losses.items()}
            if step >= args.warmup:
                step_seconds.append(dt)
                if losses.get("auxiliary_reconstruction_loss", 0.0) != 0.0:
                    aux_nonzero += 1
            last_losses = losses
            print(
                f"step {step}{' (warmup)' if step < args.warmup else ''}: {dt:.4f}s "
                f"{bs / dt:,.0f} tok/s loss={float(out.loss):.4f}",
                file=sys.stderr,
            )

        med = statistics.median(step_seconds)
        result = {
            "tokens_per_s_median": bs / med,
            "step_seconds": step_seconds,
            "step_seconds_median": med,
            "sae_lens_version": str(sae_lens.__version__),
            "torch_version": torch.__version__,
            "torch_num_threads": torch.get_num_threads(),
            "device": args.device,
            "d_in": args.d_in,
            "d_sae": args.d_sae,
            "k": args.k,
            "batch_size": bs,
            "lr": args.lr,
            "steps": args.steps,
            "warmup": args.warmup,
            "seed": args.seed,
            "n_inputs": n,
            "dead_feature_window": args.dead_feature_window,
            "bare": args.bare,
            "dead_fraction": args.dead_fraction,
            "timed_steps_with_nonzero_aux_loss": aux_nonzero,
            "rescale_acts_by_decoder_norm": sae.cfg.rescale_acts_by_decoder_norm,
            "use_sparse_activations": False,
            "last_losses": last_losses,
        }
        out_dir = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(
            f"saelens_topk_step: sae_lens {sae_lens.__version__}: median {med:.4f}s/step = "
            f"{result['tokens_per_s_median']:,.0f} tokens/s -> {args.out}"
        )
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, SystemExit):
            raise
        traceback.print_exc(file=sys.stderr)
        print(f"saelens_topk_step: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
