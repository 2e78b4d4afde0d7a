"""Offline default English corpus (``enwiki-shortened``).

The default corpus is plain prose extracted from a shortened English Wikipedia
XML dump that ships inside the ``gensim`` wheel on PyPI as test data
(``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``).
We never install gensim: the wheel is fetched with ``pip download`` (or found in
a local download directory) and the single member is read straight out of the
zip archive with :mod:`zipfile`.

The wiki markup is parsed with ``mwparserfromhell``; it replaced a hand-written cleaner
with an equivalent corpus (``scripts/compare_corpus_cleaners.py`` on the shipped dump:
106 articles either way, 2,806,919 vs 2,806,929 characters, 625,543 vs 625,546 SmolLM2
tokens, 10 of 16,657 lines changed). It is slower: about 13 s instead of 3 s per build,
and a page with thousands of unclosed tags would take minutes (the dump has none).

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

import mwparserfromhell
from mwparserfromhell.nodes import Heading, Tag, Text, Wikilink
from mwparserfromhell.wikicode import Wikicode

from lm_saes.paths import lm_saes_home

logger = logging.getLogger(__name__)

DEFAULT_CORPUS_NAME = "enwiki-shortened"

GENSIM_VERSION = "4.4.0"
GENSIM_WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_ARTICLE_CHARS = 200
# Bump when the text a build produces changes (cleaner, article filter), so that
# ensure_default_corpus rebuilds a corpus cached by an older lm-saes. 1: the hand-written
# cleaner (no stamp file); 2: mwparserfromhell.
CORPUS_FORMAT = 2

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


def corpus_stamp() -> str:
    """What a corpus built now is built by; written next to it, compared before reuse."""
    return f"{DEFAULT_CORPUS_NAME} format {CORPUS_FORMAT}, mwparserfromhell {mwparserfromhell.__version__}"


def _stamp_path(corpus: Path) -> Path:
    return corpus.with_name(f"{corpus.name}.stamp")


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
    logger.info("Downloading gensim %s wheel (for its test data) into %s", GENSIM_VERSION, download_dir)
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

# mwparserfromhell parses the markup (nested templates, tables, tags, links, comments,
# entities); we only decide what is prose: the tags and link namespaces dropped below,
# the sections dropped as a whole, and the whitespace and punctuation left behind.

# Tags whose *content* is not prose (dropped entirely); "table" covers {| wiki tables |}.
_DROP_TAGS = frozenset(
    {
        "ref",
        "references",
        "math",
        "chem",
        "ce",
        "gallery",
        "timeline",
        "imagemap",
        "score",
        "syntaxhighlight",
        "source",
        "graph",
        "mapframe",
        "maplink",
        "hiero",
        "templatedata",
        "inputbox",
        "table",
    }
)
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
_INTERLANG_RE = re.compile(r"^(?:[a-z]{2,3}(?:-[a-z]+)*|simple)$")
_BR_RE = re.compile(r"<br\s*/?\s*>", re.I)
# What the parser leaves as plain text: unclosed or stray brackets and tags, an unclosed
# comment, magic words, list markers it did not take as such (applied line by line).
_RESIDUE_RE = re.compile(r"\{\{|\}\}|\[\[|\]\]|</?[A-Za-z][^<>]*>|<!--.*|__[A-Z]+__|^[ \t]*[*#:;]+")
# Bold/italic quote runs, parsed as text (skip_style_tags). A run of four is "'" + bold
# ('''Foo''''s) unless it is an emptied pair (''{{flag}}'') with no word character before it.
_EMPTY_QUOTES_RE = re.compile(r"(?<![\w'])''''(?!')")
_QUOTES_RE = re.compile(r"'''''|'''|''")
_SPACES_RE = re.compile(r"[ \t\u00a0\u2009\u200b\u202f\ufeff]+")
# Punctuation orphaned by removed templates/refs: "word ," "( ; x)" "()" ",,".
_SPACE_BEFORE_PUNCT = (re.compile(r" +([,.;!?%)\]])"), r"\1")
_PUNCT_FIXES = (
    _SPACE_BEFORE_PUNCT,
    (re.compile(r"([(\[]) +"), r"\1"),
    (re.compile(r"\(\s*[,;:]*\s*\)"), ""),
    (re.compile(r"\(\s*[,;:]+\s*"), "("),
    (re.compile(r"([,;])(?:\s*[,;])+"), r"\1"),
    (_SPACES_RE, " "),
    _SPACE_BEFORE_PUNCT,  # again: "Foo ( ), bar" -> "Foo , bar" -> "Foo, bar"
)
_ALNUM_RE = re.compile(r"\w")


def _prune(code: Wikicode) -> None:
    """Empty the tags and links that are not prose, in place, so ``strip_code`` skips them.

    ``ifilter`` walks lazily, so the children of an emptied node are never visited.
    """
    # forcetype goes to isinstance, so a tuple works; mwparserfromhell types one class only.
    for node in code.ifilter(forcetype=(Tag, Wikilink)):  # type: ignore[call-overload]
        if isinstance(node, Tag):
            name = str(node.tag).strip().lower()
            if name in _DROP_TAGS:
                node.contents = ""
            elif name == "dd":  # "; term : definition" keeps its colon (dropped at line start)
                node.contents = Text(":")
            continue
        target = str(node.title).strip()
        visible = target.startswith(":")  # [[:Category:Foo]] is a visible link
        target = target.lstrip(":").strip()
        prefix = target.split(":", 1)[0].strip().lower() if ":" in target else ""
        if not visible and (
            prefix in _DROPPED_LINK_NAMESPACES
            or (prefix and node.text is None and _INTERLANG_RE.match(prefix))  # [[de:Foo]]
        ):
            node.title, node.text = "", ""
        elif node.text is None:
            if visible or target.startswith("#"):  # else strip_code shows the title as is
                node.title = target.lstrip("#")
        elif not node.text.strip_code().strip():  # pipe trick: [[Foo (bar)|]] -> "Foo"
            node.text = re.sub(r"\s*\([^()]*\)\s*$", "", target.split(":", 1)[-1]).strip()


def _clean_line(line: str) -> str:
    line = _QUOTES_RE.sub("", _EMPTY_QUOTES_RE.sub("", _RESIDUE_RE.sub("", line)))
    line = _SPACES_RE.sub(" ", line).strip()
    for pattern, repl in _PUNCT_FIXES:
        line = pattern.sub(repl, line)
    return line.strip() if _ALNUM_RE.search(line) else ""


def _paragraphs(text: str) -> str:
    """Clean each line; blank lines separate paragraphs, table residue lines are dropped."""
    paragraphs: list[list[str]] = [[]]
    for raw in text.split("\n"):
        line = "" if raw.lstrip().startswith(("|", "!", "{|")) else _clean_line(raw)
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return "\n\n".join("\n".join(p) for p in paragraphs if p)


def clean_wikitext(text: str) -> str:
    """Strip MediaWiki markup from article source, returning readable prose.

    Headings become lines of their own; reference-like sections ("References",
    "See also", ...) and headings without prose under them are dropped.
    """
    text = _BR_RE.sub("\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    # Quotes stay text: mwparserfromhell lets an unbalanced '' run across lines and swallow
    # later refs and headings (skip_style_tags is its documented workaround).
    code = mwparserfromhell.parse(text, skip_style_tags=True)
    _prune(code)
    blocks: list[tuple[int, str, str]] = []  # (heading level or 0, heading, prose below it)
    drop_level: int | None = None
    for section in code.get_sections(flat=True, include_lead=True):
        nodes = section.nodes
        heading = nodes[0] if nodes and isinstance(nodes[0], Heading) else None
        level = heading.level if heading is not None else 0
        if drop_level is not None and level > drop_level:
            continue
        drop_level = None
        title = _clean_line(heading.title.strip_code()) if heading is not None else ""
        if title.strip(" =").lower() in _DROPPED_SECTIONS:
            drop_level = level
            continue
        # collapse=False: nested contents keep their newlines ("...:<blockquote>\nHe ...").
        body = Wikicode(nodes[1:] if heading is not None else nodes).strip_code(collapse=False)
        blocks.append((level, title, _paragraphs(body)))

    # Keep a heading only if prose follows before the next heading of its level or higher.
    out: list[str] = []
    next_level: int | None = None  # level of the next kept item, 0 for prose
    for level, title, body in reversed(blocks):
        if body:
            out.append(body)
            next_level = 0
        if title and next_level is not None and (next_level == 0 or next_level > level):
            out.append(title)
            next_level = level
    return "\n\n".join(reversed(out))


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
    return bz2.BZ2File(src, "rb")


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
    into place; ``ATTRIBUTION.txt`` and ``<dest>.stamp`` (:func:`corpus_stamp`) are
    written beside it. Returns ``dest``.
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
    _atomic_write_text(_stamp_path(dest), corpus_stamp() + "\n")
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
    """Return the default corpus path, building the corpus first if it is missing or stale.

    Stale: its stamp file is missing or differs from :func:`corpus_stamp`, i.e. another
    cleaner or parser version built it.
    """
    path = default_corpus_path()
    stamp = _stamp_path(path)
    built_by = stamp.read_text(encoding="utf-8").strip() if stamp.is_file() else None
    if path.is_file() and built_by == corpus_stamp():
        return path
    if path.is_file():
        logger.info(
            "Rebuilding %s: built by %s, now %s",
            path,
            built_by or "an older lm-saes (no stamp)",
            corpus_stamp(),
        )
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
