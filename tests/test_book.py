"""Book parsing: EPUB spine and TOC titles, Markdown and text chapters, matter, and clear errors."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from engine.book import load_book, parse_chapter_list
from engine.exceptions import BookError

ALICE = Path(__file__).resolve().parents[2] / "shared" / "books" / "alice-in-wonderland-pg11.epub"


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
    assert [c.title for c in book.select()] == ["Chapter 1", "CHAPTER II. The Middle"]


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
