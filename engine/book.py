"""Books in: EPUB (spine order, titles from the table of contents), plain text and Markdown.

A parsed :class:`Book` is a title, an author, an optional cover image and an ordered list of
:class:`Chapter`. Front and back matter (a Project Gutenberg header or licence, a contents
page, a cover page) is recognised and marked, so callers can keep or skip it. Nothing here
synthesises audio; that is :mod:`engine.audiobook`.
"""

from __future__ import annotations

import html
import re
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from engine.exceptions import BookError

#: Largest book file accepted by the parser, in bytes.
MAX_BOOK_BYTES = 50 * 1024 * 1024

#: Formats the parser reads, by file extension.
BOOK_FORMATS: dict[str, str] = {
    ".epub": "epub",
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
}

_GUTENBERG_MARKERS = (
    "*** start of the project gutenberg",
    "*** end of the project gutenberg",
    "project gutenberg license",
    "project gutenberg™ license",
    "project gutenberg-tm license",
    "full project gutenberg license",
)
_CONTENTS_TITLE = re.compile(r"^\s*(table of )?contents\s*$", re.IGNORECASE)
_CHAPTER_LINE = re.compile(
    r"^[ \t]*((chapter|part|book|section)\s+([0-9]+|[ivxlcdm]+|[a-z]+)\b[^\n]{0,120})$",
    re.IGNORECASE | re.MULTILINE,
)
_MD_HEADING = re.compile(r"^(#{1,2})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_BLOCK_TAGS = frozenset(
    "p div section article h1 h2 h3 h4 h5 h6 li ul ol blockquote pre table tr br hr dd dt figcaption".split()
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "svg", "math"})


@dataclass
class Chapter:
    """One chapter: its position, title, text to read, and whether it is front or back matter."""

    index: int
    title: str
    text: str
    kind: str = "body"  # "body", "front" or "back"

    @property
    def words(self) -> int:
        """Number of words in the chapter's text."""
        return len(self.text.split())


@dataclass
class Book:
    """A parsed book: metadata, cover and chapters in reading order."""

    title: str
    author: str
    chapters: list[Chapter]
    cover: bytes | None = None
    cover_type: str | None = None
    source_format: str = "text"
    language: str | None = None
    warnings: list[str] = field(default_factory=list)

    def select(self, *, include_matter: bool = False, chapters: list[int] | None = None) -> list[Chapter]:
        """The chapters to render: body chapters (plus front/back matter if asked), optionally by number.

        ``chapters`` holds 1-based numbers counted over the body chapters, as a reader numbers them.
        """
        pool = [c for c in self.chapters if include_matter or c.kind == "body"]
        if not chapters:
            return pool
        wanted = set(chapters)
        bad = sorted(n for n in wanted if n < 1 or n > len(pool))
        if bad:
            raise BookError(
                f"Chapter numbers {bad} are out of range: this book has {len(pool)} chapters (1-{len(pool)}).",
                chapters=bad,
                available=len(pool),
            )
        return [c for i, c in enumerate(pool, start=1) if i in wanted]


def parse_chapter_list(spec: str | None) -> list[int] | None:
    """Parse ``"1,3-5"`` into [1, 3, 4, 5]; None or empty means every chapter."""
    if spec is None or not str(spec).strip():
        return None
    numbers: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise BookError(
                f"Cannot read chapters {spec!r}: use numbers and ranges such as 1,3-5.", chapters=spec
            )
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low or high - low > 10_000:
            raise BookError(f"Chapter range {part!r} is backwards or too large.", chapters=spec)
        numbers.extend(range(low, high + 1))
    return sorted(set(numbers))


def load_book(path: str | Path, *, data: bytes | None = None, filename: str | None = None) -> Book:
    """Parse an EPUB, text or Markdown file (from ``path`` or ``data`` named ``filename``)."""
    name = filename or str(path)
    suffix = Path(name).suffix.lower()
    if data is None:
        path = Path(path)
        if not path.is_file():
            raise BookError(f"No book file at {path}.", path=str(path))
        size = path.stat().st_size
        if size > MAX_BOOK_BYTES:
            raise BookError(f"The book is {size:,} bytes; the limit is {MAX_BOOK_BYTES:,}.", size=size)
        data = path.read_bytes()
    if len(data) > MAX_BOOK_BYTES:
        raise BookError(f"The book is {len(data):,} bytes; the limit is {MAX_BOOK_BYTES:,}.", size=len(data))
    if not data.strip():
        raise BookError("The book file is empty: upload an EPUB, .txt or .md file with text in it.")
    kind = BOOK_FORMATS.get(suffix)
    if kind is None:
        kind = "epub" if data[:2] == b"PK" else "text"
    stem = Path(name).stem.replace("_", " ").replace("-", " ").strip() or "Untitled"
    if kind == "epub":
        book = parse_epub(data)
    else:
        text = _decode_text(data)
        book = parse_markdown(text, stem) if kind == "markdown" else parse_text(text, stem)
    if not any(c.kind == "body" and c.text.strip() for c in book.chapters):
        raise BookError("The book has no readable text (no chapter with words in it).")
    return book


def _decode_text(data: bytes) -> str:
    """Decode a text file: UTF-8 (with or without BOM), else UTF-16 with a BOM, else Latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if b"\0" in data[:4096]:
            raise BookError("The file looks binary, not text: upload an EPUB, .txt or .md file.") from None
        return data.decode("latin-1")


def _is_matter(text: str) -> bool:
    """True for Project Gutenberg boilerplate (its header or licence)."""
    lowered = text.lower()
    return any(marker in lowered for marker in _GUTENBERG_MARKERS)


def _split_by(text: str, matches: list[tuple[int, int, str]], default_title: str) -> list[Chapter]:
    """Cut text at heading positions; text before the first heading becomes a front chapter."""
    chapters: list[Chapter] = []
    if not matches:
        return [Chapter(0, default_title, text.strip())]
    preface = text[: matches[0][0]].strip()
    if preface:
        chapters.append(Chapter(0, default_title, preface, "front"))
    for i, (start, _, title) in enumerate(matches):
        end = matches[i + 1][0] if i + 1 < len(matches) else len(text)
        body = text[start:end].strip()
        chapters.append(Chapter(len(chapters), title.strip(), body))
    return chapters


def _mark_matter(chapters: list[Chapter]) -> list[Chapter]:
    """Mark Gutenberg header/licence chapters as front/back matter and renumber."""
    first_body = next((i for i, c in enumerate(chapters) if c.kind == "body" and not _is_matter(c.text)), 0)
    for i, chapter in enumerate(chapters):
        if _is_matter(chapter.text) or not chapter.text.strip():
            chapter.kind = "front" if i < first_body else "back"
        chapter.index = i
    return chapters


def parse_text(text: str, title: str) -> Book:
    """Plain text: chapters start at lines like "Chapter 3", "CHAPTER IV. Title", "Part Two"."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    matches = [(m.start(1), m.end(1), m.group(1)) for m in _CHAPTER_LINE.finditer(text)]
    return Book(
        title=title, author="", chapters=_mark_matter(_split_by(text, matches, title)), source_format="text"
    )


def _strip_markdown(text: str) -> str:
    """Markdown to readable text: drop code blocks, images, link targets, emphasis marks and HTML tags."""
    text = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>\n]+>", " ", text)
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = re.sub(r"(\*\*|__|\*|_)(?=\S)(.+?)(?<=\S)\1", r"\2", text)
    text = re.sub(r"^[ \t]*#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", r"\1.", text, flags=re.MULTILINE)
    text = re.sub(r"^[ \t]*>[ \t]?", "", text, flags=re.MULTILINE)
    text = re.sub(r"^[ \t]*([-*+]|\d+\.)[ \t]+", "", text, flags=re.MULTILINE)
    text = re.sub(r"^[ \t]*([-*_][ \t]*){3,}$", "", text, flags=re.MULTILINE)
    return html.unescape(text)


def parse_markdown(text: str, title: str) -> Book:
    """Markdown: a single ``#`` heading is the book title; ``##`` (or several ``#``) headings are chapters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    headings = list(_MD_HEADING.finditer(text))
    level1 = [m for m in headings if m.group(1) == "#"]
    book_title = title
    chapter_level = "#"
    if len(level1) == 1 and any(m.group(1) == "##" for m in headings):
        book_title = level1[0].group(2).strip()
        chapter_level = "##"
        text = text[: level1[0].start()] + text[level1[0].end() :]
        headings = list(_MD_HEADING.finditer(text))
    matches = [(m.start(), m.end(), m.group(2)) for m in headings if m.group(1) == chapter_level]
    if not matches:
        matches = [(m.start(1), m.end(1), m.group(1)) for m in _CHAPTER_LINE.finditer(text)]
    chapters = _split_by(text, matches, book_title)
    for chapter in chapters:
        chapter.title = _strip_markdown(chapter.title).strip().rstrip(".")
        chapter.text = _strip_markdown(chapter.text).strip()
    chapters = [c for c in chapters if c.text]
    return Book(title=book_title, author="", chapters=_mark_matter(chapters), source_format="markdown")


class _TextExtractor(HTMLParser):
    """XHTML to text with paragraph breaks at block elements; headings collected as titles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.headings: list[str] = []
        self._skip = 0
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag != "br" else "\n")
        if tag in ("h1", "h2", "h3") and not self._skip:
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            heading = " ".join("".join(self._heading).split())
            if heading:
                self.headings.append(heading)
                # A heading read aloud ends with a full stop, so the pause after it is a sentence's.
                if not heading.endswith((".", "!", "?", ":")):
                    self.parts.append(".")
            self._heading = None
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.parts.append(data)
        if self._heading is not None:
            self._heading.append(data)

    def text(self) -> str:
        """The collected text with whitespace tidied and paragraphs kept."""
        raw = "".join(self.parts)
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", raw)]
        return "\n\n".join(p for p in paragraphs if p)


def html_to_text(markup: str | bytes) -> tuple[str, list[str]]:
    """Return the readable text of an XHTML document and its h1-h3 headings."""
    if isinstance(markup, bytes):
        markup = markup.decode("utf-8", errors="replace")
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return parser.text(), parser.headings


def _toc_titles(toc: object) -> dict[str, str]:
    """Map each document file name to the first table-of-contents title pointing into it."""
    titles: dict[str, str] = {}

    def walk(entries: object) -> None:
        for entry in entries or []:  # type: ignore[union-attr]
            if isinstance(entry, tuple) and len(entry) == 2:
                section, children = entry
                href = getattr(section, "href", None)
                if href and getattr(section, "title", None):
                    titles.setdefault(href.split("#", 1)[0], section.title)
                walk(children)
            else:
                href = getattr(entry, "href", None)
                title = getattr(entry, "title", None)
                if href and title:
                    titles.setdefault(href.split("#", 1)[0], title)

    walk(toc)
    return titles


def parse_epub(data: bytes) -> Book:
    """EPUB 2/3 via ebooklib: spine order, TOC titles, Dublin Core title/author/language, cover image."""
    import io

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BookError("The EPUB is not a valid ZIP archive: the file is damaged or not an EPUB.") from exc
    names = set(archive.namelist())
    if "META-INF/encryption.xml" in names:
        raise BookError("The EPUB is encrypted (DRM): Spool can only read DRM-free books.")
    if "META-INF/container.xml" not in names:
        raise BookError("The EPUB has no META-INF/container.xml: it is damaged or not an EPUB.")
    import ebooklib
    from ebooklib import epub

    try:
        book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": False})
    except Exception as exc:  # ebooklib raises many kinds of errors for broken files
        raise BookError(
            f"The EPUB could not be read: {exc}. Check the file opens in an e-book reader."
        ) from exc

    def meta(name: str) -> str:
        values = book.get_metadata("DC", name)
        return str(values[0][0]).strip() if values and values[0] and values[0][0] else ""

    toc = _toc_titles(book.toc)
    chapters: list[Chapter] = []
    for item_id, _linear in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        text, headings = html_to_text(item.get_content())
        if not text.strip():
            continue
        file_name = item.get_name()
        title = toc.get(file_name) or (headings[0] if headings else "") or f"Section {len(chapters) + 1}"
        kind = "body"
        lowered_id = item_id.lower()
        if "cover" in lowered_id or "pg-header" in lowered_id or "pg-footer" in lowered_id:
            kind = "front"
        if isinstance(item, epub.EpubNav) or "nav" in (getattr(item, "properties", None) or []):
            kind = "front"  # the EPUB 3 navigation document is a contents page
        titles_here = [t for f, t in toc.items() if f == file_name] + headings
        if any(_CONTENTS_TITLE.match(t) for t in titles_here):
            kind = "front"
        chapters.append(Chapter(len(chapters), " ".join(title.split()), text, kind))
    _mark_matter(chapters)
    # Matter after the last body chapter is back matter (a licence, notes).
    last_body = max((i for i, c in enumerate(chapters) if c.kind == "body"), default=-1)
    for chapter in chapters[last_body + 1 :]:
        chapter.kind = "back"
    cover, cover_type = _epub_cover(book)
    return Book(
        title=meta("title") or "Untitled",
        author=meta("creator"),
        chapters=chapters,
        cover=cover,
        cover_type=cover_type,
        source_format="epub",
        language=meta("language") or None,
    )


def _epub_cover(book: object) -> tuple[bytes | None, str | None]:
    """The cover image: the item marked as cover, else the first image named like a cover."""
    import ebooklib

    items = list(book.get_items_of_type(ebooklib.ITEM_COVER))  # type: ignore[attr-defined]
    images = list(book.get_items_of_type(ebooklib.ITEM_IMAGE))  # type: ignore[attr-defined]
    candidates = items + [i for i in images if "cover" in i.get_name().lower()]
    for item in candidates:
        media = getattr(item, "media_type", "") or ""
        if media in ("image/jpeg", "image/png"):
            return item.get_content(), media
    return None, None
