"""Book parsing off the web process (issue 14, item 2): the cheap checks, the limited child, and recovery."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from engine.book import MAX_MEMBERS, check_upload, zip_members
from engine.exceptions import BookError
from service.book_parse import ParseLimits, accept_book, run_parser
from service.books import BookSpec
from service.recovery import broker_snapshot, reconcile, recover_books
from service.services import Services
from tests.engine.test_book import make_epub
from tests.fixtures import bombs
from tests.fixtures.durability import isolated_settings

CHAPTERS = [("One", "The first chapter is short."), ("Two", "So is the second one.")]


def test_the_directory_scan_matches_zipfile_without_inflating(tmp_path: Path) -> None:
    data = make_epub(tmp_path / "b.epub", CHAPTERS).read_bytes()
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    assert [(m.name, m.file_size, m.compress_size) for m in zip_members(data)] == [
        (i.filename, i.file_size, i.compress_size) for i in infos
    ]
    assert check_upload("b.epub", data) == "epub"


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("a.epub", b"Chapter 1\nHi.", "not a valid ZIP"),
        ("a.epub", bombs.epub({})[:-30], "not a valid ZIP"),
        ("a.epub", b"PK\x03\x04" + b"\0" * 40, "not a valid ZIP"),
        ("a.txt", bombs.epub({}), "ZIP archive"),
        ("a.txt", b"\0\1\2binary", "binary"),
        ("a.txt", b"  \n ", "empty"),
    ],
)
def test_the_cheap_checks_refuse_what_is_not_the_type_it_claims(name: str, data: bytes, match: str) -> None:
    with pytest.raises(BookError, match=match):
        check_upload(name, data)


def test_the_cheap_checks_refuse_every_bomb_shape_fast() -> None:
    shapes = {
        "one member": (bombs.one_member_bomb(), "zip bomb"),
        "many small members": (bombs.many_small_members_bomb(), "in all"),
        "declared 4 GB": (bombs.declared_huge(), "inflates to"),
        "too many members": (bombs.many_members(MAX_MEMBERS + 1), "files; the limit"),
        "no container": (zipfile_bytes({"OEBPS/a.xhtml": b"<p>x</p>"}), "container.xml"),
        "no package": (zipfile_bytes({"META-INF/container.xml": b"<c/>"}), "package"),
        "encrypted": (bombs.epub({}, {"META-INF/encryption.xml": b"<e/>"}), "encrypted"),
    }
    for name, (data, match) in shapes.items():
        started = time.perf_counter()
        with pytest.raises(BookError, match=match):
            check_upload("b.epub", data)
        assert time.perf_counter() - started < 0.5, name


def zipfile_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_bombs_past_the_cheap_checks_end_in_the_child_not_here(tmp_path: Path) -> None:
    small_lie, big_lie, dense = bombs.lying_sizes(4 << 20), bombs.lying_sizes(), bombs.dense(24)
    for data in (small_lie, big_lie, dense):
        assert check_upload("b.epub", data) == "epub"  # they pass the cheap checks
    limits = ParseLimits(memory_bytes=128 * 1024 * 1024, cpu_seconds=3)
    outcomes = {}
    for name, data in (("small lie", small_lie), ("big lie", big_lie), ("dense", dense)):
        (tmp_path / name).mkdir()
        outcomes[name] = run_parser(data, "b.epub", {}, limits, tmp_path / name)
    # A lie zipfile can afford to inflate: the CRC check after the declared size fails, a parser error.
    assert (outcomes["small lie"].code, outcomes["small lie"].ok) == ("invalid_book", False)
    assert "cannot be read" in outcomes["small lie"].message
    # One that inflates 48 MB in one go runs out of the child's address space; the dense book out of CPU.
    assert outcomes["big lie"].code == "book_too_large" and "MiB of memory" in outcomes["big lie"].message
    assert outcomes["dense"].code == "book_too_large", outcomes["dense"]
    for outcome in outcomes.values():
        assert outcome.seconds < limits.wall_seconds and "SPOOL_PARSE" in outcome.message or outcome.code == "invalid_book"


def test_the_child_parses_a_book_into_its_source_and_plan(tmp_path: Path) -> None:
    data = make_epub(tmp_path / "b.epub", CHAPTERS, title="Two Parts").read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    limits = ParseLimits(memory_bytes=256 * 1024 * 1024, cpu_seconds=10)
    outcome = run_parser(data, "b.epub", {"chapters": [2], "speed": 1.0}, limits, work)
    assert outcome.ok, outcome
    assert outcome.meta["title"] == "Two Parts" and outcome.meta["chapters"] == 1
    assert [s["title"] for s in outcome.meta["preview"]["sections"] if s["selected"]] == ["Two"]
    assert "So is the second one." in (work / "source.json").read_text()
    work2 = tmp_path / "work2"
    work2.mkdir()
    wrong = run_parser(data, "b.epub", {"chapters": [7]}, limits, work2)
    assert (wrong.ok, wrong.code) == (False, "invalid_book") and "out of range" in wrong.message


@pytest.fixture
def quiet(settings: Settings) -> Iterator[Services]:
    """Services on a deployment of their own with no worker at all (nothing sweeps but the test)."""
    svc = Services(isolated_settings(settings, reconcile_grace=0.0, max_attempts=2))
    yield svc
    svc.close()


def test_a_lost_parse_is_sent_again_and_a_dead_parser_past_its_attempts_fails_the_book(
    quiet: Services, tmp_path: Path
) -> None:
    svc = quiet
    data = make_epub(tmp_path / "b.epub", CHAPTERS).read_bytes()
    book_id = accept_book(svc, data, "b.epub", BookSpec(), "t")
    # Stored before the answer: the upload and a record in state parsing, with its parse message.
    assert svc.storage.get(svc.keys.book_file(book_id, "upload.epub")) == data
    assert svc.books.record(book_id).state == "parsing"
    queue = svc.settings.parse_queue
    lists = [f"{svc.settings.broker_key_prefix}{queue}{s}" for s in ("", "\x06\x163", "\x06\x160")]
    assert book_id in broker_snapshot(svc, {queue}).parses
    assert reconcile(svc, locked=False).parses == []  # carried: nothing to do
    svc.redis.delete(*lists)  # the message is lost
    assert reconcile(svc, locked=False).parses == [book_id]
    assert book_id in broker_snapshot(svc, {queue}).parses
    # A parser that died holding it: sent again while attempts are left, then the book fails.
    key = svc.keys.book(book_id)
    svc.redis.hset(key, mapping={"parser": "dead@host:1", "parse_attempts": "1"})
    recover_books(svc.books, {"alive@host:2"}, 0.001)
    assert svc.books.record(book_id).parser is None and svc.books.record(book_id).state == "parsing"
    svc.redis.hset(key, mapping={"parser": "dead@host:1", "parse_attempts": "2"})
    svc.redis.delete(svc.keys.books_recovery())
    recover_books(svc.books, {"alive@host:2"}, 0.001)
    rec = svc.books.record(book_id)
    assert (rec.state, rec.error_code) == ("failed", "attempts_exhausted"), rec
    assert "started 2 time(s)" in (rec.error_message or "")
    assert not svc.redis.sismember(svc.keys.books_active(), book_id)
    svc.redis.delete(*lists)
