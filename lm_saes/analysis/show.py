"""Render one feature's analysis as plain text for the terminal (`lm-saes show`)."""

from __future__ import annotations


def _mark(tokens: list[str], acts: list[float], threshold: float) -> str:
    """Tokens joined as text; active ones wrapped as «token:activation»."""
    out = []
    for token, act in zip(tokens, acts, strict=True):
        text = token.replace("\n", "\\n")
        out.append(f"«{text}:{act:.1f}»" if act > threshold else text)
    return "".join(out)


def format_feature(doc: dict, examples: int = 8, samples: int = 1) -> str:
    """Density, activation stats, logit lens, top contexts and a few quantile samples."""
    lines = [
        f"feature {doc['index']} of {doc['sae_id']}",
        f"  density {doc['density']:.3%}   max {doc['max_activation']:.2f}   mean (when active) {doc['mean_activation']:.2f}",
    ]
    lens = doc.get("logit_lens")
    if lens:
        lines.append("  promotes: " + "  ".join(repr(t["token"]) for t in lens["top"]))
        lines.append("  suppresses: " + "  ".join(repr(t["token"]) for t in lens["bottom"]))
    if doc.get("top_tokens"):
        lines.append("  peaks on: " + "  ".join(f"{t['token']!r}×{t['count']}" for t in doc["top_tokens"][:8]))
    lines.append("  top activating contexts («token:activation» where it fires):")
    for example in doc["top_examples"][:examples]:
        threshold = 0.05 * example["max_activation"]
        lines.append(
            f"   {example['max_activation']:6.2f} | {_mark(example['tokens'], example['activations'], threshold)}"
        )
    shown = [(q["interval"], e) for q in doc.get("quantile_samples", []) for e in q["examples"][:samples]]
    if shown:
        lines.append("  weaker activations (samples per slice of the max):")
        for (low, high), example in shown[::-1]:
            threshold = 0.05 * example["max_activation"]
            lines.append(f"   {low:5.1f}-{high:<5.1f} | {_mark(example['tokens'], example['activations'], threshold)}")
    return "\n".join(lines)
