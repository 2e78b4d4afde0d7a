"""The explainer's and the scorers' prompts, and how their answers are read.

Chat messages for any OpenAI-compatible endpoint. The wording is ours; the tasks are the ones
delphi and Neuronpedia define: the explainer sees contexts with the activating tokens marked
<<like this>> and names what they share; detection asks, per context, whether the feature is
present at all; fuzzing asks whether the marked tokens are the right ones. Each has one worked
example, which small instruct models need to keep the answer format. `PROMPT_VERSION` is stored
with every explanation and score: change it whenever a prompt changes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence

from lm_saes.autointerp.examples import Context

PROMPT_VERSION = "lm-saes-2"
Messages = list[dict[str, str]]

EXPLAIN_SYSTEM = (
    "You are a careful interpretability researcher. You study one feature of a language model: "
    "a unit that is active on some tokens of a text and silent on the rest. You will see text "
    "excerpts where it is active, strongest first; the tokens where it is active are marked "
    "<<like this>>. Work out what the marked tokens have in common: a word or part of a word, a "
    "grammatical role, a topic, or a pattern in the text just before them. Answer with one short "
    "explanation, at most 15 words, on one line that starts with 'Explanation:'."
)
EXPLAIN_EXAMPLE = (
    "Excerpts:\n"
    "1. The results were<< not>> what we expected, and the team was<< not>> pleased\n"
    "2. I could<< not>> believe it when she said she would<<n't>> come\n"
    "3. This is<< not>> a drill. Please leave the building\n"
    "Marked tokens, most frequent first: ' not' (4), \"n't\" (1)",
    'Explanation: negation words such as "not" and "n\'t" after a verb',
)
DETECT_SYSTEM = (
    "You are a careful interpretability researcher. You are given the explanation of a feature "
    "of a language model and several numbered text excerpts. For each excerpt, decide whether "
    "the feature, as explained, would be active somewhere in it. Answer with a Python list of "
    "1 (active) and 0 (not active), one number per excerpt, in order, and nothing else."
)
DETECT_EXAMPLE = (
    "Explanation: the names of months\n\n"
    "Excerpt 1: The festival takes place every year in late September, when\n"
    "Excerpt 2: He put the keys on the kitchen table and left\n"
    "Excerpt 3: The recipe needs two eggs and a cup of flour\n"
    "Excerpt 4: Applications close on 3 March and results follow in\n"
    "Excerpt 5: She has lived in the same house since she was",
    "[1, 0, 0, 1, 0]",
)
FUZZ_SYSTEM = (
    "You are a careful interpretability researcher. You are given the explanation of a feature "
    "of a language model and several numbered text excerpts in which some tokens are marked "
    "<<like this>>. In some excerpts the marks are where the feature is active; in others they "
    "were placed at random. For each excerpt, decide whether every marked token fits the "
    "explanation. Answer with a Python list of 1 (the marks fit) and 0 (they do not), one number "
    "per excerpt, in order, and nothing else."
)
FUZZ_EXAMPLE = (
    "Explanation: the names of months\n\n"
    "Excerpt 1: The festival takes place every year in late<< September>>, when\n"
    "Excerpt 2: He put the<< keys>> on the kitchen table and left\n"
    "Excerpt 3: The recipe needs two eggs and<< a cup>> of flour\n"
    "Excerpt 4: Applications close on 3<< March>> and results follow in\n"
    "Excerpt 5: She has lived in the same<< house>> since she was",
    "[1, 0, 0, 1, 0]",
)


def _chat(system: str, example: tuple[str, str], question: str) -> Messages:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": example[0]},
        {"role": "assistant", "content": example[1]},
        {"role": "user", "content": question},
    ]


def explain_messages(contexts: Sequence[Context], threshold: float = 0.0, max_tokens_listed: int = 8) -> Messages:
    """The explainer's prompt over `contexts` (strongest first), activating tokens marked."""
    ordered = sorted(contexts, key=lambda c: -c.max_activation)
    lines = [f"{i}. {_one_line(c.marked(threshold))}" for i, c in enumerate(ordered, 1)]
    counts: Counter[str] = Counter(
        c.tokens[i] for c in ordered for i, a in enumerate(c.activations) if a > 0 and a >= threshold * c.max_activation
    )
    listed = ", ".join(json.dumps(t.strip() or t)[1:-1] for t, _ in counts.most_common(max_tokens_listed))
    question = "Excerpts:\n" + "\n".join(lines) + f"\nMarked most often: {listed}"
    return _chat(EXPLAIN_SYSTEM, EXPLAIN_EXAMPLE, question)


def parse_explanation(reply: str, max_chars: int = 200, max_words: int = 25) -> str | None:
    """The explanation in a reply ("Explanation: ..." or else its first line): its first
    sentence, repeated clauses dropped (small models loop), at most `max_words`; None if empty."""
    match = re.search(r"explanation\s*:\s*(.+)", reply, flags=re.IGNORECASE)
    text = match.group(1) if match else next((line for line in reply.splitlines() if line.strip()), "")
    text = re.split(r"(?<=[a-z0-9\)\]\"'])\.\s|\.$", text.strip())[0]
    clauses = list(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    text = " ".join(", ".join(clauses).split()[:max_words])
    text = text.strip().strip("`*").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":  # quoted whole
        text = text[1:-1].strip()
    return text[:max_chars] or None


def classify_messages(kind: str, explanation: str, excerpts: Sequence[str]) -> Messages:
    """A detection or fuzzing prompt over numbered excerpts (already marked for fuzzing)."""
    system, example = (DETECT_SYSTEM, DETECT_EXAMPLE) if kind == "detection" else (FUZZ_SYSTEM, FUZZ_EXAMPLE)
    body = "\n".join(f"Excerpt {i}: {_one_line(text)}" for i, text in enumerate(excerpts, 1))
    return _chat(system, example, f"Explanation: {_one_line(explanation)}\n\n{body}")


def parse_labels(reply: str, n: int) -> list[bool] | None:
    """The first list of exactly `n` zeros and ones in a reply, or None (as delphi: a list of
    the wrong length is a failed answer, not a partial one)."""
    for match in re.finditer(r"\[([^\[\]]*)\]", reply):
        items = [item.strip().strip("'\"") for item in match.group(1).split(",") if item.strip()]
        if len(items) == n and all(item in ("0", "1") for item in items):
            return [item == "1" for item in items]
    return None


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", "\u21b5")
