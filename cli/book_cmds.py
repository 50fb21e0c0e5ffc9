"""``spool book FILE -o DIR``: render a whole book locally into a chaptered audiobook."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from cli.book_fix import add_arguments
from cli.engine_cmds import load_lexicon_file
from config.settings import Settings
from engine.audiobook import DEFAULT_CHAPTER_GAP, ChapterAudio, assemble
from engine.book import load_book, parse_chapter_list
from engine.subtitles import cues_from_chunks


def _bar(done: int, total: int, label: str) -> None:
    """Draw a one-line progress bar on stderr."""
    width = 30
    filled = int(width * done / total) if total else width
    pct = 100.0 * done / total if total else 100.0
    print(f"\r[{'#' * filled}{'-' * (width - filled)}] {pct:5.1f}% {label[:50]:<50}", end="", file=sys.stderr)


def _checkpoint(cache: Path, text: str, voice: str, speed: float, model_id: str, lexicon: str = "") -> Path:
    """Where a rendered chapter is kept, keyed by its content, voice, speed, model and lexicon entries used."""
    parts = [model_id, voice, f"{speed:.4f}", text, *([lexicon] if lexicon else [])]
    key = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return cache / f"{key}.npz"


def print_plan(preview: dict, out: TextIO) -> None:
    """The chapter plan as a table: every section, read or skipped (and why)."""
    print(f"{preview['title']}" + (f" by {preview['author']}" if preview["author"] else ""), file=out)
    print(
        f"{preview['format']}, chapters from {preview['outline'] or 'the whole text'}, "
        f"{preview['words']:,} words",
        file=out,
    )
    print(f"\n{'#':>4}  {'title':<52} {'words':>7} {'min':>6}  {'kind':<5}  read", file=out)
    for section in preview["sections"]:
        number = section["number"] if section["number"] is not None else "-"
        title = " > ".join([*section["parents"], section["title"]])
        if len(title) > 52:
            title = title[:51] + "…"
        read = (
            "yes"
            if section["selected"]
            else ("skipped: " + section["reason"] if section["skipped"] else "no")
        )
        print(
            f"{number:>4}  {title:<52} {section['words']:>7,} {section['minutes']:>6.1f}  "
            f"{section['kind']:<5}  {read}",
            file=out,
        )
    chosen = preview["selected"]
    print(
        f"\n{chosen['chapters']} chapters, {chosen['words']:,} words, about {chosen['minutes']:.0f} min of audio; "
        f"{len(preview['skipped'])} sections skipped (--include-matter reads them)",
        file=out,
    )
    for warning in preview["warnings"]:
        print(f"warning: {warning}", file=out)


def cmd_book(args: argparse.Namespace) -> int:
    """Render the selected chapters and write book.m4b, chapter MP3s, subtitles and manifest.json."""
    if args.file == "FIX":  # spool book FIX <id> ...: fix a finished book on the server
        from cli.book_fix import cmd_fix

        return cmd_fix(args)
    args.voice = args.voice or "af_heart"
    args.speed = 1.0 if args.speed is None else args.speed
    book = load_book(args.file)
    numbers = parse_chapter_list(args.chapters)
    if args.plan:
        # No model is loaded: the plan is pure text work, seconds even for a long book.
        preview = book.preview(include_matter=args.include_matter, chapters=numbers, speed=args.speed)
        if args.json:
            print(json.dumps(preview, indent=2, ensure_ascii=False))
        else:
            print_plan(preview, sys.stdout)
        return 0
    if not args.output:
        print("spool book: -o/--output DIR is needed to render (or --plan to preview)", file=sys.stderr)
        return 2
    from engine import Engine

    chapters = book.select(include_matter=args.include_matter, chapters=numbers)
    for section in book.skipped(include_matter=args.include_matter):
        print(f"skipped: {section.title!r} ({section.words:,} words): {section.reason}", file=sys.stderr)
    title = args.title or book.title
    author = args.author if args.author is not None else book.author
    settings = Settings.from_env()
    engine = Engine.from_assets(
        args.assets or settings.assets_path, threads=args.threads or settings.engine_threads or None
    )
    rv = engine.check(args.voice, args.speed, args.lang)
    if args.lexicon:
        rv = dataclasses.replace(rv, lexicon=load_lexicon_file(args.lexicon).validate(engine.model.vocab))
    out = Path(args.output)
    cache = out / ".chapters"
    cache.mkdir(parents=True, exist_ok=True)
    plans = [(c, engine.segments(c.text, rv.lang)) for c in chapters]
    total = sum(len(segments) for _, segments in plans)
    done = 0
    started = time.perf_counter()
    rendered: list[ChapterAudio] = []
    for chapter, segments in plans:
        used = rv.lexicon.digest_for(" ".join(s.spoken for s in segments)) if rv.lexicon else ""
        point = _checkpoint(cache, chapter.text, rv.spec, rv.speed, engine.model_id, used)
        if point.is_file():
            # Rendered by an earlier run with the same text, voice, speed and model: reuse it.
            with np.load(point, allow_pickle=False) as saved:
                samples = saved["samples"]
                chunks = None
                cue_data = saved["cues"]
            from engine.subtitles import Cue

            cues = [Cue(float(s), float(e), str(t)) for s, e, t in cue_data]
            done += len(segments)
            _bar(done, total, f"{chapter.title} (kept)")
        else:
            chunks = []
            last = len(segments) - 1
            for segment in segments:
                chunks.append(engine.synthesize_segment(segment, rv, is_last=segment.index == last))
                done += 1
                _bar(done, total, chapter.title)
            samples = np.concatenate([c.samples for c in chunks]).astype(np.float32)
            cues = cues_from_chunks(chunks)
            cue_data = np.array([(c.start, c.end, c.text) for c in cues], dtype=object).astype(str)
            np.savez(point, samples=samples, cues=cue_data)
        rendered.append(ChapterAudio(chapter.title, samples, rv.sample_rate, cues, chapter.parents))
    print(file=sys.stderr)
    manifest = assemble(
        rendered,
        out,
        title=title,
        author=author,
        cover=book.cover,
        cover_type=book.cover_type,
        gap=args.gap,
        skipped=[c.report() for c in book.skipped(include_matter=args.include_matter)],
    )
    elapsed = time.perf_counter() - started
    print(
        f"{len(rendered)} chapters, {manifest['duration'] / 60:.1f} min of audio in {elapsed:.0f} s -> "
        f"{out / manifest['book_file']}",
        file=sys.stderr,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``book`` to the ``spool`` command."""
    book = subparsers.add_parser("book", help="render an EPUB, .txt or .md book into a chaptered audiobook")
    book.add_argument("file", help="the book: .epub, .txt or .md; or FIX to fix a finished book on the server")
    book.add_argument("-o", "--output", help="directory for book.m4b, chapters, subtitles (needed to render)")
    book.add_argument(
        "--plan", action="store_true", help="print the chapters (read or skipped, and why) without rendering"
    )
    book.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")
    book.add_argument("--voice", help="voice (default af_heart; with FIX: a new voice)")
    book.add_argument("--speed", type=float, help="speed (default 1.0; with FIX: a new speed)")
    book.add_argument("--lexicon", help="pronunciation lexicon: a W3C PLS file or Spool's JSON")
    book.add_argument("--lang", help="language (default: the voice's)")
    book.add_argument("--chapters", help="chapters to render, e.g. 1 or 1,3-5 (default: all)")
    book.add_argument(
        "--include-matter", action="store_true", help="also read front/back matter (licence, contents)"
    )
    book.add_argument("--title", help="title for the tags (default: from the book)")
    book.add_argument("--author", help="author for the tags (default: from the book)")
    book.add_argument(
        "--gap", type=float, default=DEFAULT_CHAPTER_GAP, help="seconds of silence between chapters"
    )
    book.add_argument("--threads", type=int, help="engine threads")
    book.add_argument("--assets", help="assets directory")
    add_arguments(book)
    book.set_defaults(func=cmd_book)
