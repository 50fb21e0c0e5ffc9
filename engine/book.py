"""Books in: EPUB (chapters from the table of contents, at anchor precision), plain text and Markdown.

A parsed :class:`Book` keeps the whole readable text of the book (``Book.text``) and an ordered
list of :class:`Chapter`, each a slice of that text. The slices cover it exactly, in order: every
word lies in one chapter or in a section marked as matter, with the reason it was marked, so a
caller can show what is left out and turn it back on. Nothing here synthesises audio; that is
:mod:`engine.audiobook`.

How an EPUB is cut:

* The table of contents decides where chapters start: the EPUB 3 navigation document first,
  then the NCX, then ``h1``/``h2`` headings, then one section per spine document. A TOC entry
  ``file.xhtml#anchor`` starts a chapter at that element, so one file may hold many chapters and
  one chapter may run over several files.
* Matter is recognised by a positive signal only: ``epub:type`` (or a DPUB-ARIA ``role``) such
  as ``toc`` or ``copyright-page``, Project Gutenberg's header and licence, a contents page, a
  title page, the navigation document, ``linear="no"`` documents. A section that holds a chapter
  heading or more than a page of prose is read, whatever the markup says (except the Gutenberg
  licence, which is all prose).
* A section that is only headings (a part title, say) is read at the start of the chapter after it.

Every pattern here runs on user data, so each is linear: line-by-line parsing, bounded
repetitions, no nested quantifiers; sizes inside an EPUB are checked before anything is inflated.
"""

from __future__ import annotations

import bisect
import html
import io
import posixpath
import re
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

from engine.exceptions import BookError

#: Largest book file accepted by the parser, in bytes.
MAX_BOOK_BYTES = 50 * 1024 * 1024

#: Largest total of the EPUB's members once inflated, in bytes (a zip bomb stops here, unread).
MAX_UNCOMPRESSED_BYTES = 300 * 1024 * 1024

#: Highest inflation ratio accepted for any member larger than a megabyte.
MAX_COMPRESSION_RATIO = 100

#: Most members an EPUB archive may hold.
MAX_MEMBERS = 10_000

#: Most chapters (sections) a book may be cut into.
MAX_CHAPTERS = 5_000

#: Words of prose that make "more than a page": a section this long is read, whatever its markup.
PAGE_WORDS = 250

#: Words a paragraph needs to count as prose rather than a heading, a list line or a caption.
PROSE_PARAGRAPH_WORDS = 12

#: Words per minute of audio at speed 1.0 (af_heart on Alice chapter 1: 2,146 words in 11.0 min).
WORDS_PER_MINUTE = 195.0

#: Members larger than this are held to MAX_COMPRESSION_RATIO one by one (small ones only in total).
RATIO_CHECKED_BYTES = 1024 * 1024

#: Formats the parser reads, by file extension.
BOOK_FORMATS: dict[str, str] = {
    ".epub": "epub",
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
}

#: Chapter kinds: read ("body"), or matter before or after the body.
CHAPTER_KINDS: tuple[str, ...] = ("body", "front", "back")

_GUTENBERG_MARKERS = (
    "*** start of the project gutenberg",
    "*** start of this project gutenberg",
    "*** end of the project gutenberg",
    "*** end of this project gutenberg",
    "project gutenberg license",
    "project gutenberg™ license",
    "project gutenberg-tm license",
    "full project gutenberg license",
)
#: ``epub:type`` (and DPUB-ARIA ``doc-*`` role) values that mark a section as matter.
_MATTER_TYPES = frozenset(
    "cover titlepage halftitlepage toc landmarks loi lot loa lov page-list copyright-page colophon "
    "imprint imprimatur errata index frontmatter backmatter".split()
)
_CONTENTS_TITLE = re.compile(r"\s{0,20}(table of )?contents\b", re.IGNORECASE)
_COPYRIGHT_TITLE = re.compile(r"\s{0,20}(copyright|colophon|imprint)\b", re.IGNORECASE)
_NUMBER_WORDS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty first second third fourth fifth sixth seventh "
    "eighth ninth tenth eleventh twelfth last"
).split()
_NUMBER = r"(?:\d{1,4}|[ivxlcdm]{1,9}|" + "|".join(_NUMBER_WORDS) + r"|the[ \t]+[a-z]{1,12})"
#: A chapter heading's words: "Chapter 7", "CHAPTER IV.", "Part One", "Book the First", "Letter 4".
_CHAPTER_HEADING = re.compile(
    r"[ \t]{0,20}(?:(?:chapter|chap\.|part|book|volume|vol\.|letter|stave|canto|section|act)[ \t]{1,5}"
    + _NUMBER
    + r"\b|(?:prologue|epilogue|preface|introduction|foreword|afterword|interlude)\b|[ivxlcdm]{1,9}\.?[ \t]{0,5}$"
    r"|\d{1,3}\.?[ \t]{0,5}$)",
    re.IGNORECASE,
)
#: A plain-text chapter line: the heading word and number, then what follows on the line.
_CHAPTER_LINE = re.compile(
    r"(?:chapter|chap\.|part|book|volume|vol\.|letter|stave|canto|section|act)[ \t]{1,5}" + _NUMBER + r"\b",
    re.IGNORECASE,
)
#: A plain-text line that is a heading on its own: "PROLOGUE", "Preface.", "XIV.".
_LONE_HEADING = re.compile(
    r"(?:(?i:prologue|epilogue|preface|introduction|foreword|afterword|interlude)[.:]?|[IVXLCDM]{1,9}\.)"
)
_CONTENTS_LINE = re.compile(r"(?:table of )?contents[.:]?", re.IGNORECASE)
#: Longest line of a plain-text file that can be a chapter heading.
_MAX_HEADING_LINE = 100

_BLOCK_TAGS = frozenset(
    "p div section article aside header footer main nav figure figcaption h1 h2 h3 h4 h5 h6 li ul ol dl "
    "blockquote pre table tr hr dd dt".split()
)
_SPACE_TAGS = frozenset({"br", "td", "th"})
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "svg", "math", "template"})
_VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_HEADING_TAGS = {f"h{n}": n for n in range(1, 7)}
_TERMINAL = (".", "!", "?", ":", ";", "…", "”", '"', "’")


@dataclass
class Chapter:
    """One section of the book: title, text, and whether it is read ("body") or matter, and why."""

    index: int
    title: str
    text: str
    kind: str = "body"  # one of CHAPTER_KINDS
    reason: str = ""  # why it is matter; empty for body
    parents: tuple[str, ...] = ()  # titles of the TOC entries it sits under (parts, books)
    start: int = 0  # the section is Book.text[start:end]
    end: int = 0

    @property
    def words(self) -> int:
        """Number of words in the chapter's text."""
        return len(self.text.split())

    @property
    def is_matter(self) -> bool:
        """True for front or back matter (skipped unless asked for)."""
        return self.kind != "body"

    def report(self) -> dict[str, object]:
        """The section as JSON: title, kind, words, parents and, for matter, the reason."""
        return {
            "title": self.title,
            "kind": self.kind,
            "words": self.words,
            "parents": list(self.parents),
            "reason": self.reason or None,
        }


@dataclass
class Book:
    """A parsed book: metadata, cover, its whole readable text, and the sections that cover it."""

    title: str
    author: str
    chapters: list[Chapter]
    cover: bytes | None = None
    cover_type: str | None = None
    source_format: str = "text"
    language: str | None = None
    warnings: list[str] = field(default_factory=list)
    text: str = ""
    outline: str = ""  # where the chapters came from: "nav", "ncx", "headings", "documents", ...

    def body(self) -> list[Chapter]:
        """The chapters that are read by default, in order."""
        return [c for c in self.chapters if c.kind == "body"]

    def matter(self) -> list[Chapter]:
        """The sections recognised as front or back matter, in order."""
        return [c for c in self.chapters if c.kind != "body"]

    def select(self, *, include_matter: bool = False, chapters: list[int] | None = None) -> list[Chapter]:
        """The chapters to render: body chapters (plus front/back matter if asked), optionally by number.

        ``chapters`` holds 1-based numbers counted over the body chapters (over every section
        when ``include_matter`` is set), as :meth:`preview` numbers them.
        """
        pool = self.chapters if include_matter else self.body()
        if not chapters:
            return list(pool)
        wanted = set(chapters)
        bad = sorted(n for n in wanted if n < 1 or n > len(pool))
        if bad:
            raise BookError(
                f"Chapter numbers {bad} are out of range: this book has {len(pool)} chapters (1-{len(pool)}).",
                chapters=bad,
                available=len(pool),
            )
        return [c for i, c in enumerate(pool, start=1) if i in wanted]

    def skipped(self, *, include_matter: bool = False) -> list[Chapter]:
        """The matter sections a render with these options leaves out."""
        return [] if include_matter else self.matter()

    def preview(
        self, *, include_matter: bool = False, chapters: list[int] | None = None, speed: float = 1.0
    ) -> dict[str, object]:
        """What a render would read: every section with its number, words, minutes and whether it is read."""
        chosen = {id(c) for c in self.select(include_matter=include_matter, chapters=chapters)}
        numbered = self.chapters if include_matter else self.body()
        numbers = {id(c): n for n, c in enumerate(numbered, start=1)}
        rate = WORDS_PER_MINUTE * max(speed, 0.01)
        sections = []
        words = 0
        for chapter in self.chapters:
            entry = chapter.report()
            count = int(entry["words"])  # type: ignore[call-overload]
            entry |= {
                "index": chapter.index,
                "number": numbers.get(id(chapter)),
                "minutes": round(count / rate, 1),
                "selected": id(chapter) in chosen,
                "skipped": chapter.is_matter and not include_matter,
            }
            words += count if entry["selected"] else 0
            sections.append(entry)
        selected = [s for s in sections if s["selected"]]
        return {
            "title": self.title,
            "author": self.author,
            "language": self.language,
            "format": self.source_format,
            "outline": self.outline,
            "words": len(self.text.split()),
            "selected": {"chapters": len(selected), "words": words, "minutes": round(words / rate, 1)},
            "sections": sections,
            "skipped": [s for s in sections if s["skipped"]],
            "warnings": list(self.warnings),
        }


def parse_chapter_list(spec: str | None) -> list[int] | None:
    """Parse ``"1,3-5"`` into [1, 3, 4, 5]; None or empty means every chapter."""
    if spec is None or not str(spec).strip():
        return None
    if len(str(spec)) > 2_000:
        raise BookError("The chapter list is too long: use ranges such as 1-40.", chapters=str(spec)[:100])
    numbers: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d{1,6})(?:[ \t]{0,5}-[ \t]{0,5}(\d{1,6}))?", part)
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
        if any(c.text.strip() for c in book.chapters):
            found = "; ".join(f"{c.title!r} ({c.reason})" for c in book.chapters[:5])
            raise BookError(
                f"Every section of the book looks like front or back matter ({found}); "
                "render it with include_matter (spool book --include-matter) to read them.",
            )
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


# -- the shared cutting and classifying ------------------------------------------------------------


@dataclass
class _Heading:
    """A heading's span in the source text and its level (1 = h1)."""

    start: int
    end: int
    level: int
    text: str


@dataclass
class _Span:
    """A span of the source text recognised as matter, and why."""

    start: int
    end: int
    reason: str


@dataclass
class _Cut:
    """Where a section starts, and the title and parents it starts with."""

    at: int
    title: str
    parents: tuple[str, ...] = ()
    source: str = "toc"


@dataclass
class _Source:
    """A book's readable text with what the parser learnt about it."""

    text: str
    headings: list[_Heading] = field(default_factory=list)
    matter: list[_Span] = field(default_factory=list)
    links: list[tuple[int, int]] = field(default_factory=list)
    cuts: list[_Cut] = field(default_factory=list)


@dataclass
class _Piece:
    """A section being built: a span of the source text and what is known of it."""

    start: int
    end: int
    title: str
    parents: tuple[str, ...]
    titled: bool  # started by a TOC entry, heading or document, not only by a matter span
    reason: str = ""  # the matter span it lies in, if any
    continues: bool = False  # a document no TOC entry points into: part of the chapter before, unless matter


def _words(text: str) -> int:
    return len(text.split())


def _key(text: str) -> str:
    """Text folded for comparison: lower case, letters and digits only."""
    return "".join(ch for ch in text.lower().replace("’", "'") if ch.isalnum())


def _sections(src: _Source, book_title: str) -> list[Chapter]:
    """Cut the source at its cuts and matter spans, classify each section, and merge headings-only ones."""
    text = src.text
    size = len(text)
    cuts: dict[int, _Cut] = {}
    for cut in src.cuts:
        at = min(max(cut.at, 0), size)
        held = cuts.get(at)
        # At one place a deeper TOC entry wins (a part and its first chapter share an anchor).
        if held is None or (len(cut.parents) > len(held.parents) and cut.source == held.source):
            cuts[at] = _Cut(at, cut.title, cut.parents, cut.source)
    spans = [s for s in src.matter if s.end > s.start]
    bounds = {0, size, *cuts}
    for span in spans:
        bounds.update((min(span.start, size), min(span.end, size)))
    if len(bounds) > 2 * MAX_CHAPTERS:
        raise BookError(f"The book has more than {MAX_CHAPTERS:,} sections; the limit is {MAX_CHAPTERS:,}.")
    points = sorted(bounds)
    starts: dict[int, list[int]] = {}
    ends: dict[int, list[int]] = {}
    for n, span in enumerate(spans):
        starts.setdefault(min(span.start, size), []).append(n)
        ends.setdefault(min(span.end, size), []).append(n)
    src.headings.sort(key=lambda h: h.start)
    src.links.sort()
    active: list[int] = []  # the matter spans open at the current point (they nest: a short list)
    pieces: list[_Piece] = []
    for a, b in zip(points, points[1:], strict=False):
        ended = set(ends.get(a, ()))
        active = [n for n in active if n not in ended] + starts.get(a, [])
        if not text[a:b].strip():
            continue
        # Every span boundary is a point, so a piece lies wholly inside or outside each span.
        inner = min(active, key=lambda n: spans[n].end - spans[n].start, default=None)
        reason = spans[inner].reason if inner is not None else ""
        cut = cuts.get(a)
        if cut is not None and cut.source == "continuation":
            parents = pieces[-1].parents if pieces else ()
            pieces.append(_Piece(a, b, "", parents, False, reason, continues=True))
        elif cut is not None:
            pieces.append(_Piece(a, b, cut.title, cut.parents, True, reason))
        elif pieces and not reason and not pieces[-1].reason:
            pieces[-1].end = b  # the chapter goes on after a matter span inside it ended
        else:
            pieces.append(_Piece(a, b, "", pieces[-1].parents if pieces else (), False, reason))

    classified: list[tuple[_Piece, str]] = []
    for piece in pieces:
        reason = _matter_reason(src, piece, book_title)
        if piece.continues and not reason and classified and not classified[-1][1]:
            heading = _first_heading(src, piece)
            opens = src.text[piece.start : piece.end].lstrip().startswith(heading) if heading else False
            if heading and opens and _CHAPTER_HEADING.match(heading):
                piece.title, piece.titled = heading, True  # a chapter the TOC does not list
            else:
                classified[-1][0].end = piece.end  # one chapter over several files
                continue
        classified.append((piece, reason))

    # A section that is only headings ("Part One.") is read with the chapter after it.
    merged: list[tuple[_Piece, str]] = []
    for piece, reason in reversed(classified):
        if not reason and _headings_only(src, piece):
            if merged and not merged[-1][1]:
                follower = merged[-1][0]
                follower.start = piece.start
                if not follower.parents and piece.titled and piece.title:
                    follower.parents = (*piece.parents, piece.title)
                continue
            reason = "only a heading, with no text of its own"
        merged.append((piece, reason))
    merged.reverse()
    if all(reason for _, reason in merged):
        # Nothing but headings: read them rather than refuse the book.
        heading_only = "only a heading, with no text of its own"
        merged = [(piece, "" if reason == heading_only else reason) for piece, reason in merged]

    last_body = max((i for i, (_, reason) in enumerate(merged) if not reason), default=-1)
    chapters: list[Chapter] = []
    untitled_body = 0
    for i, (piece, reason) in enumerate(merged):
        kind = "body" if not reason else ("front" if i < last_body else "back")
        if kind == "back" and reason == "Project Gutenberg header":
            reason = "Project Gutenberg licence"  # Gutenberg marks its trailer with the header's class too
        title = piece.title or _first_heading(src, piece)
        if not title and not reason:
            untitled_body += 1
            title = book_title if untitled_body == 1 else f"Section {i + 1}"
        if not title:
            title = _label(reason)
        chapters.append(
            Chapter(
                index=i,
                title=" ".join(title.split())[:300],
                text=text[piece.start : piece.end].strip(),
                kind=kind,
                reason=reason,
                parents=tuple(" ".join(p.split())[:300] for p in piece.parents),
                start=piece.start,
                end=piece.end,
            )
        )
    return chapters


def _label(reason: str) -> str:
    """A title for an untitled matter section, from the reason it is matter."""
    if reason.startswith('marked epub:type="'):
        return reason[len('marked epub:type="') : -1].replace("-", " ").capitalize()
    return reason[0].upper() + reason[1:]


def _headings_in(src: _Source, piece: _Piece) -> list[_Heading]:
    """The headings that start inside the piece (``src.headings`` is sorted by start)."""
    lo = bisect.bisect_left(src.headings, piece.start, key=lambda h: h.start)
    hi = bisect.bisect_left(src.headings, piece.end, key=lambda h: h.start)
    return src.headings[lo:hi]


def _first_heading(src: _Source, piece: _Piece) -> str:
    found = _headings_in(src, piece)
    return found[0].text if found else ""


def _headings_only(src: _Source, piece: _Piece) -> bool:
    """True when every word of the piece is in a heading."""
    total = _words(src.text[piece.start : piece.end])
    heading_words = sum(_words(src.text[h.start : min(h.end, piece.end)]) for h in _headings_in(src, piece))
    return total > 0 and heading_words >= total


def _prose_words(text: str) -> int:
    """Words in paragraphs long enough to be prose (not headings, list lines or captions)."""
    count = 0
    for paragraph in text.split("\n\n"):
        n = _words(paragraph)
        if n >= PROSE_PARAGRAPH_WORDS:
            count += n
    return count


def _link_share(src: _Source, piece: _Piece) -> tuple[float, int]:
    """The share of the piece's characters that sit in links, and how many links start in it."""
    lo = bisect.bisect_left(src.links, (piece.start, -1))
    hi = bisect.bisect_left(src.links, (piece.end, -1))
    inside = sum(min(b, piece.end) - a for a, b in src.links[lo:hi])
    visible = len(src.text[piece.start : piece.end].strip()) or 1
    return inside / visible, hi - lo


def _matter_reason(src: _Source, piece: _Piece, book_title: str) -> str:
    """Why the piece is front or back matter, or "" when it is read. Positive signals only."""
    text = src.text[piece.start : piece.end]
    lowered = text.lower()
    titles = [piece.title] + [h.text for h in _headings_in(src, piece) if h.level <= 3]
    has_chapter_heading = any(_CHAPTER_HEADING.match(t) for t in titles if t)
    if "gutenberg" in piece.reason.lower():
        return piece.reason  # inside Gutenberg's own boilerplate element: its licence has "Section 1." lines
    title = piece.title.lower()
    untitled = not title or "gutenberg" in title or "licen" in title
    if untitled and not has_chapter_heading and any(m in lowered for m in _GUTENBERG_MARKERS):
        # Boilerplate inside a titled chapter is read with it: a licence read beats a chapter lost.
        return "Project Gutenberg header or licence"
    prose = _prose_words(text)
    if has_chapter_heading or prose > PAGE_WORDS:
        return ""
    if piece.reason:
        return piece.reason
    if any(_CONTENTS_TITLE.match(t) for t in titles if t):
        return "contents page"
    share, links = _link_share(src, piece)
    if links >= 3 and share >= 0.5:
        return "a list of links (contents or illustrations)"
    if any(_COPYRIGHT_TITLE.match(t) for t in titles if t):
        return "copyright page"
    title_key = _key(book_title)
    if title_key and prose == 0 and _words(text) <= 60 and title_key in _key(text):
        return "title page"
    return ""


# -- plain text -------------------------------------------------------------------------------------


def _is_chapter_line(line: str) -> bool:
    """True for a line that reads as a chapter heading ("Chapter 3", "CHAPTER IV. Title", "PART ONE").

    Prose that happens to start with "Part one of..." is not: after the number comes the end of
    the line, punctuation, or a short capitalised title with no sentence ending.
    """
    stripped = line.strip()
    if not stripped or len(stripped) > _MAX_HEADING_LINE:
        return False
    match = _CHAPTER_LINE.match(stripped)
    if match is None:
        return bool(_LONE_HEADING.fullmatch(stripped))
    rest = stripped[match.end() :].strip()
    if not rest or rest[0] in ".:-\u2013\u2014)":
        return True
    return rest[0].isupper() and _words(rest) <= 8 and not rest.endswith((".", ",", ";", "!", "?"))


def _chapter_id(line: str) -> str:
    """What a chapter line is called, for spotting it twice: "chapter iv" for "CHAPTER IV. The Bill"."""
    stripped = line.strip()
    match = _CHAPTER_LINE.match(stripped)
    return " ".join(stripped[: match.end()].lower().split()) if match else _key(stripped)


def _chapter_line_has_title(line: str) -> bool:
    """True when a chapter line carries a name after its number ("CHAPTER II. The Middle")."""
    match = _CHAPTER_LINE.match(line.strip())
    return match is None or bool(line.strip()[match.end() :].strip(" \t.:-\u2013\u2014"))


def _gutenberg_field(text: str, name: str) -> str:
    """A ``Title:``/``Author:`` line of a Project Gutenberg header, or ""."""
    prefix = name.lower() + ":"
    for line in text.split("\n", 200)[:200]:
        if line.strip().lower().startswith(prefix):
            return line.strip()[len(prefix) :].strip()
    return ""


def _text_source(text: str) -> tuple[_Source, str]:
    """Plain text to a source: Gutenberg markers, contents blocks and chapter lines; returns the outline."""
    src = _Source(text)
    lines = text.split("\n")
    offsets = []
    at = 0
    for line in lines:
        offsets.append(at)
        at += len(line) + 1

    def lowered(n: int) -> str:
        return lines[n].strip().lower()

    start_line = next(
        (n for n in range(len(lines)) if lowered(n).startswith("***") and "start of" in lowered(n)), None
    )
    end_line = next(
        (
            n
            for n in range(len(lines) - 1, -1, -1)
            if lowered(n).startswith("***") and "end of" in lowered(n) and "gutenberg" in lowered(n)
        ),
        None,
    )
    if start_line is not None and "gutenberg" in lowered(start_line):
        src.matter.append(_Span(0, offsets[start_line] + len(lines[start_line]), "Project Gutenberg header"))
    else:
        start_line = None
    if end_line is not None and (start_line is None or end_line > start_line):
        src.matter.append(_Span(offsets[end_line], len(text), "Project Gutenberg licence"))
    first = start_line + 1 if start_line is not None else 0
    last = end_line if end_line is not None and (start_line is None or end_line > start_line) else len(lines)

    # A contents list: a "Contents" line, or a run of three or more chapter lines with only short lines
    # between them whose first title comes back later as a real heading. A run ends where a number
    # repeats: the contents' "CHAPTER I." is followed, later, by the real one.
    last_seen: dict[str, int] = {}
    for n in range(first, last):
        if _is_chapter_line(lines[n]):
            last_seen[_chapter_id(lines[n])] = n
    contents: list[tuple[int, int]] = []
    n = first
    while n < last:
        titled = bool(_CONTENTS_LINE.fullmatch(lines[n].strip()))
        if not titled and not _is_chapter_line(lines[n]):
            n += 1
            continue
        seen: set[str] = set()
        run_end, first_id = n, ""
        m = n + 1 if titled else n
        while m < last:
            stripped = lines[m].strip()
            if _is_chapter_line(lines[m]):
                ident = _chapter_id(lines[m])
                if ident in seen:
                    break
                seen.add(ident)
                first_id = first_id or ident
                run_end = m
            elif stripped and (_words(stripped) > 8 or len(stripped) > 80):
                break
            m += 1
        repeats = bool(first_id) and last_seen.get(first_id, -1) > run_end
        if len(seen) >= 3 and (titled or repeats):
            contents.append((n, run_end))
        n = run_end + 1
    for a, b in contents:
        src.matter.append(_Span(offsets[a], offsets[b] + len(lines[b]), "contents page"))
        src.cuts.append(_Cut(offsets[a], "Contents", source="heading"))
    in_contents = {k for a, b in contents for k in range(a, b + 1)}

    for n in range(first, last):
        line = lines[n]
        if n in in_contents or not _is_chapter_line(line):
            continue
        if n > first and lines[n - 1].strip():
            continue  # a heading stands after a blank line
        title = line.strip()
        end = offsets[n] + len(line)
        # "CHAPTER I." on one line and its name on the next, then a blank line: one title.
        name = lines[n + 1].strip() if n + 1 < last else ""
        if (
            not _chapter_line_has_title(line)
            and name
            and n + 2 < last
            and not lines[n + 2].strip()
            and len(name) <= 80
            and not name.endswith((".", ",", ";", "!", "?"))
            and not _is_chapter_line(name)
        ):
            title = f"{title} {lines[n + 1].strip()}"
            end = offsets[n + 1] + len(lines[n + 1])
        src.headings.append(_Heading(offsets[n], end, 2, title))
        src.cuts.append(_Cut(offsets[n], title, source="heading"))
    return src, ("chapter lines" if any(c.source == "heading" for c in src.cuts) else "whole text")


def parse_text(text: str, title: str) -> Book:
    """Plain text: chapters at lines like "Chapter 3", "CHAPTER IV. Title", "Part Two"; Gutenberg aware."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    book_title = _gutenberg_field(text, "Title") or title
    author = _gutenberg_field(text, "Author")
    src, outline = _text_source(text)
    chapters = _sections(src, book_title)
    # An untitled opening section is named after the book.
    for chapter in chapters:
        if chapter.title.startswith("Section ") and chapter.index == 0:
            chapter.title = book_title
    return Book(
        title=book_title,
        author=author,
        chapters=chapters,
        source_format="text",
        text=text,
        outline=outline,
    )


# -- Markdown ----------------------------------------------------------------------------------------

_MD_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+|$)")
_MD_LIST = re.compile(r"[ \t]{0,12}(?:[-*+]|\d{1,9}[.)])[ \t]+")
_MD_LINK_DEF = re.compile(r" {0,3}\[[^\]\n]{1,200}\]:[ \t]")
_MD_INLINE = (
    (re.compile(r"!\[[^\]\n]{0,500}\]\([^)\n]{0,1000}\)"), " "),
    (re.compile(r"\[([^\]\n]{0,500})\]\([^)\n]{0,1000}\)"), r"\1"),
    (re.compile(r"\[([^\]\n]{0,500})\]\[[^\]\n]{0,200}\]"), r"\1"),
    (re.compile(r"<[^<>\n]{1,500}>"), " "),
    (re.compile(r"`{1,3}([^`\n]{0,500})`{1,3}"), r"\1"),
    # Emphasis marks at a word's edge; a snake_case word keeps its underscore.
    (re.compile(r"(?<![\w*_])[*_]{1,3}(?=[^\s*_])|(?<=[^\s*_])[*_]{1,3}(?![\w*_])"), ""),
)


def _md_inline(line: str) -> str:
    """One line of Markdown to readable text: links to their words, images, tags and marks dropped."""
    for pattern, replacement in _MD_INLINE:
        line = pattern.sub(replacement, line)
    return html.unescape(line)


def _markdown_source(markdown: str) -> tuple[_Source, list[tuple[int, str]], int]:
    """Markdown to readable text, line by line; returns the source, its (level, title) headings, code blocks."""
    out: list[str] = []
    length = 0
    headings: list[_Heading] = []
    fence = ""
    code_blocks = 0
    for raw in markdown.split("\n"):
        stripped = raw.strip()
        line = ""
        if fence:
            if stripped.startswith(fence):
                fence = ""
        elif stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            code_blocks += 1
        elif _MD_LINK_DEF.match(raw):
            pass
        elif len(stripped) >= 3 and set(stripped.replace(" ", "").replace("\t", "")) in ({"-"}, {"*"}, {"_"}):
            pass  # a rule
        else:
            match = _MD_HEADING.match(raw)
            if match:
                title = _md_inline(raw[match.end() :].rstrip().rstrip("#").rstrip()).strip()
                if title:
                    line = title if title.endswith(_TERMINAL) else title + "."
                    headings.append(_Heading(length, length + len(line), len(match.group(1)), title))
            else:
                body = raw.lstrip()
                while body.startswith(">"):
                    body = body[1:].lstrip()
                list_marker = _MD_LIST.match(body)
                if list_marker:
                    body = body[list_marker.end() :]
                line = _md_inline(body)
        out.append(line)
        length += len(line) + 1
    return _Source("\n".join(out), headings), [(h.level, h.text) for h in headings], code_blocks


def parse_markdown(text: str, title: str) -> Book:
    """Markdown: a single ``#`` heading is the book title; ``##`` (or several ``#``) headings are chapters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    src, headings, code_blocks = _markdown_source(text)
    levels = [level for level, _ in headings]
    book_title = title
    chapter_level = min(levels) if levels else 0
    if levels.count(1) == 1 and 2 in levels:
        book_title = next(t for level, t in headings if level == 1)
        chapter_level = 2
    outline = "headings"
    for heading in src.headings:
        if heading.level == chapter_level:
            src.cuts.append(_Cut(heading.start, heading.text, source="heading"))
    if not src.cuts:
        text_src, outline = _text_source(src.text)
        text_src.headings.extend(src.headings)
        src = text_src
    chapters = _sections(src, book_title)
    for chapter in chapters:
        if chapter.index == 0 and chapter.title.startswith("Section "):
            chapter.title = book_title
    warnings = [f"{code_blocks} code block(s) are not read aloud."] if code_blocks else []
    return Book(
        title=book_title,
        author="",
        chapters=chapters,
        source_format="markdown",
        text=src.text,
        outline=outline,
        warnings=warnings,
    )


# -- XHTML ------------------------------------------------------------------------------------------


class _XhtmlText(HTMLParser):
    """XHTML to readable text, keeping where each id, heading, link and matter element falls in it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.length = 0
        self.anchors: dict[str, int] = {}
        self.headings: list[_Heading] = []
        self.matter: list[_Span] = []
        self.links: list[tuple[int, int]] = []
        self.title = ""
        self._sep = ""
        self._pending: list[str] = []  # ids waiting for the next visible character
        self._stack: list[tuple[str, str, str]] = []  # (tag, what it opened, its matter reason)
        self._opened: dict[int, int] = {}  # stack depth -> text offset where that element began
        self._skip = 0
        self._in_title = False
        self._heading: tuple[int, int, list[str]] | None = None  # (level, start, words)

    # -- output --

    def _space(self, sep: str) -> None:
        if sep == "\n\n" or not self._sep:
            self._sep = sep

    def _emit(self, piece: str) -> None:
        if self.length and self._sep:
            self.out.append(self._sep)
            self.length += len(self._sep)
        self._sep = ""
        for anchor in self._pending:
            self.anchors.setdefault(anchor, self.length)
        self._pending.clear()
        self.out.append(piece)
        self.length += len(piece)

    def _here(self) -> int:
        """Where the next visible character will go."""
        return self.length + (len(self._sep) if self.length and self._sep else 0)

    # -- parser callbacks --

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "") for k, v in attrs}
        if tag == "title":
            self._in_title = True
        if tag in _SKIP_TAGS:
            self._skip += 1
        if tag in _BLOCK_TAGS:
            self._space("\n\n")
        elif tag in _SPACE_TAGS:
            self._space(" ")
        for name in ("id", "name" if tag == "a" else ""):
            if name and values.get(name):
                self._pending.append(values[name])
        if tag in _VOID_TAGS:
            return
        reason = _element_matter(values)
        opened = ""
        if tag in _HEADING_TAGS and not self._skip and self._heading is None:
            self._heading = (_HEADING_TAGS[tag], self._here(), [])
            opened = "heading"
        elif tag == "a" and values.get("href"):
            opened = "link"
        self._stack.append((tag, opened, reason))
        self._opened[len(self._stack)] = self._here()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        if tag in _VOID_TAGS:
            return
        depth = next((d for d in range(len(self._stack), 0, -1) if self._stack[d - 1][0] == tag), 0)
        if not depth:
            return  # a stray end tag
        while len(self._stack) >= depth:
            self._close(len(self._stack))
        if tag in _BLOCK_TAGS:
            self._space("\n\n")
        elif tag in _SPACE_TAGS:
            self._space(" ")

    def _close(self, depth: int) -> None:
        tag, opened, reason = self._stack.pop()
        began = self._opened.pop(depth, self.length)
        if opened == "heading" and self._heading is not None:
            level, start, words = self._heading
            self._heading = None
            heading = " ".join(words)
            if heading:
                if not heading.endswith(_TERMINAL):
                    # A heading read aloud ends with a full stop, so the pause after it is a sentence's.
                    self.out.append(".")
                    self.length += 1
                self.headings.append(_Heading(start, self.length, level, heading))
        elif opened == "link" and self.length > began:
            self.links.append((began, self.length))
        if reason and self.length > began:
            self.matter.append(_Span(began, self.length, reason))

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._skip or not data:
            return
        words = data.split()
        if not words:
            self._space(" ")
            return
        if data[0].isspace():
            self._space(" ")
        piece = " ".join(words)
        self._emit(piece)
        if self._heading is not None:
            self._heading[2].extend(words)
        if data[-1].isspace():
            self._space(" ")

    def close(self) -> None:
        """Finish the document: ids with no text after them point at its end."""
        super().close()
        while self._stack:
            self._close(len(self._stack))
        for anchor in self._pending:
            self.anchors.setdefault(anchor, self.length)
        self._pending.clear()

    def text(self) -> str:
        """The readable text of the document."""
        return "".join(self.out)


def _element_matter(values: dict[str, str]) -> str:
    """The matter reason an element's own attributes give (epub:type, role, Gutenberg boilerplate)."""
    ident = values.get("id", "").lower()
    classes = values.get("class", "").lower().split()
    # Gutenberg's footer carries the class "pgheader" too: the id decides first.
    if ident == "pg-footer" or "pgfooter" in classes:
        return "Project Gutenberg licence"
    if ident == "pg-header" or "pgheader" in classes:
        return "Project Gutenberg header"
    if "pg-boilerplate" in classes:
        return "Project Gutenberg boilerplate"
    kinds = values.get("epub:type", "").lower().split()
    kinds += [r[4:] for r in values.get("role", "").lower().split() if r.startswith("doc-")]
    for kind in kinds:
        if kind in _MATTER_TYPES:
            return f'marked epub:type="{kind}"'
    return ""


def _parse_xhtml(markup: bytes) -> _XhtmlText:
    """One XHTML document, read to the end."""
    parser = _XhtmlText()
    parser.feed(markup.decode("utf-8", errors="replace"))
    parser.close()
    return parser


# -- EPUB -------------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    """An XML tag's name without its namespace."""
    return str(tag).rsplit("}", 1)[-1].lower()


def _xml(data: bytes, what: str) -> ElementTree.Element:
    """Parse an EPUB's XML (container, OPF, NCX); entity declarations are refused (billion laughs)."""
    if b"<!ENTITY" in data[:65536].upper():
        raise BookError(f"The EPUB's {what} declares XML entities, which Spool does not expand.")
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise BookError(f"The EPUB's {what} is not well-formed XML ({exc}).") from None


@dataclass(frozen=True)
class ZipMember:
    """One entry of a zip's central directory: its name and declared sizes (nothing inflated)."""

    name: str
    file_size: int
    compress_size: int


def check_members(members: list[ZipMember]) -> None:
    """Refuse an archive whose declared sizes look like a zip bomb (the limits above, one home for them)."""
    if len(members) > MAX_MEMBERS:
        raise BookError(f"The EPUB holds more than {MAX_MEMBERS:,} files; the limit is {MAX_MEMBERS:,}.")
    total = sum(m.file_size for m in members)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise BookError(f"The EPUB inflates to {total:,} bytes; the limit is {MAX_UNCOMPRESSED_BYTES:,}.")
    for member in members:
        if member.file_size > RATIO_CHECKED_BYTES and member.file_size > MAX_COMPRESSION_RATIO * max(
            1, member.compress_size
        ):
            raise BookError(
                f"The EPUB member {member.name[:100]!r} inflates {member.file_size // max(1, member.compress_size):,}"
                f" times (limit {MAX_COMPRESSION_RATIO}): the file looks like a zip bomb."
            )
    packed = sum(m.compress_size for m in members)
    # Many small members (each under the per-member check) can add up to a bomb too.
    if total > RATIO_CHECKED_BYTES and total > MAX_COMPRESSION_RATIO * max(1, packed):
        raise BookError(
            f"The EPUB inflates {total // max(1, packed):,} times in all (limit {MAX_COMPRESSION_RATIO}): "
            "the file looks like a zip bomb."
        )


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # one central directory header


def _not_a_zip(why: str) -> BookError:
    return BookError(f"The EPUB is not a valid ZIP archive ({why}): the file is damaged or not an EPUB.")


def _zip64_sizes(extra: bytes, file_size: int, compress_size: int) -> tuple[int, int]:
    """The real sizes of a ZIP64 entry, from its extra field (only the fields marked 0xFFFFFFFF are there)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<2H", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 1:
            values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            if file_size == 0xFFFFFFFF and values:
                file_size = values.pop(0)
            if compress_size == 0xFFFFFFFF and values:
                compress_size = values.pop(0)
            break
        pos += 4 + size
    return file_size, compress_size


def zip_members(data: bytes) -> list[ZipMember]:
    """The central directory of the zip in ``data``, read without inflating anything.

    Walks the directory itself, stopping one entry past MAX_MEMBERS, so a directory of a million
    entries costs no more than ten thousand (``zipfile`` would build an object for each first).
    """
    if not data.startswith(b"PK\x03\x04"):
        raise _not_a_zip("it does not start with a ZIP header")
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - _EOCD.size - 0xFFFF))
    if end < 0 or end + _EOCD.size > len(data):
        raise _not_a_zip("no end of central directory")
    _, _, _, _, count, size, _, _ = _EOCD.unpack_from(data, end)
    start = end - size
    locator = end - _ZIP64_LOCATOR.size
    if locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        record = locator - _ZIP64_EOCD.size
        if record < 0 or data[record : record + 4] != b"PK\x06\x06":
            raise _not_a_zip("a broken ZIP64 record")
        fields = _ZIP64_EOCD.unpack_from(data, record)
        count, size = fields[7], fields[8]
        start = record - size
    if count > MAX_MEMBERS:
        raise BookError(f"The EPUB holds {count:,} files; the limit is {MAX_MEMBERS:,}.")
    if start < 0:
        raise _not_a_zip("the central directory lies outside the file")
    members: list[ZipMember] = []
    pos, stop = start, start + size
    while pos < stop:
        if len(members) > MAX_MEMBERS:
            break  # check_members refuses it; reading on would only cost time
        if pos + _CENTRAL.size > len(data) or data[pos : pos + 4] != b"PK\x01\x02":
            raise _not_a_zip("a broken central directory")
        header = _CENTRAL.unpack_from(data, pos)
        flags, compress_size, file_size = header[3], header[8], header[9]
        name_len, extra_len, comment_len = header[10], header[11], header[12]
        pos += _CENTRAL.size
        raw_name = data[pos : pos + name_len]
        extra = data[pos + name_len : pos + name_len + extra_len]
        pos += name_len + extra_len + comment_len
        if 0xFFFFFFFF in (file_size, compress_size):
            file_size, compress_size = _zip64_sizes(extra, file_size, compress_size)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        members.append(ZipMember(name, file_size, compress_size))
    return members


def check_upload(filename: str, data: bytes) -> str:
    """Cheap checks of an uploaded book, nothing parsed or inflated; return its format (BOOK_FORMATS).

    For the web process: the size, the type by suffix and by content, and for an EPUB its central
    directory (member count, declared sizes, compression ratios, container and package present).
    Raises BookError with what is wrong; parsing (:func:`load_book`) happens elsewhere, bounded.
    """
    kind = BOOK_FORMATS.get(Path(filename).suffix.lower())
    if kind is None:
        raise BookError(f"Unsupported book type {Path(filename).suffix or filename!r}: upload "
                        f"{', '.join(sorted(BOOK_FORMATS))}.")
    if len(data) > MAX_BOOK_BYTES:
        raise BookError(f"The book is {len(data):,} bytes; the limit is {MAX_BOOK_BYTES:,}.", size=len(data))
    if not data.strip():
        raise BookError("The book file is empty: upload an EPUB, .txt or .md file with text in it.")
    if kind != "epub":
        if data.startswith(b"PK\x03\x04"):
            raise BookError("The file is a ZIP archive, not text: if it is an EPUB, name it .epub.")
        head = data[:4096]
        if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise BookError("The file is binary, not text: upload an EPUB, or a UTF-8 .txt or .md file.")
        return kind
    members = zip_members(data)
    check_members(members)
    names = {m.name.lower() for m in members}
    if "meta-inf/encryption.xml" in names:
        raise BookError("The EPUB is encrypted (DRM): Spool can only read DRM-free books.")
    if "meta-inf/container.xml" not in names:
        raise BookError("The EPUB has no META-INF/container.xml: it is damaged or not an EPUB.")
    if not any(name.endswith(".opf") for name in names):
        raise BookError("The EPUB has no package (.opf) file: it is damaged or not an EPUB.")
    return kind


@dataclass
class _Item:
    """One manifest item of an EPUB."""

    id: str
    path: str  # the member's name inside the zip
    media_type: str
    properties: frozenset[str]


class _Archive:
    """An EPUB's zip with its sizes checked before anything is inflated."""

    def __init__(self, data: bytes) -> None:
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise BookError(
                "The EPUB is not a valid ZIP archive: the file is damaged or not an EPUB."
            ) from exc
        infos = self.zip.infolist()
        check_members([ZipMember(i.filename, i.file_size, i.compress_size) for i in infos])
        self.names = {i.filename: i for i in infos}
        self._folded = {name.lower(): name for name in self.names}

    def find(self, name: str) -> str | None:
        """The member's real name (names are matched exactly, then ignoring case)."""
        if name in self.names:
            return name
        return self._folded.get(name.lower())

    def read(self, name: str) -> bytes:
        """A member's bytes (its declared size was checked; zipfile reads no more than that)."""
        real = self.find(name)
        if real is None:
            raise BookError(f"The EPUB has no file {name[:200]!r} that its package lists.")
        try:
            return self.zip.read(real)
        except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
            raise BookError(f"The EPUB member {real[:200]!r} cannot be read ({exc}).") from None


def _join(base: str, href: str) -> str:
    """Resolve a relative href against the member ``base`` (a path inside the zip)."""
    href = unquote(href.split("#", 1)[0])
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), href)).lstrip("/")


@dataclass
class _TocEntry:
    """A table-of-contents entry: title, target (zip path and fragment) and the titles above it."""

    title: str
    path: str
    fragment: str
    parents: tuple[str, ...]


class _NavParser(HTMLParser):
    """The EPUB 3 navigation document's ``toc`` nav as entries with their parents."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.entries: list[tuple[str, str, tuple[str, ...]]] = []  # (title, href, parents)
        self._navs: list[tuple[str, list[tuple[str, str, tuple[str, ...]]]]] = []
        self._in_nav = 0
        self._nav_type = ""
        self._current: list[tuple[str, str, tuple[str, ...]]] = []
        self._labels: list[str] = []  # one per open <li>: its label so far
        self._label: list[str] | None = None
        self._label_tag = ""
        self._href = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "") for k, v in attrs}
        if tag == "nav":
            if not self._in_nav:
                self._nav_type = " ".join(
                    values.get("epub:type", "").split() + values.get("role", "").split()
                )
                self._current = []
            self._in_nav += 1
        elif not self._in_nav:
            return
        elif tag == "li":
            self._labels.append("")
        elif tag in ("a", "span") and self._labels and self._label is None and not self._labels[-1]:
            self._label = []
            self._label_tag = tag
            self._href = values.get("href", "") if tag == "a" else ""

    def handle_endtag(self, tag: str) -> None:
        if not self._in_nav:
            return
        if tag == "nav":
            self._in_nav -= 1
            if not self._in_nav:
                self._navs.append((self._nav_type, self._current))
        elif tag == "li" and self._labels:
            self._labels.pop()
        elif tag == self._label_tag and self._label is not None:
            label = " ".join(" ".join(self._label).split())
            self._label = None
            if self._labels:
                self._labels[-1] = label or " "
                if self._href and label:
                    self._current.append(
                        (label, self._href, tuple(t for t in self._labels[:-1] if t.strip()))
                    )

    def handle_data(self, data: str) -> None:
        if self._label is not None:
            self._label.append(data)

    def toc(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """The entries of the nav marked ``toc`` (else the first nav)."""
        for kind, entries in self._navs:
            if "toc" in kind.split() or "doc-toc" in kind.split():
                return entries
        return self._navs[0][1] if self._navs else []


def _nav_entries(archive: _Archive, item: _Item) -> list[_TocEntry]:
    parser = _NavParser()
    parser.feed(archive.read(item.path).decode("utf-8", errors="replace"))
    parser.close()
    return [
        _TocEntry(title, _join(item.path, href), unquote(href.partition("#")[2]), parents)
        for title, href, parents in parser.toc()
    ]


def _ncx_entries(archive: _Archive, item: _Item) -> list[_TocEntry]:
    root = _xml(archive.read(item.path), "NCX table of contents")
    entries: list[_TocEntry] = []

    def walk(node: ElementTree.Element, parents: tuple[str, ...]) -> None:
        for point in node:
            if _local(point.tag) != "navpoint":
                continue
            label = ""
            src = ""
            for child in point:
                name = _local(child.tag)
                if name == "navlabel" and not label:
                    label = " ".join("".join(child.itertext()).split())
                elif name == "content" and not src:
                    src = child.get("src", "")
            if label and src:
                entries.append(
                    _TocEntry(label, _join(item.path, src), unquote(src.partition("#")[2]), parents)
                )
            walk(point, (*parents, label) if label else parents)

    for node in root.iter():
        if _local(node.tag) == "navmap":
            walk(node, ())
            break
    return entries


@dataclass
class _Document:
    """One spine document's text and where it lies in the book's text."""

    item: _Item
    linear: bool
    parsed: _XhtmlText
    base: int = 0


def parse_epub(data: bytes) -> Book:
    """EPUB 2/3: spine order, chapters at TOC anchors (nav, NCX, headings), matter by positive signals."""
    archive = _Archive(data)
    if archive.find("META-INF/encryption.xml"):
        raise BookError("The EPUB is encrypted (DRM): Spool can only read DRM-free books.")
    if not archive.find("META-INF/container.xml"):
        raise BookError("The EPUB has no META-INF/container.xml: it is damaged or not an EPUB.")
    container = _xml(archive.read("META-INF/container.xml"), "container.xml")
    opf_path = next(
        (
            el.get("full-path", "")
            for el in container.iter()
            if _local(el.tag) == "rootfile" and el.get("full-path")
        ),
        "",
    )
    if not opf_path or not archive.find(opf_path):
        raise BookError("The EPUB's container.xml names no package (.opf) file: it is damaged.")
    opf = _xml(archive.read(opf_path), "package document")

    meta: dict[str, str] = {}
    cover_id = ""
    items: dict[str, _Item] = {}
    spine: list[tuple[str, bool]] = []
    toc_id = ""
    for el in opf.iter():
        name = _local(el.tag)
        if name in ("title", "creator", "language") and name not in meta and (el.text or "").strip():
            meta[name] = " ".join(el.text.split())  # type: ignore[union-attr]
        elif name == "meta" and el.get("name") == "cover":
            cover_id = el.get("content", "")
        elif name == "item" and el.get("id") and el.get("href") is not None:
            items[el.get("id", "")] = _Item(
                el.get("id", ""),
                _join(opf_path, el.get("href", "")),
                (el.get("media-type") or "").lower(),
                frozenset((el.get("properties") or "").split()),
            )
        elif name == "spine":
            toc_id = el.get("toc", "")
        elif name == "itemref" and el.get("idref"):
            spine.append((el.get("idref", ""), (el.get("linear") or "yes").lower() != "no"))
    warnings: list[str] = []

    nav = next((i for i in items.values() if "nav" in i.properties), None)
    docs: list[_Document] = []
    for idref, linear in spine:
        item = items.get(idref)
        if item is None:
            warnings.append(f"The spine lists {idref[:100]!r}, which the manifest does not have.")
            continue
        is_html = item.media_type in ("application/xhtml+xml", "text/html") or item.path.lower().endswith(
            (".xhtml", ".html", ".htm")
        )
        if not is_html or not archive.find(item.path):
            continue
        docs.append(_Document(item, linear, _parse_xhtml(archive.read(item.path))))

    # One text for the whole book: documents in spine order, a paragraph break between them.
    src = _Source("")
    parts: list[str] = []
    at = 0
    for doc in docs:
        piece = doc.parsed.text()
        if parts and piece:
            parts.append("\n\n")
            at += 2
        doc.base = at
        parts.append(piece)
        at += len(piece)
        p = doc.parsed
        src.headings.extend(
            _Heading(h.start + doc.base, h.end + doc.base, h.level, h.text) for h in p.headings
        )
        src.matter.extend(_Span(s.start + doc.base, s.end + doc.base, s.reason) for s in p.matter)
        src.links.extend((a + doc.base, b + doc.base) for a, b in p.links)
        if not piece:
            continue
        if nav is not None and doc.item.id == nav.id:
            src.matter.append(
                _Span(doc.base, doc.base + len(piece), "contents page (the navigation document)")
            )
        elif not doc.linear:
            src.matter.append(
                _Span(doc.base, doc.base + len(piece), 'outside the reading order (linear="no")')
            )
    src.text = "".join(parts)

    by_path = {doc.item.path: doc for doc in docs}
    by_folded = {doc.item.path.lower(): doc for doc in docs}

    def resolve(entries: list[_TocEntry]) -> list[_Cut]:
        cuts: list[_Cut] = []
        for entry in entries:
            doc = by_path.get(entry.path) or by_folded.get(entry.path.lower())
            if doc is None or (nav is not None and doc.item.id == nav.id):
                continue
            offset = doc.parsed.anchors.get(entry.fragment, None) if entry.fragment else 0
            if offset is None:
                warnings.append(
                    f"The contents entry {entry.title!r} points to a missing anchor; it starts its file."
                )
                offset = 0
            cuts.append(_Cut(doc.base + offset, entry.title, entry.parents, "toc"))
        return cuts

    outline = ""
    cuts: list[_Cut] = []
    ncx = items.get(toc_id) if toc_id else None
    if ncx is None:
        ncx = next((i for i in items.values() if i.media_type == "application/x-dtbncx+xml"), None)
    for name, item, reader in (("nav", nav, _nav_entries), ("ncx", ncx, _ncx_entries)):
        if item is None or not archive.find(item.path):
            continue
        try:
            found = resolve(reader(archive, item))
        except BookError as exc:
            warnings.append(f"The {name} table of contents could not be read ({exc.message}).")
            continue
        if len({c.at for c in found}) >= 2:
            outline, cuts = name, found
            break
    if not cuts:
        cuts = [_Cut(h.start, h.text, (), "heading") for h in src.headings if h.level <= 2]
        outline = "headings" if len(cuts) >= 2 else ""
        if not outline:
            cuts = []
    if not cuts:
        outline = "documents"
        for doc in docs:
            text = doc.parsed.text()
            if text:
                heading = doc.parsed.headings[0].text if doc.parsed.headings else ""
                cuts.append(_Cut(doc.base, heading or " ".join(doc.parsed.title.split()), (), "document"))
    else:
        # TOC order that disagrees with the spine is read in spine order.
        if outline in ("nav", "ncx") and [c.at for c in cuts] != sorted(c.at for c in cuts):
            warnings.append("The table of contents is not in reading order; chapters follow the spine.")
        # Documents before the first chapter are sections of their own (a cover, a title page);
        # a later document no entry points into belongs to the chapter before it, unless it is matter.
        first = min(c.at for c in cuts)
        targets = sorted(c.at for c in cuts)
        for doc in docs:
            size = len(doc.parsed.text())
            if not size:
                continue
            if doc.base < first:
                cuts.append(_Cut(doc.base, "", (), "document"))
                continue
            k = bisect.bisect_left(targets, doc.base)
            if k == len(targets) or targets[k] >= doc.base + size:
                cuts.append(_Cut(doc.base, "", (), "continuation"))
    # Non-linear documents never run on into a chapter.
    for doc in docs:
        if not doc.linear and doc.parsed.text():
            cuts.append(_Cut(doc.base, "", (), "document"))
            end = doc.base + len(doc.parsed.text())
            if end < len(src.text):
                cuts.append(_Cut(end, "", (), "document"))
    src.cuts = cuts

    title = meta.get("title") or "Untitled"
    chapters = _sections(src, title)
    cover, cover_type = _epub_cover(archive, items, cover_id)
    return Book(
        title=title,
        author=meta.get("creator", ""),
        chapters=chapters,
        cover=cover,
        cover_type=cover_type,
        source_format="epub",
        language=meta.get("language") or None,
        warnings=_unique(warnings),
        text=src.text,
        outline=outline,
    )


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))[:50]


_IMAGE_TYPES = {"image/jpeg": "image/jpeg", "image/jpg": "image/jpeg", "image/png": "image/png"}


def _epub_cover(archive: _Archive, items: dict[str, _Item], cover_id: str) -> tuple[bytes | None, str | None]:
    """The cover image: the item the metadata names, else one marked cover-image, else one named cover."""
    candidates = [items[cover_id]] if cover_id in items else []
    candidates += [i for i in items.values() if "cover-image" in i.properties]
    candidates += [
        i for i in items.values() if "cover" in i.path.lower() and i.media_type.startswith("image/")
    ]
    for item in candidates:
        media = _IMAGE_TYPES.get(item.media_type)
        if media and archive.find(item.path):
            return archive.read(item.path), media
    return None, None
