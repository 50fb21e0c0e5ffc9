"""Storage backends: the same behaviour from a local directory and from S3 over HTTP (moto)."""

from __future__ import annotations

import io
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from service.exceptions import InvalidKeyError, StorageError, StorageKeyNotFoundError
from service.keys import new_id, storage_key
from service.storage import LocalStorage, S3Storage, Storage, storage_from_url


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each backend in turn (S3 under a fresh prefix of the test bucket)."""
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Storage(
        endpoint.bucket,
        f"t-{uuid.uuid4().hex[:8]}",
        endpoint_url=endpoint.url,
        region=endpoint.region,
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key,
    )


def test_put_get_size_exists_delete(storage: Storage) -> None:
    key = storage_key("jobs", new_id(), "audio.wav")
    assert not storage.exists(key)
    storage.put(key, b"RIFF" + bytes(range(256)) * 10, content_type="audio/wav")
    assert storage.exists(key)
    assert storage.size(key) == 4 + 2560
    assert storage.get(key)[:4] == b"RIFF"
    info = storage.info(key)
    assert info.content_type == "audio/wav" and info.etag
    storage.delete(key)
    assert not storage.exists(key)
    storage.delete(key)  # deleting twice is fine
    with pytest.raises(StorageKeyNotFoundError):
        storage.get(key)


def test_ranges(storage: Storage) -> None:
    key = storage_key("jobs", new_id(), "audio.pcm")
    data = bytes(range(256)) * 4
    storage.put(key, data)
    assert storage.open_range(key, 0, 9) == data[:10]
    assert storage.open_range(key, 1000) == data[1000:]
    assert storage.open_range(key, 10, 10) == data[10:11]
    assert b"".join(storage.iter_range(key, 5, 700, chunk_size=64)) == data[5:701]
    assert storage.open(key, 3, 6).read() == data[3:7]


def test_put_file_object_and_replace(storage: Storage) -> None:
    key = storage_key("books", new_id(), "book.mp3")
    storage.put(key, io.BytesIO(b"first" * 100_000))
    storage.put(key, io.BytesIO(b"second"))
    assert storage.get(key) == b"second"


def test_list_under_prefix(storage: Storage) -> None:
    job_id = new_id()
    keys = [storage_key("jobs", job_id, name) for name in ("a.json", "audio.mp3", "stream.pcm")]
    for key in keys:
        storage.put(key, b"x")
    storage.put(storage_key("jobs", new_id(), "audio.mp3"), b"y")
    assert storage.list(f"jobs/{job_id}/") == sorted(keys)
    assert storage.delete_prefix(f"jobs/{job_id}/") == 3
    assert storage.list(f"jobs/{job_id}/") == []


def test_user_paths_never_reach_the_backend(storage: Storage) -> None:
    for bad in ("jobs/../../etc/passwd", "/etc/passwd", "jobs/x/../../y", "other/key"):
        with pytest.raises(InvalidKeyError):
            storage.put(bad, b"x")
        with pytest.raises(InvalidKeyError):
            storage.get(bad)


def test_ping(storage: Storage) -> None:
    storage.ping()


def test_local_has_no_url_and_s3_presigns(s3_endpoint: Any, tmp_path: Path) -> None:
    local = LocalStorage(tmp_path)
    key = storage_key("jobs", new_id(), "audio.mp3")
    local.put(key, b"abc")
    assert local.url(key) is None
    s3 = S3Storage(
        s3_endpoint.bucket,
        "presign",
        endpoint_url=s3_endpoint.url,
        region=s3_endpoint.region,
        access_key=s3_endpoint.access_key,
        secret_key=s3_endpoint.secret_key,
    )
    s3.put(key, b"presigned bytes", content_type="audio/mpeg")
    url = s3.url(key, expires=60)
    assert url and url.startswith(s3_endpoint.url)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"presigned bytes"


def test_s3_creates_a_missing_bucket(s3_endpoint: Any) -> None:
    bucket = f"made-{uuid.uuid4().hex[:8]}"
    store = storage_from_url(
        f"s3://{bucket}/p?endpoint={s3_endpoint.url}&create=1",
        region=s3_endpoint.region,
        access_key=s3_endpoint.access_key,
        secret_key=s3_endpoint.secret_key,
    )
    assert isinstance(store, S3Storage) and store.prefix == "p/"
    store.ping()
    missing = S3Storage(
        f"absent-{uuid.uuid4().hex[:8]}",
        endpoint_url=s3_endpoint.url,
        region=s3_endpoint.region,
        access_key=s3_endpoint.access_key,
        secret_key=s3_endpoint.secret_key,
    )
    with pytest.raises(StorageError):
        missing.ping()


def test_storage_urls(tmp_path: Path) -> None:
    assert isinstance(storage_from_url(f"file://{tmp_path}/a"), LocalStorage)
    assert storage_from_url(str(tmp_path / "b")).root == (tmp_path / "b").resolve()
    assert storage_from_url("rel", base_dir=tmp_path).root == (tmp_path / "rel").resolve()
    with pytest.raises(StorageError, match="Unsupported storage URL"):
        storage_from_url("ftp://host/x")
