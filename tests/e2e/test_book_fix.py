"""Fixing a finished book (issue 17 part 3): PATCH /v1/books/<id> through a real worker, moto S3 and the model.

One three-chapter book, owned by alice, is rendered once for the module. A one-sentence edit in
chapter 2 must synthesise exactly that sentence's segment (the book's render counter, which only
real synthesis increments, and its log), keep chapters 1 and 3 (their files byte for byte, their
decoded M4B audio between the chapter marks), and serve revision 1 until revision 2 has
succeeded. A lexicon PATCH then re-renders exactly the segments containing the entry.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest

from app import create_app
from app.schemas import Book
from config.settings import Settings
from tests.fixtures.service import wait_until

BOOK_TIMEOUT = float(os.environ.get("SPOOL_TEST_BOOK_TIMEOUT", "300"))

KEYS = {"alice-fix-key-01": "fix-alice", "bob-fix-key-0002": "fix-bob"}
ALICE, BOB = ({"Authorization": f"Bearer {key}"} for key in KEYS)

#: A made-up word per run (letters only), so no checkpoint of an earlier run is reused.
WORD = "Zo" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:6])

OLD = f"She waited an hour for {WORD}."
NEW = f"She waited for two long and weary hours, alone, for {WORD}."

TEXT = (
    f"Chapter 1\n\nThe train stopped near {WORD}. Nobody got off.\n\n"
    f"Chapter 2\n\nThe clock struck nine. {OLD} The lamps went out.\n\n"
    f"Chapter 3\n\nThen she went home to {WORD}. The lamps were lit.\n"
)


@pytest.fixture(scope="module")
def keyed(settings: Settings) -> Iterator[Any]:
    """The app with two API keys; books rendered by the session's worker."""
    application = create_app(settings.replace(api_keys=KEYS))
    yield application
    application.extensions["spool"].close()


def _get(client: Any, book_id: str) -> dict[str, Any]:
    return client.get(f"/v1/books/{book_id}", headers=ALICE).get_json()


def _wait(client: Any, book_id: str, revision: int) -> dict[str, Any]:
    """The book once ``revision`` has finished."""

    def done() -> dict[str, Any] | None:
        body = _get(client, book_id)
        return body if body["revision"] == revision and body["state"] in ("succeeded", "failed") else None

    return wait_until(done, BOOK_TIMEOUT, interval=0.2, what=f"revision {revision} of book {book_id}")


def _file(client: Any, book_id: str, name: str) -> bytes:
    response = client.get(f"/v1/books/{book_id}/files/{name}", headers=ALICE)
    assert response.status_code == 200, response.data
    return response.data


def _chapters_audio(m4b: bytes, manifest: dict[str, Any]) -> list[np.ndarray]:
    """Each chapter's decoded samples, cut at the M4B's own chapter marks.

    The marks are kept in milliseconds (and a mark's end is where the next chapter starts, the gap
    included): each cut starts at the sample the manifest names, after checking that the mark is
    within a millisecond of it, and is as long as the chapter's audio.
    """
    with av.open(io.BytesIO(m4b)) as container:
        marks = [(float(c["start"] * c["time_base"]), float(c["end"] * c["time_base"])) for c in container.chapters()]
        rate = container.streams.audio[0].rate
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    cuts = []
    for (start, end), chapter in zip(marks, manifest["chapters"], strict=True):
        first, last = chapter["offset"], chapter["offset"] + chapter["samples"]
        assert abs(start * rate - first) <= rate / 1000 and end * rate >= last - rate / 1000
        cuts.append(samples[first:last])
    return cuts


@pytest.fixture(scope="module")
def book(keyed: Any, worker: Any) -> dict[str, Any]:
    """Alice's three-chapter book, rendered once (revision 1)."""
    client = keyed.test_client()
    response = client.post(
        "/v1/books",
        data={"file": (io.BytesIO(TEXT.encode()), "fix.txt"), "gap": "0.5"},
        content_type="multipart/form-data",
        headers=ALICE,
    )
    assert response.status_code == 202, response.data
    final = _wait(client, response.get_json()["id"], 1)
    assert final["state"] == "succeeded", final
    assert final["revision"] == final["served_revision"] == 1 and final["fix"] is None
    assert final["segments_rendered"] + final["segments_reused"] == final["progress"]["segments_total"]
    return final


def test_bad_fixes_are_4xx_that_say_what_is_wrong(keyed: Any, book: dict[str, Any]) -> None:
    client = keyed.test_client()
    path = f"/v1/books/{book['id']}"
    cases = [
        ({"edits": [{"chapter": 2, "find": "an hour", "replace": "a day"}, {"chapter": 2, "find": "not in it", "replace": "x"}]},
         "Edit 2"),
        ({"edits": [{"chapter": 9, "find": "hour", "replace": "day"}]}, "chapters 1 to 3"),
        ({"edits": [{"segment": 999, "text": "Hi."}]}, "no segment 999"),
        ({"edits": [{"chapter": 2, "find": "an hour", "replace": "x"}, {"chapter": 2, "find": "hour for", "replace": "y"}]},
         "overlapping"),
        ({"edits": [{"chapter": 2, "find": "an hour"}]}, "Edit 1"),
        ({"edits": [{"chapter": 2, "find": OLD, "replace": OLD}]}, "Nothing would change"),
        ({"colour": "red"}, "Unknown field"),
        ({}, "Nothing to fix"),
        ({"speed": 9}, "out of range"),
        ({"lexicon": "nope"}, "lexicon id"),
    ]
    for body, words in cases:
        response = client.patch(path, json=body, headers=ALICE)
        assert response.status_code == 400, (body, response.data)
        assert words in response.get_json()["error"]["message"], (body, response.get_json())
    assert client.patch(path, data="x", content_type="text/plain", headers=ALICE).status_code == 415
    edit = {"edits": [{"chapter": 2, "find": OLD, "replace": NEW}]}
    other = client.patch(path, json=edit, headers=BOB)
    assert other.status_code == 404 and other.get_json()["error"]["code"] == "book_not_found"
    assert _get(client, book["id"])["revision"] == 1  # nothing was started


def test_a_one_sentence_fix_renders_one_segment_and_rebuilds_one_chapter(
    keyed: Any, book: dict[str, Any]
) -> None:
    client = keyed.test_client()
    svc = keyed.extensions["spool"]
    book_id = book["id"]
    old_m4b = _file(client, book_id, "book.m4b")
    old_files = {name: _file(client, book_id, name) for name in book["manifest"]["files"] if name.endswith(".mp3")}
    plan = svc.books.plan(book_id)
    assert len([s for s in plan["segments"] if OLD in s["text"]]) == 1

    response = client.patch(
        f"/v1/books/{book_id}", json={"edits": [{"chapter": 2, "find": OLD, "replace": NEW}]}, headers=ALICE
    )
    assert response.status_code == 202, response.data
    started = response.get_json()
    assert Book.model_validate(started)
    assert started["revision"] == 2 and started["served_revision"] == 1
    assert started["fix"]["edits"] == [{"edit": 1, "chapter": 2, "find": OLD, "matched": 1}]
    # While revision 2 renders: a second PATCH is a 409 saying what to do; revision 1 is still served.
    busy = client.patch(f"/v1/books/{book_id}", json={"speed": 1.1}, headers=ALICE)
    assert busy.status_code == 409 and "PATCH again" in busy.get_json()["error"]["message"]
    assert _file(client, book_id, "book.m4b") == old_m4b
    assert "revision 1" in (started["note"] or "")

    final = _wait(client, book_id, 2)
    assert final["state"] == "succeeded", final
    assert final["served_revision"] == 2 and final["manifest"]["revision"] == 2 and final["note"] is None
    # Model calls: only the edited sentence's segment(s) were synthesised for revision 2, once each ...
    new_plan = svc.books.plan(book_id)
    old_texts = {(s["c"], s["text"], s["boundary"], s["last"]) for s in plan["segments"]}
    edited = {s["i"] for s in new_plan["segments"] if (s["c"], s["text"], s["boundary"], s["last"]) not in old_texts}
    assert " ".join(new_plan["segments"][i]["text"] for i in sorted(edited)) == NEW
    renders = svc.books.renders(book_id)
    assert set(renders) == edited and set(renders.values()) == {1}, renders
    total = final["progress"]["segments_total"]
    assert final["segments_rendered"] == len(edited) and final["segments_reused"] == total - len(edited)
    # ... and the log agrees: after the revision event, only those segments rendered, the rest reused.
    events = [e for _, e in svc.books.events(book_id)]
    since = max(n for n, e in enumerate(events) if e["event"] == "revision")
    assert events[since]["reused"] == str(total - len(edited))
    assert [e["rendered"] for e in events[since:] if e["event"] == "segment"] == ["1"] * len(edited)

    # Chapters 1 and 3 are the same files; chapter 2's changed. In the M4B, decoded and cut at the
    # chapter marks, chapter 2 differs and chapters 1 and 3 sound the same.
    new_files = {name: _file(client, book_id, name) for name in final["manifest"]["files"] if name.endswith(".mp3")}
    names = sorted(old_files)
    assert sorted(new_files) == names
    assert [old_files[n] == new_files[n] for n in names] == [True, False, True]
    assert [c["revision"] for c in final["manifest"]["chapters"]] == [1, 2, 1]
    old_audio = _chapters_audio(old_m4b, book["manifest"])
    new_audio = _chapters_audio(_file(client, book_id, "book.m4b"), final["manifest"])
    assert len(old_audio) == len(new_audio) == 3
    for n in (0, 2):
        old, new = old_audio[n], new_audio[n]
        # Copied packets decode to the very same samples.
        assert len(old) == len(new) and np.array_equal(old, new), (n + 1, np.abs(old - new).max())
    assert len(new_audio[1]) > len(old_audio[1]) + 24_000 * 0.3  # the longer sentence
    assert not svc.storage.exists(svc.keys.book_file(book_id, "book.m4b")), "revision 1's files are gone"


def test_a_lexicon_fix_re_renders_only_the_segments_with_the_entry(keyed: Any, book: dict[str, Any]) -> None:
    client = keyed.test_client()
    svc = keyed.extensions["spool"]
    book_id = book["id"]
    base = _get(client, book_id)
    if base["revision"] < 2:
        pytest.skip("runs after the text fix (module order)")
    lexicon = client.post(
        "/v1/lexicons",
        json={"name": "fix", "entries": [{"grapheme": WORD, "alias": "Marigold"}]},
        headers=ALICE,
    )
    assert lexicon.status_code == 201, lexicon.data
    response = client.patch(f"/v1/books/{book_id}", json={"lexicon": lexicon.get_json()["id"]}, headers=ALICE)
    assert response.status_code == 202, response.data
    assert response.get_json()["fix"]["lexicon_changed"] is True
    final = _wait(client, book_id, base["revision"] + 1)
    assert final["state"] == "succeeded", final
    plan = svc.books.plan(book_id)
    with_word = {s["i"] for s in plan["segments"] if WORD in s["text"]}
    assert len(with_word) == 3
    renders = svc.books.renders(book_id)
    assert set(renders) == with_word and set(renders.values()) == {1}, renders
    assert final["segments_rendered"] == 3 and final["lexicon"] == lexicon.get_json()["id"]
    assert [c["revision"] for c in final["manifest"]["chapters"]] == [3, 3, 3]
