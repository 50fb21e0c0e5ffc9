"""``spool book FIX <id>``: fix a finished book on a Spool server (PATCH /v1/books/<id>).

``--edit 'CHAPTER:find=>replace'`` replaces every occurrence of ``find`` in chapter CHAPTER
(1-based); ``--segment 'N:text'`` gives segment N (0-based) new text; ``--lexicon FILE|ID``
applies a lexicon (a file is uploaded first). Only the changed segments are rendered again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from engine.exceptions import SpoolError

#: Seconds between polls of the book while the revision renders.
POLL_INTERVAL = 0.5


class FixUsageError(SpoolError):
    """A ``spool book FIX`` argument is malformed."""

    code = "invalid_fix_argument"


def parse_edit(spec: str) -> dict[str, Any]:
    """``'3:Hermoine=>Hermione'`` as an edit: chapter 3, find, replace (the replacement may be empty)."""
    chapter, colon, rest = spec.partition(":")
    find, arrow, replace = rest.partition("=>")
    if not colon or not arrow or not chapter.strip().isdigit() or not find:
        raise FixUsageError(
            f"--edit {spec!r}: write it as CHAPTER:find=>replace, e.g. '3:Hermoine=>Hermione' "
            "(chapter numbers start at 1)."
        )
    return {"chapter": int(chapter), "find": find, "replace": replace}


def parse_segment(spec: str) -> dict[str, Any]:
    """``'12:New text.'`` as an edit: segment 12 (0-based) gets the new text."""
    number, colon, text = spec.partition(":")
    if not colon or not number.strip().isdigit():
        raise FixUsageError(f"--segment {spec!r}: write it as N:text, e.g. '12:The new sentence.'.")
    return {"segment": int(number), "text": text}


def cmd_fix(args: argparse.Namespace) -> int:
    """Send the fix; with ``--wait``, follow the revision until it finishes and print what it rendered."""
    from cli.service_cmds import _client, upload_lexicon

    if not args.book_id:
        raise FixUsageError("spool book FIX needs the book id: spool book FIX <id> --edit '1:old=>new'.")
    body: dict[str, Any] = {}
    edits = [parse_edit(e) for e in args.edit or []] + [parse_segment(s) for s in args.segment or []]
    if edits:
        body["edits"] = edits
    client = _client(args)
    if args.lexicon:
        body["lexicon"] = upload_lexicon(client, args.lexicon)
    if args.voice:
        body["voice"] = args.voice
    if args.speed is not None:
        body["speed"] = args.speed
    if not body:
        raise FixUsageError("Nothing to fix: give --edit, --segment, --lexicon, --voice or --speed.")
    book = client.json("PATCH", f"/v1/books/{args.book_id}", body)
    fix = book["fix"] or {}
    for edit in fix.get("edits", []):
        what = edit.get("find") if edit.get("find") is not None else f"segment {edit.get('segment')}"
        print(f"edit {edit['edit']}: chapter {edit['chapter']}: {what!r} matched {edit['matched']} time(s)")
    print(f"revision {book['revision']} queued; revision {book['served_revision']} is served until it succeeds")
    if not args.wait:
        return 0
    while book["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(POLL_INTERVAL)
        book = client.json("GET", f"/v1/books/{args.book_id}")
    if args.json:
        print(json.dumps(book, indent=2))
    print(
        f"revision {book['revision']} {book['state']}: {book['segments_rendered']} segment(s) rendered, "
        f"{book['segments_reused']} reused",
        file=sys.stderr,
    )
    if book["state"] != "succeeded":
        print(f"spool: {book.get('note') or ''} {(book.get('error') or {}).get('message', '')}", file=sys.stderr)
        return 1
    return 0


def add_arguments(book: argparse.ArgumentParser) -> None:
    """The ``FIX`` arguments of ``spool book``."""
    book.add_argument("book_id", nargs="?", help="with FIX: the id of the finished book to fix")
    book.add_argument(
        "--edit",
        action="append",
        metavar="CHAPTER:FIND=>REPLACE",
        help="with FIX: replace every FIND in chapter CHAPTER (1-based) by REPLACE; repeatable",
    )
    book.add_argument(
        "--segment", action="append", metavar="N:TEXT", help="with FIX: segment N (0-based) gets TEXT; repeatable"
    )
    book.add_argument("--wait", action="store_true", help="with FIX: wait for the new revision and report it")
    book.add_argument("--url", help="with FIX: Spool server (default: SPOOL_URL or http://127.0.0.1:8000)")
    book.add_argument("--api-key", help="with FIX: API key (default: SPOOL_API_KEY)")
