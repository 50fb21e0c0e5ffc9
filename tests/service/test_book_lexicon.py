"""A book with a lexicon: a changed entry re-renders exactly the segments that use it (real model, in process)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from config.defaults import PRIORITY_STEPS
from engine.book import load_book
from engine.lexicon import Lexicon, LexiconEntry
from service.book_render import render_batch
from service.books import BookSpec, BookStore, segment_digest
from service.keys import Keys
from service.services import Services

#: Unique words per run, so checkpoints left by an earlier run (content-keyed, shared storage) are not reused.
TOKEN = uuid.uuid4().hex[:6]

TEXT = f"Chapter 1\n\nHermione waved.\n\nChapter 2\n\nRon laughed at {TOKEN}. Hi.\n"


@pytest.fixture
def store(settings: Any) -> BookStore:
    return BookStore(Services(dataclasses.replace(settings, queue="books-idle")))


def _render(store: BookStore, engine: Any, owner: str, lexicon_id: str, version: str) -> str:
    """Plan and render a whole book in this process; return its id."""
    book = load_book("hp.txt", data=TEXT.encode(), filename="hp.txt")
    spec = BookSpec(lexicon=lexicon_id, lexicon_version=version)
    book_id = store.create(book, spec, owner, source_name="hp.txt")
    store.plan_and_queue(book_id, "test@host:1")
    # No worker consumes this queue: drop the messages we just played ourselves (the plan task, the
    # batches), or the batch loop would give way to the waiting plan message (service.lanes).
    prefix = store.svc.settings.broker_key_prefix
    store.redis.delete(*(Keys.broker_queue(store.queue(book_id), step, prefix) for step in PRIORITY_STEPS))
    for batch in range(len(store.plan(book_id)["batches"])):
        render_batch(store, engine, book_id, batch, "test@host:1")
    assert store.record(book_id).state == "succeeded", store.record(book_id).error_message
    return book_id


def test_digest_changes_only_where_a_changed_entry_is_used() -> None:
    one = Lexicon([LexiconEntry("Hermione", phonemes="hɜːmˈaɪəni"), LexiconEntry("Ron", phonemes="ɹˈɒn")])
    two = Lexicon([LexiconEntry("Hermione", phonemes="hɜːmˈaɪəni"), LexiconEntry("Ron", phonemes="ɹˈɔn")])
    seg = {"spoken": "The door was open.", "boundary": "sentence", "last": False}
    args = ("af_heart", 1.0, "en-us", "m")
    assert segment_digest(seg, *args, one) == segment_digest(seg, *args, two) == segment_digest(seg, *args)
    seg = {**seg, "spoken": "Ron laughed."}
    assert segment_digest(seg, *args, one) != segment_digest(seg, *args, two)
    seg = {**seg, "spoken": "Hermione waved."}
    assert segment_digest(seg, *args, one) == segment_digest(seg, *args, two) != segment_digest(seg, *args)


def test_a_changed_entry_re_renders_only_its_segments(store: BookStore, engine: Any) -> None:
    owner = f"reader-{TOKEN}"
    lexicons = store.svc.lexicons
    record = lexicons.create(owner, Lexicon([LexiconEntry("Ron", phonemes="ɹˈɒn")]))
    first = _render(store, engine, owner, record.id, record.version)
    segments = store.plan(first)["segments"]
    with_ron = {s["i"] for s in segments if "Ron" in s["spoken"]}
    assert len(with_ron) == 1 and with_ron <= set(store.renders(first))  # new text: rendered the first time

    changed = lexicons.replace(owner, record.id, Lexicon([LexiconEntry("Ron", phonemes="ɹˈɔn")]))
    second = _render(store, engine, owner, record.id, changed.version)
    assert set(store.renders(second)) == with_ron  # only the segment with the changed entry rendered again
    # The first book keeps its own version: its segments still name the old checkpoints.
    assert lexicons.snapshot(owner, record.id, record.version).entries[0].phonemes == "ɹˈɒn"
