"""`lm-saes`: a thin command line over `lm_saes.runner`; it validates, calls, and reports."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lm_saes.autointerp import server as autointerp_server
from lm_saes.config import AnalyzeConfig, ConfigError, RunConfig, load_config, parse_override

if TYPE_CHECKING:
    from lm_saes.runner import EvalDestination


def _overrides(items: list[str]) -> dict:
    return dict(parse_override(item) for item in items)


def cmd_train(args: argparse.Namespace) -> int:
    from lm_saes.runner import TRANSCODERS_KEY, run_train, run_train_sweep, run_train_transcoders

    cfg = load_config(args.config, RunConfig, _overrides(args.set))
    if cfg.transcoders is not None:
        runs = run_train_transcoders(cfg, progress=not args.quiet)
        if runs is None:
            return 0
        print(json.dumps([run.summary() for run in runs], indent=2))
        print(
            f"\n{len(runs)} transcoders saved under {cfg.output}/layer-N/sae; "
            f"the set is {cfg.output}/{TRANSCODERS_KEY} (pass it to `lm-saes trace`)"
        )
        return 0
    if cfg.sweep is not None:
        members = run_train_sweep(cfg, progress=not args.quiet)
        if members is None:
            return 0
        print(json.dumps([run.summary() for run in members], indent=2))
        print(f"\n{len(members)} SAEs of one activation stream saved under {cfg.output}/NAME/sae")
        return 0
    run = run_train(cfg, progress=not args.quiet)
    if run is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    summary = run.summary()
    print(json.dumps(summary, indent=2))
    print(
        f"\n{'cross-layer transcoder' if cfg.clt else 'SAE'} saved to {summary['sae']}; "
        f"metrics in {cfg.output}/eval.json, "
        f"training log in {cfg.output}/metrics.jsonl"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lm_saes.evals.suite import parse_suites
    from lm_saes.runner import (
        check_eval_destination,
        run_eval,
        run_eval_suite,
        save_report_beside,
        store_eval_suite,
    )

    destination = _eval_destination(args)
    data = eval_cfg = model = None
    if args.config:
        cfg = load_config(args.config, RunConfig, _overrides(args.set))
        data, eval_cfg, model = cfg.data, cfg.eval, cfg.model
    if args.suite is None:
        if args.sae is None:
            raise ConfigError("lm-saes eval needs --sae (or --suite synthetic, which trains its own)")
        metrics = run_eval(args.sae, data, eval_cfg, model, progress=not args.quiet)
        text = json.dumps(metrics.model_dump(), indent=2)
        if args.out:
            Path(args.out).write_text(text + "\n")
        print(text)
        return 0
    try:
        suites = parse_suites(args.suite)
        if destination is not None:
            destination = check_eval_destination(destination, suites, args.compare)
        report = run_eval_suite(
            suites,
            args.sae,
            args.compare,
            args.scenario,
            data,
            eval_cfg,
            model,
            progress=not args.quiet,
            destination=destination,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    text = report.model_dump_json(indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    if destination is not None:
        written = store_eval_suite(report, destination)
        stored = "".join(f"; {kind} neighbours on {n} features" for kind, n in written.items())
        print(f"evals stored with SAE {destination.sae_id!r} in {destination.documents}{stored}", file=sys.stderr)
    if not args.out and args.sae is not None:
        try:
            print(f"report merged into {save_report_beside(args.sae, report)}", file=sys.stderr)
        except OSError as error:  # a read-only SAE folder: the report is printed above
            print(f"warning: the report is not saved beside the SAE ({error}); pass --out", file=sys.stderr)
    return 0


def _eval_destination(args: argparse.Namespace) -> EvalDestination | None:
    """--documents and --sae-id together name where the report is stored; checked before any work."""
    from lm_saes.runner import EvalDestination

    if (args.documents is None) != (args.sae_id is None):
        given, missing = ("--documents", "--sae-id") if args.sae_id is None else ("--sae-id", "--documents")
        raise ConfigError(
            f"{given} needs {missing}: the report is stored with the SAE record --sae-id names, "
            "in the document store --documents names (SQLite file or mongodb:// URI)"
        )
    if args.compare_id is not None and args.sae_id is None:
        raise ConfigError("--compare-id names the compared SAE in the store: it needs --documents and --sae-id")
    if args.sae_id is None:
        return None
    if not args.sae_id.strip():
        raise ConfigError("--sae-id is empty: name the SAE's id in the document store")
    if args.compare_id is not None and not args.compare_id.strip():
        raise ConfigError("--compare-id is empty: name the compared SAE's id in the document store")
    if args.suite is None:
        raise ConfigError("--sae-id stores a suite report: add --suite (e.g. --suite core)")
    if args.sae is None:
        raise ConfigError("--sae-id stores the evaluation of the SAE --sae names: pass --sae too")
    return EvalDestination(args.documents, args.sae_id, args.compare_id, args.neighbours)


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "neuronpedia":
        from lm_saes.interop.neuronpedia import export_neuronpedia
        from lm_saes.stores.documents import open_document_store

        if not args.sae_id:
            raise ValueError("--format neuronpedia exports an analyzed SAE: name it with --sae-id")
        with open_document_store(args.documents) as documents:
            folder = export_neuronpedia(documents, args.sae_id, args.out)
        print(f"exported {args.sae_id}'s features, activations and explanations for Neuronpedia to {folder}")
        return 0
    if args.format == "circuit-tracer":
        from lm_saes.saes.crosslayer import load_clt
        from lm_saes.stores import open_store

        if not args.sae:
            raise ValueError("--format circuit-tracer exports a cross-layer transcoder: name its folder with --sae")
        clt = load_clt(args.sae)
        clt.save_circuit_tracer(open_store(args.out), args.model_layers)
        padded = f", zero-padded to {args.model_layers} layers" if args.model_layers else ""
        print(f"exported {args.sae} (layers {clt.layers}) in circuit-tracer's CLT layout{padded} to {args.out}")
        return 0
    from lm_saes.interop import export_saelens
    from lm_saes.saes import load_sae

    if not args.sae:
        raise ValueError("--format saelens exports an SAE's weights: name its folder with --sae")
    out = export_saelens(load_sae(args.sae), args.out)
    print(f"exported {args.sae} as a SAELens SAE to {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from lm_saes.interop import import_saelens
    from lm_saes.stores import open_store

    sae = import_saelens(args.source, args.hook_in, args.hook_out, args.model)
    sae.save(open_store(args.out))
    print(f"imported {args.source} ({sae.spec.architecture}, {sae.spec.hook_in}) to {args.out}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from lm_saes.analysis import format_feature, run_analysis
    from lm_saes.stores.documents import open_document_store

    cfg = load_config(args.config, AnalyzeConfig, _overrides(args.set))
    result = run_analysis(cfg, args.sae, progress=not args.quiet)
    print(
        f"analyzed {result.features_written} features of {result.sae_id} over {result.tokens:,} tokens "
        f"in {result.seconds:.0f} s; results in {result.documents} (analysis {result.analysis_id})"
    )
    if args.show:
        with open_document_store(cfg.documents) as documents:
            for index in _showcase(documents, result.sae_id, args.show):
                feature = documents.get_feature(result.sae_id, index)
                if feature is None:
                    raise LookupError(f"feature {index} of {result.sae_id} is not in {cfg.documents}")
                print("\n" + format_feature(feature.doc(), examples=5, samples=0))
    return 0


def _showcase(documents, sae_id: str, n: int) -> list[int]:
    """N features spread evenly over those firing on 0.1%-1% of tokens (neither rare nor dense)."""
    page, total = documents.list_features(sae_id, sort="density", descending=True, limit=1000, fields=["density"])
    for offset in range(1000, total, 1000):
        page += documents.list_features(
            sae_id, sort="density", descending=True, offset=offset, limit=1000, fields=["density"]
        )[0]
    band = [f.index for f in page if 1e-3 <= f.density <= 1e-2] or [f.index for f in page]
    step = max(1, len(band) // n)
    return band[::step][:n]


def cmd_autointerp(args: argparse.Namespace) -> int:
    from lm_saes.autointerp.run import AutointerpConfig, run_autointerp

    cfg = load_config(args.config, AutointerpConfig, _overrides(args.set))
    result = run_autointerp(cfg, on_progress=None if args.quiet else _print_progress)
    print(
        f"autointerp of {result.sae_id}: {result.selected} features chosen, {result.skipped} already done, "
        f"{result.explained} explained, {result.scored} scored, {result.failed} without a readable explanation; "
        f"{result.prompt_tokens:,} prompt + {result.completion_tokens:,} completion tokens in {result.seconds:.0f} s"
    )
    return 0


def _print_progress(done: int, total: int) -> None:
    print(f"  {done}/{total} features", file=sys.stderr, flush=True)


def cmd_show(args: argparse.Namespace) -> int:
    from lm_saes.analysis import format_feature
    from lm_saes.stores.documents import open_document_store

    with open_document_store(args.documents) as documents:
        doc = documents.get_feature(args.sae_id, args.feature)
        if doc is None:
            sae = documents.get_sae(args.sae_id)
            known = ", ".join(s.id for s in documents.list_saes()) or "none"
            reason = f"no feature {args.feature}" if sae else f"no SAE {args.sae_id!r} (known: {known})"
            raise FileNotFoundError(f"{reason} in {args.documents}; run `lm-saes analyze` first")
        print(format_feature(doc.doc(), examples=args.examples))
    return 0


def cmd_activations(args: argparse.Namespace) -> int:
    from lm_saes.rpc.client import ActivationClient, format_token_features

    with ActivationClient(args.address, timeout=args.timeout) as client:
        tokens = client.feature_activations(args.sae, args.text, args.top_k)
    print(format_token_features(tokens))
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from lm_saes.circuits import ReplacementModel, TranscoderSet, run_trace
    from lm_saes.circuits.trace import summarize
    from lm_saes.config import ModelConfig, TraceConfig
    from lm_saes.interop.circuit_tracer import to_graph_json
    from lm_saes.models import load_language_model
    from lm_saes.stores import open_store
    from lm_saes.stores.documents import open_document_store

    cfg = TraceConfig(
        node_threshold=args.node_threshold,
        edge_threshold=args.edge_threshold,
        max_links=args.max_links,
        max_logits=args.max_logits,
        device=args.device,
    )
    transcoders = TranscoderSet.load(args.transcoders, args.device)
    model = load_language_model(ModelConfig(name=transcoders.model, device=args.device))
    with open_document_store(args.documents) as documents:
        record = run_trace(ReplacementModel(model, transcoders), args.prompt, cfg, open_store(args.graphs), documents)
    print(summarize(record, args.top))
    if args.out:
        Path(args.out).write_text(json.dumps(to_graph_json(record), indent=1))
        print(f"graph JSON for circuit-tracer / Neuronpedia written to {args.out}")
    return 0


def cmd_steer(args: argparse.Namespace) -> int:
    from lm_saes.models import load_language_model
    from lm_saes.steering import (
        FeatureIntervention,
        GenerationConfig,
        Steerer,
        SteerRequest,
        load_steering_sae,
        model_config_for,
        token_ids,
    )
    from lm_saes.steering.show import format_result
    from lm_saes.stores.documents import open_document_store

    strengths = args.strength or [0.0]
    if len(strengths) not in (1, len(args.feature)):
        raise ValueError(f"--strength: give one value or one per --feature ({len(args.feature)}), not {len(strengths)}")
    documents = None
    if args.relative:
        if not Path(args.documents).is_file() and "://" not in args.documents:
            raise FileNotFoundError(f"--relative needs the SAE's analysis; no document store at {args.documents}")
        documents = open_document_store(args.documents)
    try:
        steering = load_steering_sae(args.sae, documents, args.sae_id, args.device)
    finally:
        if documents is not None:
            documents.close()
    model = load_language_model(model_config_for(args.sae, args.device))
    interventions = [
        FeatureIntervention(
            feature=feature,
            mode=args.mode,
            strength=strengths[i % len(strengths)],
            relative=args.relative,
            positions=args.positions,
            from_token=args.from_token,
        )
        for i, feature in enumerate(args.feature)
    ]
    request = SteerRequest(
        prompt=args.prompt,
        interventions=interventions,
        frozen_attention=args.frozen_attention,
        track=token_ids(model, args.track),
        generation=GenerationConfig(
            max_new_tokens=args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            stop=args.stop,
            use_cache=not args.no_cache,
        ),
    )
    result = Steerer(model, {"sae": steering}).steer(request)
    names = dict(zip(request.track, args.track, strict=True))
    print(result.model_dump_json(indent=1) if args.json else format_result(result, names))
    return 0


def cmd_llm_server(args: argparse.Namespace) -> int:
    from lm_saes.autointerp.server import run_from_args

    run_from_args(args)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Build the offline corpus and convert the packaged model once (install step)."""
    from lm_saes.data.corpus import ensure_default_corpus
    from lm_saes.models.smollm2 import smollm2_checkpoint

    print(f"corpus: {ensure_default_corpus()}")
    print(f"model:  {smollm2_checkpoint()}")
    return 0


def _neighbour_count(text: str) -> int:
    from lm_saes.records import MAX_NEIGHBOURS

    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= k <= MAX_NEIGHBOURS:
        raise argparse.ArgumentTypeError(f"{k} is not in 1..{MAX_NEIGHBOURS}")
    return k


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lm-saes", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="generate activations, train and evaluate an SAE")
    train.add_argument("config", help="TOML config (see examples/configuration)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set data.max_tokens=1_000_000",
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="evaluate a trained SAE (JSON out)")
    evaluate.add_argument("--sae", help="folder or s3:// URI holding sae.json")
    evaluate.add_argument(
        "--suite",
        help="comma-separated suites: core, universality, absorption, probing, synthetic (default: core metrics only)",
    )
    evaluate.add_argument("--compare", help="the second SAE of the universality suite")
    evaluate.add_argument(
        "--scenario", action="append", metavar="TOML", help="synthetic scenario file (default: the shipped ones)"
    )
    evaluate.add_argument("--config", help="TOML for data/eval/model (default: the run's own)")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    evaluate.add_argument(
        "--out", help="also write the JSON here (a suite report: default evals.json beside the SAE, merged)"
    )
    evaluate.add_argument("--documents", help="store the report with the SAE's record: SQLite file or mongodb:// URI")
    evaluate.add_argument("--sae-id", help="the SAE's id in --documents (the record the report is merged into)")
    evaluate.add_argument(
        "--compare-id", help="the --compare SAE's id in --documents (default: its run folder, as analysis names it)"
    )
    evaluate.add_argument(
        "--neighbours",
        type=_neighbour_count,
        default=5,
        metavar="K",
        help="universality with --sae-id: nearest features stored per feature and kind (1..10, default 5)",
    )
    evaluate.set_defaults(func=cmd_eval)

    export = sub.add_parser("export", help="write an SAE in another tool's format")
    export.add_argument("--sae", help="saelens: the SAE's folder or s3:// URI; circuit-tracer: the CLT's folder")
    export.add_argument("--format", choices=["saelens", "neuronpedia", "circuit-tracer"], default="saelens")
    export.add_argument(
        "--model-layers",
        type=int,
        help="circuit-tracer: the model's layer count, to zero-pad a CLT over a subset of its layers",
    )
    export.add_argument("--sae-id", help="neuronpedia: the analyzed SAE's id in the document store")
    export.add_argument("--documents", default="runs/lm-saes.sqlite", help="neuronpedia: SQLite file or mongodb://")
    export.add_argument("--out", required=True)
    export.set_defaults(func=cmd_export)

    imp = sub.add_parser("import", help="read an SAE from another tool's format")
    imp.add_argument("source", help="SAELens folder (cfg.json + sae_weights.safetensors)")
    imp.add_argument("--format", choices=["saelens"], default="saelens")
    imp.add_argument("--out", required=True, help="where to save it in lm-saes format")
    imp.add_argument("--hook-in")
    imp.add_argument("--hook-out")
    imp.add_argument("--model")
    imp.set_defaults(func=cmd_import)

    analyze = sub.add_parser("analyze", help="analyze every feature of a trained SAE")
    analyze.add_argument("config", help="TOML config (see examples/configuration/analyze.toml)")
    analyze.add_argument("--sae", required=True, help="folder or s3:// URI holding sae.json")
    analyze.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    analyze.add_argument("--show", type=int, default=0, metavar="N", help="print N features afterwards")
    analyze.set_defaults(func=cmd_analyze)

    autointerp = sub.add_parser("autointerp", help="explain features with an LLM and score the explanations")
    autointerp.add_argument("config", help="TOML config (see examples/configuration/autointerp.toml)")
    autointerp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    autointerp.set_defaults(func=cmd_autointerp)

    show = sub.add_parser("show", help="print one feature's analysis")
    show.add_argument("--sae-id", required=True, help="the SAE's name in the store (its run folder)")
    show.add_argument("--feature", type=int, required=True)
    show.add_argument("--documents", default="runs/lm-saes.sqlite", help="SQLite file or mongodb:// URI")
    show.add_argument("--examples", type=int, default=8)
    show.set_defaults(func=cmd_show)

    acts = sub.add_parser("activations", help="per-token SAE features of a text, from the activation service")
    acts.add_argument("--sae", required=True, help="the SAE's id in the service's document store")
    acts.add_argument("--text", required=True)
    acts.add_argument(
        "--address",
        default=os.environ.get("LM_SAES_ADDRESS", "localhost:50051"),
        help="host:port of the activation service (default $LM_SAES_ADDRESS or localhost:50051)",
    )
    acts.add_argument("--top-k", type=int, default=5, help="features shown per token")
    acts.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    acts.set_defaults(func=cmd_activations)

    trace = sub.add_parser("trace", help="attribution graph of a prompt through a transcoder set")
    trace.add_argument("--transcoders", required=True, help="a transcoder set (folder with transcoders.json)")
    trace.add_argument("--prompt", required=True)
    trace.add_argument("--node-threshold", type=float, default=0.8, help="keep nodes with this share of influence")
    trace.add_argument("--edge-threshold", type=float, default=0.98, help="keep edges with this share of influence")
    trace.add_argument("--max-links", type=int, default=10_000, help="keep at most this many links")
    trace.add_argument("--max-logits", type=int, default=10)
    trace.add_argument("--graphs", default="runs/graphs", help="where full graphs are saved (folder or s3://)")
    trace.add_argument("--documents", default="runs/lm-saes.sqlite", help="SQLite file or mongodb:// URI")
    trace.add_argument("--out", help="also write the graph as circuit-tracer / Neuronpedia JSON")
    trace.add_argument("--top", type=int, default=10, help="features listed")
    trace.add_argument("--device", default="cpu")
    trace.set_defaults(func=cmd_trace)

    steer = sub.add_parser("steer", help="generate with features added, clamped, ablated or scaled")
    steer.add_argument("--sae", required=True, help="folder or s3:// URI holding sae.json (SAE or transcoder)")
    steer.add_argument("--feature", type=int, action="append", required=True, help="repeat for several")
    steer.add_argument(
        "--strength",
        type=float,
        action="append",
        help="add: amount; clamp: value; scale: factor (one, or one per --feature)",
    )
    steer.add_argument("--mode", choices=["add", "clamp", "ablate", "scale"], default="add")
    steer.add_argument(
        "--relative",
        action="store_true",
        help="strength in units of the feature's max activation (from its analysis)",
    )
    steer.add_argument("--prompt", required=True)
    steer.add_argument("--positions", choices=["prompt", "generated", "both"], default="both")
    steer.add_argument("--from-token", type=int, default=1, help="first position steered (0 is BOS)")
    steer.add_argument("--max-tokens", type=int, default=32)
    steer.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    steer.add_argument("--top-p", type=float, default=1.0)
    steer.add_argument("--seed", type=int, default=0)
    steer.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    steer.add_argument(
        "--track",
        action="append",
        default=[],
        metavar="TOKEN",
        help="report this token's probability at each step (repeatable)",
    )
    steer.add_argument(
        "--frozen-attention",
        action="store_true",
        help="keep the unsteered model's attention patterns on the same tokens",
    )
    steer.add_argument("--no-cache", action="store_true", help="rerun the whole sequence each step")
    steer.add_argument("--documents", default="runs/lm-saes.sqlite", help="SQLite file or mongodb:// URI")
    steer.add_argument("--sae-id", help="the SAE's id in the document store (default: its run folder)")
    steer.add_argument("--device", default="cpu")
    steer.add_argument("--json", action="store_true", help="print the whole result as JSON")
    steer.set_defaults(func=cmd_steer)

    llm = sub.add_parser(
        "llm-server",
        help="a local OpenAI-compatible LLM server on the packaged SmolLM2 (autointerp), until Ctrl-C",
        description="llama.cpp's server (xllamacpp) on the packaged SmolLM2-135M-Instruct GGUF; "
        "clients use base URL http://HOST:PORT/v1.",
    )
    autointerp_server.add_arguments(llm)
    llm.set_defaults(func=cmd_llm_server)

    prepare = sub.add_parser("prepare", help="build the offline corpus and cache the packaged model")
    prepare.set_defaults(func=cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("LM_SAES_ONLINE") != "1":  # never wait on a model hub unless asked to
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, LookupError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
