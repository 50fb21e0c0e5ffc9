"""Redis and storage keys: one builder, strict validation, no user text in a key."""

from __future__ import annotations

import pytest

from service.exceptions import InvalidKeyError
from service.keys import Keys, check_storage_key, is_id, new_id, storage_key


def test_new_ids_are_valid_and_unique() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(is_id(i) for i in ids)


def test_job_keys_share_the_prefix() -> None:
    keys = Keys("spool:")
    job_id = new_id()
    assert keys.job(job_id) == f"spool:job:{job_id}"
    assert keys.job_chunks(job_id) == f"spool:job:{job_id}:chunks"
    assert keys.job_events(job_id) == f"spool:job:{job_id}:events"
    assert keys.jobs_in_state("queued") == "spool:jobs:state:queued"
    assert keys.owner_jobs("alice") == "spool:owner:alice:jobs"
    assert keys.book_segments(job_id) == f"spool:book:{job_id}:segments"
    assert Keys("x:").job(job_id).startswith("x:job:")


@pytest.mark.parametrize("bad", ["", "../etc", "ABCDEF", "0" * 31, "0" * 33, "g" * 32, None, 5, "a/b"])
def test_bad_ids_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidKeyError):
        Keys().job(bad)  # type: ignore[arg-type]


def test_idempotency_key_is_hashed() -> None:
    key = Keys().idempotency("public", "../../weird key with spaces/and:colons")
    assert "weird" not in key and "/" not in key
    assert key == Keys().idempotency("public", "../../weird key with spaces/and:colons")
    with pytest.raises(InvalidKeyError):
        Keys().idempotency("bad owner", "k")


def test_storage_key_parts_are_validated() -> None:
    job_id = new_id()
    assert storage_key("jobs", job_id, "audio.mp3") == f"jobs/{job_id}/audio.mp3"
    assert Keys().job_audio(job_id, "wav") == f"jobs/{job_id}/audio.wav"
    for bad in ("..", "../x", "a/b", ".hidden", "", "x" * 129, "a..b", "sp ace", "/abs"):
        with pytest.raises(InvalidKeyError):
            storage_key("jobs", bad)
    with pytest.raises(InvalidKeyError):
        storage_key("etc", "passwd")
    with pytest.raises(InvalidKeyError):
        storage_key("jobs")


def test_check_storage_key_round_trips() -> None:
    key = storage_key("books", new_id(), "chapter-01.mp3")
    assert check_storage_key(key) == key
    for bad in ("jobs/../secret", "jobs//x", "/jobs/x", "jobs/x/", "nope/x"):
        with pytest.raises(InvalidKeyError):
            check_storage_key(bad)


def test_broker_queue_names_follow_kombu() -> None:
    assert Keys.broker_queue("cpu", 0) == "cpu"
    assert Keys.broker_queue("cpu", 3) == "cpu\x06\x163"
    assert Keys.broker_queue("gpu", 6, "p:") == "p:gpu\x06\x166"
