"""A steering result as plain text for the terminal (`lm-saes steer`)."""

from __future__ import annotations

from lm_saes.steering.generate import Completion, SteerResult


def format_result(result: SteerResult, names: dict[int, str] | None = None) -> str:
    """`names`: how to show tracked token ids (default: the id)."""
    prompt = "".join(result.prompt_tokens[1:])
    lines = [f"prompt: {prompt!r}"]
    for change in result.changes:
        lines.append(
            f"  {change['mode']} feature {change['feature']} ({change['value']:g}) on "
            f"{change['positions']} positions from token {change['from_token']}"
        )
    if result.frozen_attention:
        lines.append("  attention frozen to the unsteered model's patterns")
    lines += [
        *_completion("default", result.default, names or {}),
        *_completion("steered", result.steered, names or {}),
    ]
    return "\n".join(lines)


def _completion(name: str, completion: Completion, names: dict[int, str]) -> list[str]:
    lines = [f"{name} ({completion.finish_reason}): {completion.text!r}"]
    tracked = completion.steps[0].tracked if completion.steps else {}
    for token in tracked:
        curve = " ".join(f"{step.tracked[token]:.3f}" for step in completion.steps)
        lines.append(f"  P({names.get(token, token)!r}) per step: {curve}")
    return lines
