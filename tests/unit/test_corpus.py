"""Tests for the offline default corpus (lm_saes.data.corpus); no network access."""

from __future__ import annotations

import bz2
import io
import json
import time
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from lm_saes.data import corpus
from lm_saes.data.corpus import (
    DEFAULT_CORPUS_NAME,
    GENSIM_WIKI_MEMBER,
    build_default_corpus,
    clean_wikitext,
    corpus_stamp,
    default_corpus_path,
    ensure_default_corpus,
    find_gensim_wheel,
    iter_wiki_articles,
    lm_saes_home,
)

NS = "http://www.mediawiki.org/xml/export-0.10/"

ARTICLE_WIKITEXT = """\
{{Infobox thing
| name = {{nowrap|Foo {{small|bar}}}}
| image = [[File:Foo.png|thumb|Logo of [[Foo]]]]
|}}
{{Use dmy dates|date=May 2020}}
'''Foo''' is a ''[[thing]]'' studied by [[Example person|Jane Doe]].<ref name="a">{{cite web \
|url=http://example.com |title=Cite [[x]]}}</ref> It was described in [http://example.com/book \
The Book] [http://example.org].<ref name="a" /> <!-- a hidden
comment --> Its mass is 5&nbsp;kg &amp; it is '''''very''''' old {{lang|la|res}}, \
see [[Bar (baz)|]].<ref>Unused &lt;b&gt;note&lt;/b&gt;</ref>

[[File:Foo.jpg|thumb|left|A caption with a [[nested link|nested]] inside.]]
== History ==
{| class="wikitable"
|-
! Year !! Event
|-
| 1900 || {{flag|X}}
|-
|
{| class="inner"
| nested [[table]]
|}
|}
The history of '''Foo''' began in [[1900]]{{citation needed|date=May 2020}}, when \
<span style="color:red">scholars</span> noticed it.<br />It grew.

=== Early period ===
* First item with a [[Bar (baz)|]] pipe trick
* Second item, ''emphasised''
# Numbered item

== Empty section ==
{{Main|Somewhere else}}

== See also ==
* [[Other thing]]

== References ==
{{reflist}}

[[Category:Things]]
[[de:Foo]]
"""

EXPECTED_ARTICLE = (
    "Foo is a thing studied by Jane Doe. It was described in The Book. "
    "Its mass is 5 kg & it is very old, see Bar.\n"
    "\n"
    "History\n"
    "\n"
    "The history of Foo began in 1900, when scholars noticed it.\n"
    "It grew.\n"
    "\n"
    "Early period\n"
    "\n"
    "First item with a Bar pipe trick\n"
    "Second item, emphasised\n"
    "Numbered item"
)


def _page(title: str, ns: int, text: str, *, redirect: str | None = None) -> str:
    redirect_el = f'<redirect title="{escape(redirect)}" />' if redirect else ""
    return f"""
  <page>
    <title>{escape(title)}</title>
    <ns>{ns}</ns>
    <id>1</id>
    {redirect_el}
    <revision>
      <id>2</id>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text xml:space="preserve">{escape(text)}</text>
    </revision>
  </page>"""


def _dump_xml() -> bytes:
    long_tail = " Padding sentence for a long enough article." * 10
    pages = [
        _page("Foo", 0, ARTICLE_WIKITEXT),
        _page("Foo redirect", 0, "#REDIRECT [[Foo]]" + long_tail, redirect="Foo"),
        _page("Untagged redirect", 0, "#redirect [[Foo]]" + long_tail),
        _page("Talk:Foo", 1, "Discussion about '''Foo'''." + long_tail),
        _page("Stub", 0, "'''Stub''' is too short.{{stub}}"),
        _page("Second", 0, "Second article." + long_tail),
    ]
    return (
        f'<mediawiki xmlns="{NS}" version="0.10" xml:lang="en">\n'
        "  <siteinfo><sitename>Wikipedia</sitename>"
        '<namespaces><namespace key="0" /><namespace key="1">Talk</namespace></namespaces>'
        "</siteinfo>" + "".join(pages) + "\n</mediawiki>\n"
    ).encode("utf-8")


@pytest.fixture(scope="module")
def dump_bz2() -> bytes:
    return bz2.compress(_dump_xml())


def test_iter_wiki_articles_cleans_and_skips(dump_bz2: bytes) -> None:
    articles = list(iter_wiki_articles(dump_bz2))
    titles = [t for t, _ in articles]
    # Redirects (tagged or not), the ns=1 talk page and the short stub are skipped.
    assert titles == ["Foo", "Second"]
    assert articles[0][1] == EXPECTED_ARTICLE
    assert articles[1][1].startswith("Second article. Padding sentence")


def test_iter_wiki_articles_accepts_file_objects_and_plain_xml(dump_bz2: bytes) -> None:
    from_fileobj = list(iter_wiki_articles(io.BytesIO(dump_bz2)))
    from_plain = list(iter_wiki_articles(_dump_xml()))
    assert from_fileobj == from_plain == list(iter_wiki_articles(dump_bz2))


def test_iter_wiki_articles_without_namespace() -> None:
    xml = _dump_xml().replace(f' xmlns="{NS}"'.encode(), b"")
    assert [t for t, _ in iter_wiki_articles(bz2.compress(xml))] == ["Foo", "Second"]


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        ("Hello {{ world. More [[text.", "Hello world. More text."),  # unclosed openers
        ("Stray }} closer ]] here.", "Stray closer here."),
        ("A <ref>unclosed ref and text.", "A unclosed ref and text."),
        ("'''Lincoln''''s hat and ''{{flag|X}}'' (UK)", "Lincoln's hat and (UK)"),
        (
            "[[:Category:Foo]] and [[Foo#Bar|bar]] and [[wikt:foo|word]]",
            "Category:Foo and bar and word",
        ),
        ("x<math>{{a}} < b</math>y<references/>z", "xyz"),
        # An unbalanced '' inside a ref must not keep the parser from seeing the ref.
        (
            "Globally.<ref>Bar'' by X. 2007.</ref>\n\nNext ''italic'' paragraph.\n\n== See also ==\n* A book",
            "Globally.\n\nNext italic paragraph.",
        ),
        ("; Balanced design: An experimental design.", "Balanced design: An experimental design."),
        ("between [[29th parallel north|{{nowrap|29° N}}]] and", "between 29th parallel north and"),
        ("'''ASCII''' ({{IPAc-en|æ}} {{respell|ASS|kee}}), abbreviated.", "ASCII, abbreviated."),
        (
            "From ''Principles'':<blockquote>\nHe refers to it.</blockquote>",
            "From Principles:\nHe refers to it.",
        ),
    ],
)
def test_clean_wikitext_edge_cases(wikitext: str, expected: str) -> None:
    assert clean_wikitext(wikitext) == expected


def test_clean_wikitext_malformed_markup_keeps_prose_and_is_fast() -> None:
    """Unclosed openers of each kind neither swallow the prose after them nor take long.

    mwparserfromhell backtracks over the rest of the page for each unclosed tag: thousands
    of them take minutes (cf. earwig/mwparserfromhell#364 for templates). The shipped dump
    has no such page; a 90 kB page with 45 broken openers takes about 0.3 s.
    """
    openers = ["{{", "[[", "<ref name=x ", "<ref>", "[http://a ", "'''", "{|\n", "<b ", "{{a|"]
    para = "Some prose words here, and a few more of them to read. " * 30
    text = "".join(f"{opener}{para}\n\n" for opener in openers * 5) + "The end."
    t0 = time.perf_counter()
    out = clean_wikitext(text)
    assert time.perf_counter() - t0 < 5.0
    assert out.count("Some prose words here") == 30 * len(openers) * 5
    assert out.endswith("\n\nThe end.")
    assert "{{" not in out and "[[" not in out and "'''" not in out


def _make_fake_wheel(download_dir: Path, dump_bz2: bytes) -> Path:
    download_dir.mkdir(parents=True, exist_ok=True)
    wheel = download_dir / "gensim-4.4.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("gensim/__init__.py", "")
        zf.writestr(GENSIM_WIKI_MEMBER, dump_bz2)
    return wheel


def test_paths_follow_lm_saes_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LM_SAES_HOME", str(tmp_path / "home"))
    assert lm_saes_home() == tmp_path / "home"
    assert default_corpus_path() == tmp_path / "home" / "corpus" / "enwiki-shortened.jsonl"
    assert DEFAULT_CORPUS_NAME == "enwiki-shortened"
    monkeypatch.delenv("LM_SAES_HOME")
    assert lm_saes_home() == Path.home() / ".cache" / "lm-saes"


def _no_subprocess(*args: object, **kwargs: object) -> None:
    raise AssertionError("pip must not be called when a wheel is present")


def test_build_default_corpus_from_fake_wheel(tmp_path: Path, dump_bz2: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus.subprocess, "run", _no_subprocess)
    download_dir = tmp_path / "downloads"
    wheel = _make_fake_wheel(download_dir, dump_bz2)
    assert find_gensim_wheel(download_dir) == wheel

    dest = tmp_path / "out" / "corpus.jsonl"
    assert build_default_corpus(dest, download_dir=download_dir) == dest
    # Only the corpus, its stamp and the attribution file remain: no temporary files.
    assert sorted(p.name for p in dest.parent.iterdir()) == [
        "ATTRIBUTION.txt",
        "corpus.jsonl",
        "corpus.jsonl.stamp",
    ]
    assert (dest.parent / "corpus.jsonl.stamp").read_text(encoding="utf-8") == corpus_stamp() + "\n"
    rows = [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()]
    assert [r["title"] for r in rows] == ["Foo", "Second"]
    assert rows[0] == {"title": "Foo", "text": EXPECTED_ARTICLE}
    attribution = (dest.parent / "ATTRIBUTION.txt").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in attribution and "gensim" in attribution

    # Rebuilding replaces the file in place.
    dest.write_text("stale\n", encoding="utf-8")
    build_default_corpus(dest, download_dir=download_dir)
    assert dest.read_text(encoding="utf-8").splitlines()[0].startswith('{"title": "Foo"')


def test_build_failure_leaves_no_temp_file(tmp_path: Path, dump_bz2: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    download_dir = tmp_path / "downloads"
    _make_fake_wheel(download_dir, dump_bz2)

    def boom(_src: object):
        yield "Foo", "partial"
        raise ValueError("boom")

    monkeypatch.setattr(corpus, "iter_wiki_articles", boom)
    dest = tmp_path / "out" / "corpus.jsonl"
    with pytest.raises(ValueError, match="boom"):
        build_default_corpus(dest, download_dir=download_dir)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ATTRIBUTION.txt"]


def test_ensure_default_corpus_builds_once(tmp_path: Path, dump_bz2: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LM_SAES_HOME", str(tmp_path))
    monkeypatch.setattr(corpus.subprocess, "run", _no_subprocess)
    _make_fake_wheel(tmp_path / "downloads", dump_bz2)
    path = ensure_default_corpus()
    assert path == tmp_path / "corpus" / "enwiki-shortened.jsonl"
    mtime = path.stat().st_mtime_ns
    assert ensure_default_corpus() == path
    assert path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("stamp", [None, "enwiki-shortened format 1, mwparserfromhell 0.7.2"])
def test_ensure_default_corpus_rebuilds_a_stale_corpus(
    tmp_path: Path, dump_bz2: bytes, monkeypatch: pytest.MonkeyPatch, stamp: str | None
) -> None:
    # A corpus cached by an older cleaner (no stamp, or another format) is rebuilt.
    monkeypatch.setenv("LM_SAES_HOME", str(tmp_path))
    monkeypatch.setattr(corpus.subprocess, "run", _no_subprocess)
    _make_fake_wheel(tmp_path / "downloads", dump_bz2)
    path = default_corpus_path()
    path.parent.mkdir(parents=True)
    path.write_text('{"title": "Old", "text": "old cleaner"}\n', encoding="utf-8")
    if stamp is not None:
        (path.parent / f"{path.name}.stamp").write_text(stamp + "\n", encoding="utf-8")
    assert ensure_default_corpus() == path
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["title"] for r in rows] == ["Foo", "Second"]
    assert (path.parent / f"{path.name}.stamp").read_text(encoding="utf-8") == corpus_stamp() + "\n"


def test_find_gensim_wheel_pip_failure_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> None:
        calls.append(cmd)
        raise corpus.subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(corpus.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="pip download"):
        find_gensim_wheel(tmp_path / "dl")
    assert calls and calls[0][1:4] == ["-m", "pip", "download"]
    assert "gensim==4.4.0" in calls[0] and "--no-deps" in calls[0]
