"""Book parsing: chapters at TOC anchors over a corpus of real-world EPUB shapes, Markdown and text
chapters, matter by positive signals, the coverage invariant, hostile input, and clear errors."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest

from engine.book import WORDS_PER_MINUTE, Book, load_book, parse_chapter_list
from engine.exceptions import BookError
from tests.fixtures.epubs import CORPUS, Doc, Shape, build, prose, reference_words, text_words

ALICE = Path(__file__).resolve().parents[3] / "shared" / "books" / "alice-in-wonderland-pg11.epub"


def make_epub(
    path: Path, chapters: list[tuple[str, str]], *, title: str = "Small Book", author: str = "A. Writer"
) -> Path:
    """Write a small EPUB with ebooklib: one XHTML file per chapter, a TOC, and a licence page."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("spool-test-book")
    book.set_title(title)
    book.set_language("en")
    book.add_author(author)
    items = []
    for n, (name, text) in enumerate(chapters, start=1):
        item = epub.EpubHtml(title=name, file_name=f"ch{n}.xhtml", lang="en")
        item.content = f"<html><body><h2>{name}</h2><p>{text}</p></body></html>"
        book.add_item(item)
        items.append(item)
    licence = epub.EpubHtml(title="License", file_name="licence.xhtml", lang="en")
    licence.content = "<html><body><p>*** END OF THE PROJECT GUTENBERG EBOOK. The Full Project Gutenberg License.</p></body></html>"
    book.add_item(licence)
    book.toc = [epub.Link(i.file_name, i.title, f"id{n}") for n, i in enumerate(items)]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items, licence]
    epub.write_epub(str(path), book)
    return path


def test_a_made_epub_keeps_spine_order_titles_and_marks_the_licence(tmp_path: Path) -> None:
    path = make_epub(
        tmp_path / "b.epub", [("One", "First words."), ("Two", "Second words."), ("Three", "Third.")]
    )
    book = load_book(path)
    assert (book.title, book.author) == ("Small Book", "A. Writer")
    body = book.select()
    assert [c.title for c in body] == ["One", "Two", "Three"]
    assert body[0].text.startswith("One.") and "First words." in body[0].text
    assert book.chapters[-1].kind == "back"
    assert [c.title for c in book.select(chapters=[2, 3])] == ["Two", "Three"]
    assert len(book.select(include_matter=True)) > 3


@pytest.mark.skipif(not ALICE.is_file(), reason="shared Alice EPUB not present")
def test_alice_has_twelve_chapters_cover_and_skips_gutenberg_matter() -> None:
    book = load_book(ALICE)
    body = book.select()
    assert len(body) == 12
    assert body[0].title == "CHAPTER I. Down the Rabbit-Hole"
    assert "Alice was beginning to get very tired" in body[0].text
    assert book.author == "Lewis Carroll" and book.cover_type == "image/jpeg"
    assert all("Project Gutenberg" not in c.text for c in body)
    assert book.chapters[-1].kind == "back"
    assert [c.title for c in body][1:3] == [
        "CHAPTER II. The Pool of Tears",
        "CHAPTER III. A Caucus-Race and a Long Tale",
    ]
    assert {c.reason for c in book.matter()} == {
        "Project Gutenberg header",
        "Project Gutenberg licence",
        "title page",
        "contents page",
        "only a heading, with no text of its own",
    }
    _assert_covers(book, ALICE.read_bytes())


def test_markdown_headings_become_chapters(tmp_path: Path) -> None:
    path = tmp_path / "story.md"
    path.write_text(
        "# My Story\n\nIntro line.\n\n## Part A\n\nSome *bold* [link](http://x).\n\n## Part B\n\nEnd.\n"
    )
    book = load_book(path)
    assert book.title == "My Story"
    assert [c.title for c in book.select()] == ["Part A", "Part B"]
    assert "Some bold link." in book.select()[0].text
    assert book.chapters[0].kind == "front"


def test_text_chapter_lines(tmp_path: Path) -> None:
    path = tmp_path / "novel.txt"
    path.write_text("Preface text.\n\nChapter 1\nIt began.\n\nCHAPTER II. The Middle\nIt went on.\n")
    book = load_book(path)
    # Text before the first chapter is read: nothing is skipped only because it comes first.
    assert [c.title for c in book.select()] == ["novel", "Chapter 1", "CHAPTER II. The Middle"]
    assert book.select()[0].text == "Preface text."


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("empty.txt", b"   \n", "empty"),
        ("broken.epub", b"PK\x03\x04 not really a zip", "ZIP"),
        ("binary.txt", b"\x00\x01\x02\xff" * 100, "binary"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path: Path, name: str, data: bytes, needle: str) -> None:
    with pytest.raises(BookError, match=needle):
        load_book(tmp_path / name, data=data, filename=name)


def test_an_encrypted_epub_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr("META-INF/container.xml", "<container/>")
        zf.writestr("META-INF/encryption.xml", "<encryption/>")
    with pytest.raises(BookError, match="DRM"):
        load_book("x.epub", data=buffer.getvalue(), filename="x.epub")


def test_chapter_lists() -> None:
    assert parse_chapter_list("1,3-5") == [1, 3, 4, 5]
    assert parse_chapter_list(None) is None
    with pytest.raises(BookError, match="1,3-5"):
        parse_chapter_list("one")


def test_out_of_range_chapters_say_how_many_there_are(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("Chapter 1\nA.\n\nChapter 2\nB.\n")
    with pytest.raises(BookError, match="1-2"):
        load_book(path).select(chapters=[3])


def _coverage(book: Book) -> list[str]:
    """Every word of every section, in order."""
    return text_words(" ".join(c.text for c in book.chapters))


def _assert_covers(book: Book, data: bytes | None = None) -> None:
    """The book-level coverage invariant: sections tile Book.text exactly, in order, and lose no word."""
    assert [c.index for c in book.chapters] == list(range(len(book.chapters)))
    spans = [(c.start, c.end) for c in book.chapters]
    assert spans == sorted(spans) and all(a < b for a, b in spans)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert not book.text[end:start].strip(), "text between two sections belongs to neither"
    assert not book.text[: spans[0][0]].strip() and not book.text[spans[-1][1] :].strip()
    assert _coverage(book) == text_words(book.text)
    if data is not None:
        assert _coverage(book) == reference_words(data), "a word of the spine is missing or doubled"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_word_of_every_corpus_epub_lies_in_exactly_one_section(name: str) -> None:
    data = CORPUS[name]()
    book = load_book(f"{name}.epub", data=data, filename=f"{name}.epub")
    _assert_covers(book, data)
    assert all(c.reason for c in book.matter()) and not any(c.reason for c in book.body())


def _load(name: str) -> Book:
    return load_book(f"{name}.epub", data=CORPUS[name](), filename=f"{name}.epub")


def test_gutenberg_files_with_several_chapters_are_split_at_their_anchors() -> None:
    book = _load("gutenberg_several_per_file")
    assert book.outline == "ncx"
    assert [c.title for c in book.body()] == [
        f"CHAPTER {r}. The {r} Road" for r in ("I", "II", "III", "IV", "V")
    ]
    first, second = book.body()[:2]
    assert "In chapter I, sentence number 3" in first.text and "chapter II" not in first.text
    assert second.text.startswith("CHAPTER II. The II Road.")
    assert book.body()[-1].text.endswith("THE END")
    assert [(c.kind, c.reason) for c in book.matter()] == [
        ("front", "Project Gutenberg header"),
        ("front", "title page"),
        ("front", "contents page"),
        ("back", "Project Gutenberg licence"),
        ("back", "Project Gutenberg licence"),
    ]


def test_one_chapter_runs_over_two_files() -> None:
    book = _load("chapter_over_two_files")
    assert [c.title for c in book.body()] == ["Chapter 1", "Chapter 2", "Chapter 3"]
    assert "the second part, continued" in book.body()[1].text
    assert "the second part, continued" not in book.body()[2].text


def test_a_nested_toc_keeps_parts_above_chapters() -> None:
    book = _load("nested_parts")
    assert [(c.title, c.parents) for c in book.body()] == [
        ("Chapter 1", ("Part One",)),
        ("Chapter 2", ("Part One",)),
        ("Part Two", ()),
        ("Chapter 3", ("Part Two",)),
    ]
    # A part page of a heading only is read at the start of its first chapter; one with prose is its own.
    assert book.body()[0].text.startswith("Part One.\n\nChapter 1.")
    assert book.body()[2].words > 250


@pytest.mark.parametrize("name", ["nav_only", "nav_only_dangling_ncx", "ebooklib_nav_only"])
def test_an_epub3_with_only_a_navigation_document_opens(name: str) -> None:
    book = _load(name)
    assert book.outline == "nav"
    expected = (
        ["Morning", "Evening"] if name.startswith("ebooklib") else ["The Beginning", "The Middle", "The End"]
    )
    assert [c.title for c in book.body()] == expected
    assert any("contents" in c.title.lower() or "toc" in c.reason for c in book.matter())


def test_an_epub2_ncx_with_and_without_fragments() -> None:
    book = _load("ncx_only")
    assert book.outline == "ncx"
    assert [c.title for c in book.body()] == ["I", "II", "III"]
    assert "section two" not in book.body()[0].text and "section two" in book.body()[1].text


def test_no_toc_falls_back_to_headings() -> None:
    book = _load("headings_only")
    assert book.outline == "headings"
    assert [c.title for c in book.body()] == ["First Light", "High Noon", "Dusk"]
    assert [(c.title, c.reason) for c in book.matter()] == [("A Test Book", "title page")]


def test_epub_type_matter_is_skipped_unless_it_holds_a_page_of_prose() -> None:
    book = _load("typed_matter")
    assert [c.title for c in book.body()] == ["Preface", "Chapter 1"]
    reasons = {c.title: c.reason for c in book.matter()}
    assert reasons == {
        "Title Page": 'marked epub:type="titlepage"',
        "Copyright": 'marked epub:type="copyright-page"',
        "Notes": 'outside the reading order (linear="no")',
        "Index": 'marked epub:type="index"',
    }
    assert [c.title for c in book.select(include_matter=True)] == [c.title for c in book.chapters]


def test_a_toc_entry_to_a_missing_anchor_starts_its_file_with_a_warning() -> None:
    docs = [Doc("a.xhtml", f"<h1>One</h1>{prose('one')}"), Doc("b.xhtml", f"<h1>Two</h1>{prose('two')}")]
    nav = [("One", "a.xhtml", []), ("Two", "b.xhtml#nowhere", [])]
    data = build(Shape(docs=docs, nav=nav))
    book = load_book("x.epub", data=data, filename="x.epub")
    assert [c.title for c in book.body()] == ["One", "Two"]
    assert any("missing anchor" in w for w in book.warnings)
    _assert_covers(book, data)


def test_the_preview_lists_every_section_with_words_minutes_and_why_it_is_skipped() -> None:
    book = _load("gutenberg_several_per_file")
    preview = book.preview()
    assert [s["number"] for s in preview["sections"] if s["selected"]] == [1, 2, 3, 4, 5]
    assert [s["title"] for s in preview["skipped"]] == [c.title for c in book.matter()]
    assert all(s["reason"] and s["words"] > 0 for s in preview["skipped"])
    assert preview["selected"]["words"] == sum(c.words for c in book.body())
    assert preview["selected"]["minutes"] == pytest.approx(
        preview["selected"]["words"] / WORDS_PER_MINUTE, abs=0.1
    )
    only = book.preview(chapters=[2], speed=2.0)
    assert [s["title"] for s in only["sections"] if s["selected"]] == ["CHAPTER II. The II Road"]
    with_matter = book.preview(include_matter=True)
    assert with_matter["skipped"] == [] and with_matter["selected"]["chapters"] == len(book.chapters)


def test_gutenberg_plain_text_skips_header_contents_and_licence() -> None:
    text = (
        "The Project Gutenberg eBook of The Road\n\nTitle: The Road\n\nAuthor: A. Writer\n\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK THE ROAD ***\n\n\nTHE ROAD\n\nby A. Writer\n\n\n"
        "Contents\n\n CHAPTER I.     Down the Road\n CHAPTER II.    Up the Hill\n CHAPTER III.   Home\n\n\n"
        "CHAPTER I.\nDown the Road\n\n\nIt was a long road, and she walked it every single day of the year.\n\n"
        "PART TWO\n\nCHAPTER II.\nUp the Hill\n\n\nThe hill was steep. Part of it was stone.\n\n"
        "Part one of the plan was simple, she said.\n\n"
        "CHAPTER III.\nHome\n\n\nThen she went home.\n\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK THE ROAD ***\n\nSection 1. General Terms of Use.\n"
    )
    book = load_book("road.txt", data=text.encode(), filename="road.txt")
    _assert_covers(book)
    assert (book.title, book.author) == ("The Road", "A. Writer")
    assert [(c.title, c.parents) for c in book.body()] == [
        ("CHAPTER I. Down the Road", ()),
        ("CHAPTER II. Up the Hill", ("PART TWO",)),
        ("CHAPTER III. Home", ()),
    ]
    assert "Part one of the plan" in book.body()[1].text
    assert [c.reason for c in book.matter()] == [
        "Project Gutenberg header",
        "title page",
        "contents page",
        "Project Gutenberg licence",
    ]


def test_markdown_coverage_and_headings() -> None:
    text = "# Tales\n\nA few words first.\n\n## One\n\nFirst *tale* here.\n\n```\ncode()\n```\n\n## Two\n\nSecond.\n"
    book = load_book("t.md", data=text.encode(), filename="t.md")
    _assert_covers(book)
    assert [c.title for c in book.body()] == ["One", "Two"]
    assert book.body()[0].text == "One.\n\nFirst tale here."
    assert any("code block" in w for w in book.warnings)


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("md-heading.md", "#" * 6 + " " + " " * 50_000 + "x"),
        ("md-emphasis.md", "*a" * 25_000),
        ("md-images.md", "![" * 25_000),
        ("md-links.md", "[a](" * 12_500),
        ("md-tags.md", "<a " * 16_000),
        ("md-rules.md", "- " * 25_000 + "x"),
        ("text-chapters.txt", "Chapter 1\n\n" * 4_000),
        ("text-spaces.txt", "chapter " + " " * 50_000 + "one"),
        ("text-contents.txt", "Contents\n" + "CHAPTER I.\n" * 5_000),
    ],
)
def test_hostile_text_parses_in_linear_time(name: str, payload: str) -> None:
    started = time.perf_counter()
    try:
        book = load_book(name, data=payload.encode(), filename=name)
    except BookError:
        book = None
    assert time.perf_counter() - started < 1.0
    if book is not None:
        _assert_covers(book)


def test_hostile_epub_markup_parses_in_linear_time() -> None:
    body = "<h2>" * 10_000 + "<p>" + "a " * 20_000 + "<a href='#x'>" * 5_000
    data = build(Shape(docs=[Doc("a.xhtml", body)]))
    started = time.perf_counter()
    book = load_book("h.epub", data=data, filename="h.epub")
    assert time.perf_counter() - started < 2.0
    _assert_covers(book, data)


def test_a_zip_bomb_epub_is_refused_before_it_is_inflated() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr("META-INF/container.xml", "<container/>")
        zf.writestr("OEBPS/big.xhtml", b"\0" * (64 * 1024 * 1024))
    data = buffer.getvalue()
    assert len(data) < 1024 * 1024
    started = time.perf_counter()
    with pytest.raises(BookError, match="zip bomb"):
        load_book("bomb.epub", data=data, filename="bomb.epub")
    assert time.perf_counter() - started < 1.0


def test_an_epub_declaring_xml_entities_is_refused() -> None:
    data = build(Shape(docs=[Doc("a.xhtml", "<p>x</p>")]))
    archive = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in archive.infolist():
            content = archive.read(info)
            if info.filename.endswith(".opf"):
                content = (
                    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa">]>' + content.split(b"?>", 1)[1]
                )
            zf.writestr(info, content)
    with pytest.raises(BookError, match="entities"):
        load_book("e.epub", data=out.getvalue(), filename="e.epub")


PRIDE = Path(__file__).resolve().parents[1] / "data" / "pg1342-pride-and-prejudice.epub"


def test_pride_and_prejudice_gives_its_61_chapters_from_chapter_1() -> None:
    """Project Gutenberg EPUB #1342 as people have it: several chapters per file, an NCX, a licence."""
    data = PRIDE.read_bytes()
    book = load_book(PRIDE)
    assert book.outline == "ncx" and (book.title, book.author) == ("Pride and Prejudice", "Jane Austen")
    assert [c.title for c in book.body()] == [f"Chapter {n}" for n in range(1, 62)]
    assert book.body()[0].text.startswith("Chapter 1.\n\nIt is a truth universally acknowledged")
    assert book.body()[-1].text.endswith("the means of uniting them.")
    assert [(c.kind, c.reason) for c in book.matter()] == [
        ("front", "Project Gutenberg header"),
        ("front", "a list of links (contents or illustrations)"),
        ("back", "only a heading, with no text of its own"),
        ("back", "Project Gutenberg licence"),
    ]
    # Every word lies in one section. The one difference from a tag-stripping reader: the file's own
    # broken markup (`<div id="bm_info>`, a quote missing) hides five words inside an attribute, as it
    # does in a browser.
    got, ref = _coverage(book), reference_words(data)
    assert got == text_words(book.text)
    hidden = ["more", "books", "by", "jane", "austen"]
    at = next(i for i in range(len(ref)) if ref[i : i + 5] == hidden)
    assert got == ref[:at] + ref[at + 5 :]
