"""Does steering do what a feature's logit lens says? The figure for the README's steering section.

For 20 features of the main SAE whose logit lens promotes a word token T (selection below, fixed
before looking at any curve), add the feature's decoder direction at every position (prompt and
generated, from the first prompt token) with strengths in units of its max activation, and read
P(T) as the next token after each of a few neutral prompts. A feature counts as monotone when
the mean P(T) over the prompts never falls as the strength grows and ends above where it started.

Selection: features that fire on 0.01 %-1 % of tokens, whose top logit-lens token is a word
(optional leading space, 3+ letters) seen at least 50 times in the analysis' own text (so a
token the model predicts, not a fragment of a rare word), ranked by that top logit-lens value;
the first 20 with distinct tokens. Writes benchmarks/steering.json and docs/steering-curve.svg.

    python benchmarks/steering.py --sae runs/smollm2-l6-topk/sae --documents runs/lm-saes.sqlite
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lm_saes.analysis.analyze import default_sae_id  # noqa: E402
from lm_saes.config import DataConfig  # noqa: E402
from lm_saes.data.packing import load_token_splits  # noqa: E402
from lm_saes.models import load_language_model  # noqa: E402
from lm_saes.steering import (  # noqa: E402
    FeatureIntervention,
    Steerer,
    SteerRequest,
    load_steering_sae,
    model_config_for,
)
from lm_saes.stores.documents import open_document_store  # noqa: E402

HERE = Path(__file__).resolve().parent
OTHER_PROMPTS = ["The", "In the", "It is", "A new", "This is"]  # a second neutral set
PROMPTS = [
    "I think that",
    "Yesterday, my friend told me about",
    "Here is a short story:",
    "The most important thing is",
    "We talked for a while about",
]
STRENGTHS = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]  # x the feature's max activation
MAIN_MAX = 4.0  # the monotone test runs over strengths up to this; up to 8 is reported too
WORD = re.compile(r" ?[A-Za-z]{3,}")
EXAMPLE_STRENGTHS = [1.0, 2.0]
EXAMPLE_TOKENS = 32


def token_counts(documents, sae_id: str, tokenizer) -> Counter:
    """How often each token occurs in the text the SAE's analysis ran over."""
    analyses = [a for a in documents.list_analyses(sae_id) if a["state"] == "succeeded"]
    if not analyses:
        raise FileNotFoundError(f"no finished analysis for SAE {sae_id!r}; run `lm-saes analyze` first")
    data = DataConfig.model_validate(analyses[-1]["config"]["data"])
    return Counter(load_token_splits(data, tokenizer).train.flatten().tolist())


def select_features(documents, sae_id: str, n: int, counts: Counter, min_count: int) -> list[dict]:
    docs, offset, total = [], 0, None
    while total is None or offset < total:
        page, total = documents.list_features(
            sae_id, offset=offset, limit=1000, fields=["density", "max_activation", "logit_lens"]
        )
        docs += page
        offset += 1000
    if not docs:
        raise FileNotFoundError(f"no analysis for SAE {sae_id!r}; run `lm-saes analyze` first")
    candidates = [
        d
        for d in docs
        if 1e-4 <= d["density"] <= 1e-2
        and d["max_activation"] > 0
        and d.get("logit_lens")
        and WORD.fullmatch(d["logit_lens"]["top"][0]["token"])
        and counts[d["logit_lens"]["top"][0]["token_id"]] >= min_count
    ]
    candidates.sort(key=lambda d: -d["logit_lens"]["top"][0]["value"])
    chosen, tokens = [], set()
    for doc in candidates:
        top = doc["logit_lens"]["top"][0]
        if top["token_id"] not in tokens:
            tokens.add(top["token_id"])
            chosen.append(
                {
                    "feature": doc["index"],
                    "token": top["token"],
                    "token_id": top["token_id"],
                    "logit_lens_value": top["value"],
                    "max_activation": doc["max_activation"],
                    "density": doc["density"],
                    "token_count": counts[top["token_id"]],
                }
            )
        if len(chosen) == n:
            break
    return chosen


def p_token(
    steerer: Steerer,
    feature: int,
    token_id: int,
    strength: float,
    prompt: str,
    last_only: bool = False,
) -> float:
    """P(T) as the next token after `prompt`, the feature added at every position from the
    first prompt token (or at the last prompt token only)."""
    where = {"positions": "prompt", "from_token": len(steerer.prompt_ids(prompt)) - 1} if last_only else {}
    changes = [FeatureIntervention(feature=feature, strength=strength, relative=True, **where)] if strength else []
    request = SteerRequest(prompt=prompt, interventions=changes, track=[token_id], generation={"max_new_tokens": 1})
    return steerer.generate(request).steps[0].tracked[token_id]


def monotone(mean: list[float], up_to: float) -> bool:
    """Never falls over the strengths up to `up_to`, and ends above where it started."""
    values = [p for s, p in zip(STRENGTHS, mean, strict=True) if s <= up_to]
    return all(b >= a for a, b in itertools.pairwise(values)) and values[-1] > values[0]


def curve(steerer: Steerer, item: dict, last_only: bool = False, prompts: list[str] = PROMPTS) -> dict:
    per_prompt = [
        [p_token(steerer, item["feature"], item["token_id"], s, prompt, last_only) for s in STRENGTHS]
        for prompt in prompts
    ]
    mean = [statistics.fmean(column) for column in zip(*per_prompt, strict=True)]
    return {
        **item,
        "p_token": mean,
        "p_token_per_prompt": per_prompt,
        "monotone": monotone(mean, MAIN_MAX),
        "monotone_up_to_8": monotone(mean, 8.0),
    }


def fractions(results: list[dict]) -> dict:
    """Monotone (up to MAIN_MAX, up to 8), and the weaker: P(T) at MAIN_MAX above P(T) at 0."""
    n, top = len(results), STRENGTHS.index(MAIN_MAX)
    return {
        "monotone_fraction": sum(r["monotone"] for r in results) / n,
        "monotone_fraction_up_to_8": sum(r["monotone_up_to_8"] for r in results) / n,
        "raised_fraction": sum(r["p_token"][top] > r["p_token"][0] for r in results) / n,
        "median_gain": statistics.median(r["p_token"][top] / r["p_token"][0] for r in results),
        "features": n,
    }


def example(steerer: Steerer, item: dict, default_text: str) -> dict:
    """The steered continuation of the first prompt at each example strength; the one where T
    appears most often (over the default text) is kept."""
    word = re.compile(rf"\b{re.escape(item['token'].strip())}\b", re.IGNORECASE)
    best = None
    for strength in EXAMPLE_STRENGTHS:
        change = FeatureIntervention(feature=item["feature"], strength=strength, relative=True)
        request = SteerRequest(prompt=PROMPTS[0], interventions=[change], generation={"max_new_tokens": EXAMPLE_TOKENS})
        text = steerer.generate(request).text
        gain = len(word.findall(text)) - len(word.findall(default_text))
        if best is None or gain > best["gain"]:
            best = {
                "feature": item["feature"],
                "token": item["token"],
                "prompt": PROMPTS[0],
                "strength": strength,
                "default": default_text,
                "steered": text,
                "gain": gain,
            }
    return best


def svg(results: list[dict], path: Path) -> None:
    """P(T) (log scale) against strength, one line per feature, the median in black."""
    width, height, left, bottom, top, right = 560, 320, 60, 40, 20, 20
    lo, hi = -8, 0  # log10 P

    def xy(i: int, p: float) -> tuple[float, float]:
        x = left + i * (width - left - right) / (len(STRENGTHS) - 1)
        y = top + (hi - max(lo, math.log10(max(p, 1e-12)))) * (height - top - bottom) / (hi - lo)
        return x, y

    def line(ps: list[float], style: str) -> str:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, p) for i, p in enumerate(ps)))
        return f'<polyline points="{points}" fill="none" {style}/>'

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11"><rect width="100%" height="100%" fill="white"/>'
    ]
    for e in range(lo, hi + 1):
        _, y = xy(0, 10.0**e)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>'
        )
    for i, s in enumerate(STRENGTHS):
        x, _ = xy(i, 1.0)
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{s:g}</text>')
    x_main, _ = xy(STRENGTHS.index(MAIN_MAX), 1.0)
    parts.append(
        f'<line x1="{x_main:.1f}" x2="{x_main:.1f}" y1="{top}" y2="{height - bottom}" stroke="#999" '
        f'stroke-dasharray="4 3"/><text x="{x_main - 4:.1f}" y="{top + 10}" text-anchor="end" '
        'fill="#666">monotone test up to here</text>'
    )
    for r in results:
        colour = "#4a7ab7" if r["monotone"] else "#d9822b"  # blue: monotone up to MAIN_MAX
        parts.append(line(r["p_token"], f'stroke="{colour}" stroke-opacity="0.6" stroke-width="1.2"'))
    median = [statistics.median(r["p_token"][i] for r in results) for i in range(len(STRENGTHS))]
    parts.append(line(median, 'stroke="black" stroke-width="2.5"'))
    n_up = sum(r["monotone"] for r in results)
    legend = [
        ("#4a7ab7", f"monotone ({n_up})"),
        ("#d9822b", f"not ({len(results) - n_up})"),
        ("black", "median"),
    ]
    for k, (colour, label) in enumerate(legend):
        y = top + 14 + 14 * k
        parts.append(
            f'<line x1="{left + 8}" x2="{left + 28}" y1="{y}" y2="{y}" stroke="{colour}" '
            f'stroke-width="2"/><text x="{left + 32}" y="{y + 4}">{label}</text>'
        )
    parts.append(
        f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">strength (x max activation)</text>'
        f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">'
        "P(T), mean over prompts</text></svg>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sae", default="runs/smollm2-l6-topk/sae")
    parser.add_argument("--documents", default="runs/lm-saes.sqlite")
    parser.add_argument("--sae-id", help="default: the SAE's run folder name")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--min-count", type=int, default=50, help="occurrences of T in the analysis text")
    parser.add_argument("--out", default=str(HERE / "steering.json"))
    parser.add_argument("--svg", default=str(HERE.parent / "docs" / "steering-curve.svg"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    sae_id = args.sae_id or default_sae_id(args.sae)
    model = load_language_model(model_config_for(args.sae, args.device))
    with open_document_store(args.documents) as documents:
        steering = load_steering_sae(args.sae, documents, sae_id, args.device)
        counts = token_counts(documents, sae_id, model.tokenizer)
        chosen = select_features(documents, sae_id, args.features, counts, args.min_count)
        unfiltered = select_features(documents, sae_id, args.features, counts, 0)
    steerer = Steerer(model, {"sae": steering})
    results = [curve(steerer, item) for item in chosen]
    default_text = steerer.generate(SteerRequest(prompt=PROMPTS[0], generation={"max_new_tokens": EXAMPLE_TOKENS})).text
    examples = [example(steerer, item, default_text) for item in results]
    best = max(examples, key=lambda e: e["gain"])
    investigation = {
        "main (word seen >= min_count times, every position)": fractions(results),
        "no frequency filter (any word-shaped token)": fractions([curve(steerer, i) for i in unfiltered]),
        "added at the last prompt token only": fractions([curve(steerer, i, last_only=True) for i in chosen]),
        "other neutral prompts": fractions([curve(steerer, i, prompts=OTHER_PROMPTS) for i in chosen]),
    }
    report = {
        "sae": args.sae,
        "sae_id": sae_id,
        "hook": steering.hook_in,
        "prompts": PROMPTS,
        "other_prompts": OTHER_PROMPTS,
        "strengths": STRENGTHS,
        "units": "x the feature's max activation in its analysis; add at every position from the first prompt token",
        "measure": "P(T) as the next token after each prompt, mean over prompts",
        "monotone": f"mean P(T) never falls over strengths 0..{MAIN_MAX:g} and ends above strength 0",
        "selection": " ".join(__doc__.split("Selection: ")[1].split(" Writes")[0].split()),
        "min_count": args.min_count,
        **fractions(results),
        "features": results,
        "example": best,
        "examples": examples,
        "investigation": investigation,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    svg(results, Path(args.svg))
    for r in results:
        flag = "monotone" if r["monotone"] else "NOT     "
        print(f"#{r['feature']:5d} {r['token']!r:14} {flag} " + " ".join(f"{p:.2e}" for p in r["p_token"]))
    print(json.dumps(investigation, indent=1))
    print(
        f"example #{best['feature']} ({best['token']!r}, strength {best['strength']}):\n"
        f"  default: {best['default']!r}\n  steered: {best['steered']!r}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
