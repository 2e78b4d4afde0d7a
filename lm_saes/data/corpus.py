"""Offline default English corpus (``enwiki-shortened``).

The default corpus is plain prose extracted from a shortened English Wikipedia
XML dump that ships inside the ``gensim`` wheel on PyPI as test data
(``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``).
We never install gensim: the wheel is fetched with ``pip download`` (or found in
a local download directory) and the single member is read straight out of the
zip archive with :mod:`zipfile`.

Attribution and licensing
-------------------------
* The article text is from English Wikipedia, written by Wikipedia contributors,
  and is licensed under the Creative Commons Attribution-ShareAlike 4.0 license
  (CC BY-SA 4.0, https://creativecommons.org/licenses/by-sa/4.0/).
* The dump excerpt is distributed as test data inside the ``gensim`` package
  (https://github.com/piskvorky/gensim), an LGPL-2.1 licensed package.
* The cleaned corpus produced here is a derivative of the Wikipedia text: any
  derivative (the JSONL corpus, excerpts of it, datasets built from it) must keep
  the CC BY-SA attribution and be shared under the same license.  An
  ``ATTRIBUTION.txt`` file is written next to the corpus for this purpose.

Run ``python -m lm_saes.data.corpus`` to (re)build the corpus under
``$LM_SAES_HOME/corpus/`` (default ``~/.cache/lm-saes/corpus/``).
"""

from __future__ import annotations

import argparse
import bz2
import html
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lm_saes.paths import lm_saes_home

logger = logging.getLogger(__name__)

DEFAULT_CORPUS_NAME = "enwiki-shortened"

GENSIM_VERSION = "4.4.0"
GENSIM_WIKI_MEMBER = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
MIN_ARTICLE_CHARS = 200

ATTRIBUTION_TEXT = f"""\
{DEFAULT_CORPUS_NAME} corpus (built by lm_saes.data.corpus)

Text: English Wikipedia, by Wikipedia contributors.
License: Creative Commons Attribution-ShareAlike 4.0 (CC BY-SA 4.0)
         https://creativecommons.org/licenses/by-sa/4.0/
Article histories and authors: https://en.wikipedia.org/wiki/<title>?action=history

Source file: {GENSIM_WIKI_MEMBER}
  shipped as test data in the gensim {GENSIM_VERSION} wheel (PyPI package "gensim",
  LGPL-2.1 licensed, https://github.com/piskvorky/gensim).

The corpus is a derivative of the Wikipedia text: wiki markup was stripped,
redirects, non-article pages and very short articles were dropped, and
reference/"see also" sections were removed. Any derivative of this corpus must
keep this CC BY-SA 4.0 attribution and be shared under the same license.
"""


# --------------------------------------------------------------------------- paths


def default_corpus_path() -> Path:
    """Location of the default JSONL corpus."""
    return lm_saes_home() / "corpus" / f"{DEFAULT_CORPUS_NAME}.jsonl"


# --------------------------------------------------------------------------- wheel


def _local_gensim_wheels(download_dir: Path) -> list[Path]:
    wheels = [p for p in download_dir.glob("gensim-*.whl") if p.is_file()]
    # Prefer the pinned version, then anything else (newest name last -> sort).
    pinned = [p for p in wheels if p.name.startswith(f"gensim-{GENSIM_VERSION}-")]
    return sorted(pinned) or sorted(wheels)


def find_gensim_wheel(download_dir: Path) -> Path:
    """Return a gensim wheel from ``download_dir``, downloading it with pip if absent."""
    download_dir = Path(download_dir)
    found = _local_gensim_wheels(download_dir) if download_dir.is_dir() else []
    if found:
        return found[-1]
    download_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        f"gensim=={GENSIM_VERSION}",
        "-d",
        str(download_dir),
    ]
    logger.info(
        "Downloading gensim %s wheel (for its test data) into %s", GENSIM_VERSION, download_dir
    )
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        raise RuntimeError(
            f"Could not download the gensim=={GENSIM_VERSION} wheel with pip ({exc}). "
            "The default corpus is read from that wheel's test data. Fix: make PyPI reachable, or run "
            f"`pip download --no-deps --only-binary=:all: gensim=={GENSIM_VERSION} -d {download_dir}` "
            "on a machine with network access and copy the .whl file into that directory."
        ) from exc
    found = _local_gensim_wheels(download_dir)
    if not found:
        raise RuntimeError(
            f"pip reported success but no gensim-*.whl was found in {download_dir}. Fix: download "
            f"gensim=={GENSIM_VERSION} (a binary wheel) into that directory manually."
        )
    return found[-1]


# --------------------------------------------------------------------------- markup

_COMMENT_RE = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# Tags whose *content* is not prose (dropped entirely).
_DROP_TAGS = (
    "ref|references|math|chem|ce|gallery|timeline|imagemap|score|syntaxhighlight|source|"
    "graph|mapframe|maplink|hiero|templatedata|inputbox"
)
_DROP_OPEN_RE = re.compile(rf"<({_DROP_TAGS})\b([^<>]*)>", re.I)
_DROP_CLOSE_RES = {name: re.compile(rf"</{name}\s*>", re.I) for name in _DROP_TAGS.split("|")}
_BR_RE = re.compile(r"<br\s*/?\s*>", re.I)
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>")

# Templates {{...}} and tables {| ... |} (tables only at line start), nested.
_BRACE_TOKEN_RE = re.compile(r"\{\{|\}\}|^[ \t]*\{\||^[ \t]*\|\}", re.M)
_LINK_TOKEN_RE = re.compile(r"\[\[|\]\]")
# [http://x label] -> label; [http://x] -> "". The URL part cannot contain
# whitespace, so the split between URL and label is unambiguous (no backtracking).
_EXT_LINK_RE = re.compile(
    r"\[(?:(?:https?|ftp|mailto|irc|news):|//)[^\s\[\]<>]*(?:[ \t]([^\[\]\n]*))?\]", re.I
)
# Bold/italic quote runs. A run of four is "'" + bold ('''Foo''''s) unless it is
# an emptied pair (''{{flag}}'') with no word character before it.
_EMPTY_QUOTES_RE = re.compile(r"(?<![\w'])''''(?!')")
_QUOTES_RE = re.compile(r"'''''|'''|''")
_LIST_PREFIX_RE = re.compile(r"^[ \t]*[*#:;]+[ \t]*", re.M)
_MAGIC_WORD_RE = re.compile(r"__[A-Z]+__")
_HEADING_RE = re.compile(r"^(={1,6})\s*(.*?)\s*(={1,6})$")
_SPACES_RE = re.compile(r"[ \t\u00a0\u2009\u200b\u202f\ufeff]+")
_SPACE_BEFORE_PUNCT_RE = re.compile(r" +([,.;!?%)\]])")
_SPACE_AFTER_OPEN_RE = re.compile(r"([(\[]) +")
_EMPTY_PARENS_RE = re.compile(r"\(\s*[,;:]*\s*\)")
_PAREN_LEADING_PUNCT_RE = re.compile(r"\(\s*[,;:]+\s*")
_REPEATED_PUNCT_RE = re.compile(r"([,;])(?:\s*[,;])+")
_ALNUM_RE = re.compile(r"\w")
_INTERLANG_RE = re.compile(r"^(?:[a-z]{2,3}(?:-[a-z]+)*|simple)$")

_DROPPED_LINK_NAMESPACES = frozenset({"file", "image", "category", "media"})
_DROPPED_SECTIONS = frozenset(
    {
        "references",
        "notes",
        "footnotes",
        "citations",
        "sources",
        "bibliography",
        "external links",
        "see also",
        "further reading",
        "notes and references",
        "references and notes",
        "works cited",
    }
)
_NON_ARTICLE_PREFIXES = (
    "Talk:",
    "User:",
    "User talk:",
    "Wikipedia:",
    "Wikipedia talk:",
    "File:",
    "File talk:",
    "MediaWiki:",
    "Template:",
    "Template talk:",
    "Help:",
    "Category:",
    "Portal:",
    "Draft:",
    "Module:",
)


def _drop_tag_blocks(text: str) -> str:
    """Remove ``<ref>...</ref>``-like blocks (and self-closing ``<ref/>``) linearly.

    An opener without a closer only loses the opening tag itself.
    """
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()  # tag names with no closer after the current point
    while (m := _DROP_OPEN_RE.search(text, pos)) is not None:
        out.append(text[pos : m.start()])
        name = m.group(1).lower()
        pos = m.end()
        if m.group(2).rstrip().endswith("/") or name in unclosed:  # self-closing
            continue
        close = _DROP_CLOSE_RES[name].search(text, pos)
        if close is None:
            unclosed.add(name)
        else:
            pos = close.end()
    out.append(text[pos:])
    return "".join(out)


def _strip_templates_and_tables(text: str) -> str:
    """Remove (nested) ``{{templates}}`` and ``{| tables |}`` in one linear scan.

    Brackets are matched with a stack; unclosed openers only lose their two
    opener characters (so one stray ``{{`` cannot swallow the rest of an
    article) and stray closers are dropped.
    """
    cuts: list[tuple[int, int]] = []  # [start, end) spans to delete
    stack: list[tuple[str, int, int]] = []  # (token, start, end) of open brackets
    i = 0
    while (m := _BRACE_TOKEN_RE.search(text, i)) is not None:
        tok = m.group().lstrip(" \t")
        i = m.end()
        if tok in ("{{", "{|"):
            stack.append((tok, m.start(), m.end()))
        elif tok == "}}":
            if stack and stack[-1][0] == "{{":
                cuts.append((stack.pop()[1], m.end()))
            elif not stack:
                cuts.append((m.start(), m.end()))
            # else: unbalanced "}}" inside a table -> ignore it
        elif stack and stack[-1][0] == "{{":
            # "|}" at line start inside a template, e.g. "|}}" ending a
            # parameter list: rescan from the "}".
            i = m.end() - 1
        elif stack:
            cuts.append((stack.pop()[1], m.end()))
        else:
            cuts.append((m.start(), m.end()))
    cuts.extend((start, end) for _, start, end in stack)
    if not cuts:
        return text
    cuts.sort()
    out: list[str] = []
    pos = 0
    for start, end in cuts:
        if start > pos:
            out.append(text[pos:start])
        pos = max(pos, end)
    out.append(text[pos:])
    return "".join(out)


def _render_link(inner: str) -> str:
    target, sep, label = inner.partition("|")
    target = target.strip()
    if target.startswith(":"):  # [[:Category:Foo]] is a visible link
        target = target[1:].strip()
    else:
        prefix = target.split(":", 1)[0].strip().lower() if ":" in target else ""
        if prefix in _DROPPED_LINK_NAMESPACES:
            return ""
        if prefix and not sep and _INTERLANG_RE.match(prefix):  # interlanguage link
            return ""
    if sep:
        label = label.strip()
        if label:
            return label
        # Pipe trick: [[Foo (bar)|]] -> "Foo"; [[ns:Foo|]] -> "Foo".
        name = target.split(":", 1)[-1]
        return re.sub(r"\s*\([^()]*\)\s*$", "", name).strip()
    return target.lstrip("#")


def _replace_links(text: str) -> str:
    """Render (nested) ``[[wiki links]]``; drop file/image/category links entirely."""
    stack: list[list[str]] = [[]]
    pos = 0
    for m in _LINK_TOKEN_RE.finditer(text):
        stack[-1].append(text[pos : m.start()])
        pos = m.end()
        if m.group() == "[[":
            stack.append([])
        elif len(stack) > 1:
            inner = "".join(stack.pop())
            stack[-1].append(_render_link(inner))
        # stray "]]" at depth 0: dropped
    stack[-1].append(text[pos:])
    while len(stack) > 1:  # unclosed "[[": keep its content as text
        inner = "".join(stack.pop())
        stack[-1].append(inner)
    return "".join(stack[0])


def _normalize_lines(text: str) -> str:
    """Headings -> plain lines, drop junk lines/sections, build paragraphs."""
    # Items: (level, text) with level 0 for prose lines, None for blank lines.
    items: list[tuple[int | None, str]] = []
    drop_level: int | None = None
    for raw in text.split("\n"):
        line = _SPACES_RE.sub(" ", raw).strip()
        hm = _HEADING_RE.match(line)
        if hm:
            level = min(len(hm.group(1)), len(hm.group(3)))
            title = hm.group(2).strip(" =")
            if drop_level is not None and level > drop_level:
                continue
            drop_level = None
            if title.lower() in _DROPPED_SECTIONS:
                drop_level = level
                continue
            if _ALNUM_RE.search(title):
                items.append((level, title))
            continue
        if drop_level is not None:
            continue
        if (
            not line
            or not _ALNUM_RE.search(line)
            or line.startswith(("|", "!", "{|"))
            or line.startswith("----")
        ):
            items.append((None, ""))
            continue
        line = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", line)
        line = _SPACE_AFTER_OPEN_RE.sub(r"\1", line)
        line = _EMPTY_PARENS_RE.sub("", line)
        line = _PAREN_LEADING_PUNCT_RE.sub("(", line)
        line = _REPEATED_PUNCT_RE.sub(r"\1", line)
        line = _SPACES_RE.sub(" ", line).strip()
        line = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", line)
        if not _ALNUM_RE.search(line):
            items.append((None, ""))
            continue
        items.append((0, line))

    # Drop headings without content: the next non-blank item is a heading of the
    # same or a higher level (or the end of the article).
    kept: list[tuple[int | None, str]] = []
    next_level: int | None = None  # level of the next non-blank item (0 = prose)
    for level, line in reversed(items):
        if level is None:
            kept.append((level, line))
            continue
        if level > 0 and (next_level is None or 0 < next_level <= level):
            continue
        kept.append((level, line))
        next_level = level
    kept.reverse()

    paragraphs: list[str] = []
    current: list[str] = []
    for level, line in kept:
        if level is None or level > 0:
            if current:
                paragraphs.append("\n".join(current))
                current = []
            if level:
                paragraphs.append(line)
            continue
        current.append(line)
    if current:
        paragraphs.append("\n".join(current))
    return "\n\n".join(paragraphs)


def clean_wikitext(text: str) -> str:
    """Strip MediaWiki markup from article source, returning readable prose."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _COMMENT_RE.sub("", text)
    text = _drop_tag_blocks(text)
    text = _strip_templates_and_tables(text)
    text = _LIST_PREFIX_RE.sub("", text)
    text = _replace_links(text)
    text = _EXT_LINK_RE.sub(lambda m: (m.group(1) or "").strip(), text)
    text = _BR_RE.sub("\n", text)
    text = _TAG_RE.sub("", text)
    text = _EMPTY_QUOTES_RE.sub("", text)
    text = _QUOTES_RE.sub("", text)
    text = _MAGIC_WORD_RE.sub("", text)
    text = html.unescape(text)
    return _normalize_lines(text)


# --------------------------------------------------------------------------- XML


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for c in elem:
        if _local(c.tag) == name:
            return c
    return None


def _open_xml_stream(src: bytes | bytearray | memoryview | IO[bytes]) -> IO[bytes]:
    if isinstance(src, bytes | bytearray | memoryview):
        data = bytes(src)
        return io.BytesIO(bz2.decompress(data) if data[:3] == b"BZh" else data)
    return bz2.BZ2File(src, "rb")  # type: ignore[arg-type]


def iter_wiki_articles(bz2_bytes_or_fileobj: bytes | IO[bytes]) -> Iterator[tuple[str, str]]:
    """Stream ``(title, plain_text)`` for the articles of a bz2 MediaWiki XML dump.

    Accepts the compressed bytes (plain XML bytes also work) or a binary file
    object yielding bz2 data. Redirects, non-article namespaces (``ns != 0``) and
    articles whose cleaned text is shorter than ``MIN_ARTICLE_CHARS`` are skipped.
    """
    stream = _open_xml_stream(bz2_bytes_or_fileobj)
    root: ET.Element | None = None
    try:
        for event, elem in ET.iterparse(stream, events=("start", "end")):
            if event == "start":
                if root is None:
                    root = elem
                continue
            if _local(elem.tag) != "page":
                continue
            title_el = _child(elem, "title")
            ns_el = _child(elem, "ns")
            title = (title_el.text or "").strip() if title_el is not None else ""
            text = None
            for rev in elem:
                if _local(rev.tag) == "revision":
                    text_el = _child(rev, "text")
                    if text_el is not None:
                        text = text_el.text or ""
            is_redirect = _child(elem, "redirect") is not None
            elem.clear()
            if root is not None:
                root.clear()  # drop references to processed pages
            if ns_el is not None:
                if (ns_el.text or "").strip() != "0":
                    continue
            elif title.startswith(_NON_ARTICLE_PREFIXES):
                continue
            if is_redirect or text is None or text.lstrip()[:9].upper() == "#REDIRECT":
                continue
            cleaned = clean_wikitext(text)
            if len(cleaned) < MIN_ARTICLE_CHARS:
                continue
            yield title, cleaned
    finally:
        stream.close()


# --------------------------------------------------------------------------- build


def _atomic_write_text(path: Path, content: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_default_corpus(dest: Path | None = None, download_dir: Path | None = None) -> Path:
    """Build the ``enwiki-shortened`` JSONL corpus (one ``{"title", "text"}`` per line).

    The file is written to a temporary file next to ``dest`` and atomically moved
    into place; ``ATTRIBUTION.txt`` is written beside it. Returns ``dest``.
    """
    t0 = time.perf_counter()
    dest = Path(dest) if dest is not None else default_corpus_path()
    download_dir = Path(download_dir) if download_dir is not None else lm_saes_home() / "downloads"
    dest.parent.mkdir(parents=True, exist_ok=True)
    wheel = find_gensim_wheel(download_dir)

    _atomic_write_text(dest.parent / "ATTRIBUTION.txt", ATTRIBUTION_TEXT)

    n_articles = 0
    n_chars = 0
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out, zipfile.ZipFile(wheel) as zf:
            try:
                member = zf.open(GENSIM_WIKI_MEMBER)
            except KeyError:
                raise RuntimeError(
                    f"{wheel} does not contain {GENSIM_WIKI_MEMBER}. Fix: delete it and let "
                    f"lm-saes download gensim=={GENSIM_VERSION}."
                ) from None
            with member:
                for title, text in iter_wiki_articles(member):
                    out.write(json.dumps({"title": title, "text": text}, ensure_ascii=False))
                    out.write("\n")
                    n_articles += 1
                    n_chars += len(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        if n_articles == 0:
            raise RuntimeError(f"No articles extracted from {wheel}:{GENSIM_WIKI_MEMBER}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info(
        "Built %s corpus: %d articles, %d characters -> %s (%.1fs)",
        DEFAULT_CORPUS_NAME,
        n_articles,
        n_chars,
        dest,
        time.perf_counter() - t0,
    )
    return dest


def ensure_default_corpus() -> Path:
    """Return the default corpus path, building the corpus first if it is missing."""
    path = default_corpus_path()
    if not path.is_file():
        build_default_corpus(path, lm_saes_home() / "downloads")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Build the offline {DEFAULT_CORPUS_NAME} corpus.")
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="output JSONL (default: $LM_SAES_HOME/corpus/enwiki-shortened.jsonl)",
    )
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=None,
        help="where to find or download the gensim wheel (default: $LM_SAES_HOME/downloads)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = build_default_corpus(args.dest, args.download_dir)
    print(path)


if __name__ == "__main__":
    main()
