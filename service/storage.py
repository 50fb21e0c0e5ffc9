"""Result storage: one interface, a local directory backend and an S3-compatible backend.

Configuration (``SPOOL_STORAGE_URL``):

* ``var/storage``, ``/srv/spool`` or ``file:///srv/spool``: a local directory
  (created if missing). Downloads are served by the app; ``url()`` is None.
* ``s3://bucket/prefix?endpoint=http://minio:9000&region=us-east-1&create=1&public_endpoint=http://localhost:9000``:
  an S3-compatible bucket through boto3 with path-style addressing (MinIO, moto,
  AWS). ``endpoint`` may also come from ``SPOOL_S3_ENDPOINT_URL``, credentials from
  ``SPOOL_S3_ACCESS_KEY``/``SPOOL_S3_SECRET_KEY`` (or the ``AWS_*`` variables), and
  ``create=1`` (or ``SPOOL_S3_CREATE_BUCKET=1``) makes the bucket when it is missing.
  ``public_endpoint`` is the address clients use for presigned URLs when it differs
  from the one the servers use (compose: ``minio:9000`` inside, ``localhost:9000`` outside).

Keys are built by :mod:`service.keys` and checked again here, so no path outside the
storage root or prefix can be reached.

Outages are waited out: every operation but ``ping`` is retried with exponential backoff and
full jitter for ``SPOOL_STORAGE_RETRY_WINDOW`` seconds when the failure is one that waiting can
fix (connection refused or reset, timeouts, HTTP 5xx, throttling; for a directory: a full disk,
an I/O error, a stale network mount). Those raise :class:`StorageUnavailableError` once the window
is spent. A refusal (403 access denied, no such bucket, bad credentials, permission denied) is
not retried: it raises :class:`StorageError` at once with what to fix.
"""

from __future__ import annotations

import errno
import io
import logging
import mimetypes
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, TypeVar
from urllib.parse import parse_qs, unquote, urlparse

from config import defaults
from service.exceptions import StorageError, StorageKeyNotFoundError, StorageUnavailableError
from service.keys import check_storage_key, check_storage_prefix

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger("spool.storage")

_T = TypeVar("_T")

#: Bytes read per step when streaming an object.
CHUNK_SIZE = 256 * 1024

#: Part size of multipart uploads; with MULTIPART_CONCURRENCY it bounds the memory an upload holds.
MULTIPART_CHUNK = 8 * 1024 * 1024

#: Parts uploaded at once by a multipart upload.
MULTIPART_CONCURRENCY = 2

#: S3 error codes that mean "slow down" or "try again", whatever their HTTP status.
TRANSIENT_S3_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)

#: File-system errors a directory backend waits out (full disk, I/O error, stale or hung network mount).
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EAGAIN,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.ESTALE,
        errno.ENOTCONN,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often a storage operation is retried on an outage."""

    window: float = defaults.STORAGE_RETRY_WINDOW  # seconds from the first failure; 0: never retry
    base: float = defaults.STORAGE_RETRY_BASE
    max_delay: float = defaults.STORAGE_RETRY_MAX_DELAY

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): full jitter under a doubling cap."""
        return random.uniform(self.base / 2, min(self.max_delay, self.base * 2 ** (attempt - 1)))

    def run(
        self, action: str, key: str, fn: Callable[[], _T], before_retry: Callable[[], None] | None = None
    ) -> _T:
        """Call ``fn``; on StorageUnavailableError wait and call it again until the window is spent."""
        deadline: float | None = None
        attempt = 0
        while True:
            try:
                return fn()
            except StorageUnavailableError as exc:
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.window
                attempt += 1
                pause = self.delay(attempt)
                if now + pause > deadline:
                    if attempt == 1:
                        raise
                    raise StorageUnavailableError(
                        f"{exc.message.rstrip('.')}; still failing after {attempt} attempts over "
                        f"{self.window:g} s. Check that the storage is up, or raise "
                        "SPOOL_STORAGE_RETRY_WINDOW to wait longer.",
                        key=key,
                    ) from exc
                log.warning(
                    "storage %s of %r failed (%s); retry %d in %.1f s (%.0f s of the window left)",
                    action,
                    key,
                    exc.message,
                    attempt,
                    pause,
                    deadline - now,
                )
                time.sleep(pause)
                if before_retry is not None:
                    before_retry()


#: The policy of a backend built without one: no retries (tests, tools); settings give the real one.
NO_RETRY = RetryPolicy(window=0.0)

_EXTRA_TYPES = {
    ".opus": "audio/ogg",
    ".pcm": "audio/pcm",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".m4b": "audio/mp4",
    ".srt": "application/x-subrip",
    ".vtt": "text/vtt",
}


def guess_content_type(key: str) -> str:
    """Content type for a key from its extension (audio types first, then the mimetypes table)."""
    suffix = os.path.splitext(key)[1].lower()
    return _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


@dataclass(frozen=True)
class ObjectInfo:
    """Size, entity tag and content type of one stored object."""

    key: str
    size: int
    etag: str
    content_type: str


def _check_range(start: int, end: int | None) -> None:
    """Reject a negative or inverted byte range (end is inclusive)."""
    if start < 0 or (end is not None and end < start):
        raise StorageError(f"Invalid byte range {start}-{end}.")


class Storage:
    """Interface every storage backend implements; keys are ``area/id/file`` strings from service.keys."""

    #: Short backend name for /healthz and logs.
    kind = "abstract"

    #: Retries on outages (see :class:`RetryPolicy`); set from the settings by storage_from_settings.
    retry: RetryPolicy = NO_RETRY

    def put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> None:
        """Store ``data`` (bytes or a binary file object) under ``key``, replacing any old object whole.

        A file object is read from its current position; on a retry it is read again from there
        (a non-seekable one is first copied to a temporary file, so it can be).
        """
        if isinstance(data, (bytes, bytearray, memoryview)) or self.retry.window <= 0:
            self.retry.run("upload", key, lambda: self._put(key, data, content_type))
            return
        if not _seekable(data):
            with tempfile.TemporaryFile(prefix="spool-put-") as copy:
                shutil.copyfileobj(data, copy, CHUNK_SIZE)
                copy.seek(0)
                self.put(key, copy, content_type)
            return
        start = data.tell()
        self.retry.run(
            "upload", key, lambda: self._put(key, data, content_type), before_retry=lambda: data.seek(start)
        )

    def _put(self, key: str, data: bytes | BinaryIO, content_type: str | None) -> None:
        """One upload attempt (backends implement it)."""
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        """Return the whole object, or raise StorageKeyNotFoundError."""
        return self.retry.run("download", key, lambda: self._get(key))

    def _get(self, key: str) -> bytes:
        """One download attempt (backends implement it)."""
        raise NotImplementedError

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Return bytes ``start..end`` (inclusive; ``end=None`` means to the end of the object)."""
        return b"".join(self.iter_range(key, start, end))

    def iter_range(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Yield bytes ``start..end`` (inclusive) in pieces of at most ``chunk_size`` (opening is retried)."""
        return self.retry.run("download", key, lambda: self._iter_range(key, start, end, chunk_size))

    def _iter_range(self, key: str, start: int, end: int | None, chunk_size: int) -> Iterator[bytes]:
        """Open the range (backends implement it; the object is opened before this returns)."""
        raise NotImplementedError

    def open(self, key: str, start: int | None = None, end: int | None = None) -> IO[bytes]:
        """Return a readable binary file object over the object (or a byte range of it)."""
        return io.BufferedReader(_IterReader(self.iter_range(key, start or 0, end)))

    def exists(self, key: str) -> bool:
        """True when an object is stored under ``key``."""
        raise NotImplementedError

    def info(self, key: str) -> ObjectInfo:
        """Size, etag and content type of an object, or StorageKeyNotFoundError."""
        return self.retry.run("lookup", key, lambda: self._info(key))

    def _info(self, key: str) -> ObjectInfo:
        """One lookup attempt (backends implement it)."""
        raise NotImplementedError

    def size(self, key: str) -> int:
        """Size of an object in bytes."""
        return self.info(key).size

    def delete(self, key: str) -> None:
        """Remove an object; a missing one is not an error."""
        self.retry.run("delete", key, lambda: self._delete(key))

    def _delete(self, key: str) -> None:
        """One delete attempt (backends implement it)."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under a prefix and return how many there were."""
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str) -> list[str]:
        """Return every key under ``prefix``, sorted."""
        return self.retry.run("listing", prefix, lambda: self._list(prefix))

    def _list(self, prefix: str) -> list[str]:
        """One listing attempt (backends implement it)."""
        raise NotImplementedError

    def url(self, key: str, expires: int = 3600) -> str | None:
        """A URL a client can download the object from directly (presigned), or None if there is none."""
        return None

    def list_modified(self, prefix: str) -> list[tuple[str, float]]:
        """Every key under ``prefix`` with its last-modified time (seconds since the epoch), sorted."""
        raise NotImplementedError

    def ping(self) -> None:
        """Raise StorageError unless the storage can be read and written."""
        raise NotImplementedError


def _seekable(data: BinaryIO) -> bool:
    """True when a file object can be rewound for a retry."""
    try:
        return bool(data.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _os_error(exc: OSError, message: str) -> StorageError:
    """A file-system error as a storage error: one waiting can fix is StorageUnavailableError."""
    cls = StorageUnavailableError if exc.errno in TRANSIENT_ERRNOS else StorageError
    return cls(message)


class _KeepOpen:
    """A file object whose ``close`` does nothing: boto3's transfer closes what it uploads, even on failure."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._fileobj = fileobj

    def read(self, size: int = -1) -> bytes:
        return self._fileobj.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fileobj.seek(offset, whence)

    def tell(self) -> int:
        return self._fileobj.tell()

    def seekable(self) -> bool:
        return _seekable(self._fileobj)

    def close(self) -> None:
        """Leave the caller's file open (a retry reads it again)."""


class _IterReader(io.RawIOBase):
    """A raw binary stream over an iterator of byte strings."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


class LocalStorage(Storage):
    """Objects as files under a root directory; writes go through a temporary file and a rename."""

    kind = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_storage_key(key).split("/"))
        # check_storage_key already forbids traversal; this guards against symlinks placed in the root.
        if not path.resolve().is_relative_to(self.root):
            raise StorageError(f"Storage key {key!r} resolves outside the storage root.")
        return path

    def _put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> None:
        """Write the object to a temporary file beside it, then rename it into place."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    if isinstance(data, (bytes, bytearray, memoryview)):
                        out.write(data)
                    else:
                        while block := data.read(CHUNK_SIZE):
                            out.write(block)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise _os_error(exc, f"Cannot write {key!r} under {self.root}: {exc.strerror or exc}.") from exc

    def _get(self, key: str) -> bytes:
        """Read the whole file."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageKeyNotFoundError(f"No stored object {key!r}.", key=key) from None
        except OSError as exc:
            raise _os_error(exc, f"Cannot read {key!r}: {exc.strerror or exc}.") from exc

    def _iter_range(self, key: str, start: int, end: int | None, chunk_size: int) -> Iterator[bytes]:
        """Yield the byte range from the file, opened before the first byte is yielded."""
        _check_range(start, end)
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise StorageKeyNotFoundError(f"No stored object {key!r}.", key=key) from None
        except OSError as exc:
            raise _os_error(exc, f"Cannot read {key!r}: {exc.strerror or exc}.") from exc
        return self._iter_file(handle, start, end, chunk_size)

    @staticmethod
    def _iter_file(handle: BinaryIO, start: int, end: int | None, chunk_size: int) -> Iterator[bytes]:
        with handle:
            handle.seek(start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                block = handle.read(chunk_size if remaining is None else min(chunk_size, remaining))
                if not block:
                    return
                if remaining is not None:
                    remaining -= len(block)
                yield block

    def exists(self, key: str) -> bool:
        """True when the file exists."""
        return self._path(key).is_file()

    def _info(self, key: str) -> ObjectInfo:
        """Size from the file system; the etag is derived from size and modification time."""
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise StorageKeyNotFoundError(f"No stored object {key!r}.", key=key) from None
        return ObjectInfo(key, st.st_size, f"{st.st_size:x}-{st.st_mtime_ns:x}", guess_content_type(key))

    def _delete(self, key: str) -> None:
        """Remove the file and any directories it leaves empty."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def _list(self, prefix: str) -> list[str]:
        """Walk the directory tree under the prefix."""
        check_storage_prefix(prefix)
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def list_modified(self, prefix: str) -> list[tuple[str, float]]:
        """Keys under the prefix with their files' modification times."""
        listing = []
        for key in self.list(prefix):
            try:
                listing.append((key, self._path(key).stat().st_mtime))
            except FileNotFoundError:
                continue  # deleted meanwhile
        return listing

    def ping(self) -> None:
        """Check that the root exists and is writable."""
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise StorageError(f"Storage directory {self.root} is missing or not writable.")


class S3Storage(Storage):
    """Objects in an S3-compatible bucket (AWS, MinIO, moto) under an optional key prefix."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        public_endpoint_url: str | None = None,
        create_bucket: bool = False,
    ) -> None:
        import boto3
        from botocore.config import Config

        if not bucket:
            raise StorageError("S3 storage needs a bucket name: s3://BUCKET/prefix.")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},  # MinIO and moto serve buckets as paths
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        self._client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._presigner = (
            session.client("s3", endpoint_url=public_endpoint_url, config=config)
            if public_endpoint_url
            else self._client
        )
        if create_bucket:
            self.create_bucket()

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint_url!r})"

    def _name(self, key: str) -> str:
        return self.prefix + check_storage_key(key)

    def _error(self, exc: Exception, key: str, action: str) -> Exception:
        """Translate a botocore error into a Spool storage error (StorageUnavailableError if transient)."""
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        where = f"bucket {self.bucket!r} at {self.endpoint_url or 'AWS'}"
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("404", "NoSuchKey", "NotFound"):
                return StorageKeyNotFoundError(f"No stored object {key!r}.", key=key)
            if code == "InvalidRange":
                return StorageError(f"Byte range outside {key!r}.")
            if status >= 500 or status == 429 or code in TRANSIENT_S3_CODES:
                return StorageUnavailableError(f"S3 {action} of {key!r} failed: {code or status} ({where})")
            if code == "NoSuchBucket":
                return StorageError(
                    f"S3 {action} of {key!r} failed: {where} does not exist. Create it, "
                    "or set SPOOL_S3_CREATE_BUCKET=1 (or ?create=1 in SPOOL_STORAGE_URL)."
                )
            return StorageError(
                f"S3 {action} of {key!r} was refused: {code or exc} (HTTP {status or '?'}) by {where}. "
                "Retrying will not help: check the bucket name, the credentials "
                "(SPOOL_S3_ACCESS_KEY/SPOOL_S3_SECRET_KEY) and their permissions."
            )
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return StorageUnavailableError(f"S3 {action} of {key!r} failed: {exc}")
        return StorageError(f"S3 {action} of {key!r} failed: {exc}.")

    def create_bucket(self) -> None:
        """Create the bucket unless it exists already."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(f"Cannot reach bucket {self.bucket!r}: {exc}.") from exc
        except BotoCoreError as exc:
            raise StorageError(f"Cannot reach S3 endpoint {self.endpoint_url}: {exc}.") from exc
        try:
            self._client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageError(f"Cannot create bucket {self.bucket!r}: {code}.") from exc

    def _put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> None:
        """Upload in one request (bytes) or multipart (file objects); S3 replaces objects atomically."""
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._name(key)
        content_type = content_type or guess_content_type(key)
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                self._client.put_object(
                    Bucket=self.bucket, Key=name, Body=bytes(data), ContentType=content_type
                )
            else:
                # Parts of MULTIPART_CHUNK, MULTIPART_CONCURRENCY at a time: memory does not grow with size.
                transfer = TransferConfig(
                    multipart_threshold=MULTIPART_CHUNK,
                    multipart_chunksize=MULTIPART_CHUNK,
                    max_concurrency=MULTIPART_CONCURRENCY,
                )
                self._client.upload_fileobj(
                    _KeepOpen(data),
                    self.bucket,
                    name,
                    ExtraArgs={"ContentType": content_type},
                    Config=transfer,
                )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, key, "upload") from exc

    def _get(self, key: str) -> bytes:
        """Download the whole object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, key, "download") from exc

    def _iter_range(self, key: str, start: int, end: int | None, chunk_size: int) -> Iterator[bytes]:
        """One ranged GET, whose body is read in pieces as the caller consumes them."""
        from botocore.exceptions import BotoCoreError, ClientError

        _check_range(start, end)
        byte_range = f"bytes={start}-{'' if end is None else end}"
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self._name(key), Range=byte_range)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, key, "download") from exc
        return self._iter_body(body, chunk_size)

    @staticmethod
    def _iter_body(body: object, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(chunk_size)  # type: ignore[attr-defined]
        finally:
            body.close()  # type: ignore[attr-defined]

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        try:
            self.info(key)
        except StorageKeyNotFoundError:
            return False
        return True

    def _info(self, key: str) -> ObjectInfo:
        """HEAD the object for its size, etag and content type."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, key, "lookup") from exc
        return ObjectInfo(
            key,
            int(head["ContentLength"]),
            str(head.get("ETag", "")).strip('"'),
            head.get("ContentType") or guess_content_type(key),
        )

    def _delete(self, key: str) -> None:
        """Delete the object (S3 answers success for a missing one)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, key, "delete") from exc

    def _list(self, prefix: str) -> list[str]:
        """List every key under the prefix, page by page."""
        from botocore.exceptions import BotoCoreError, ClientError

        check_storage_prefix(prefix)
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, prefix, "listing") from exc
        return sorted(keys)

    def list_modified(self, prefix: str) -> list[tuple[str, float]]:
        """Keys under the prefix with their LastModified times, page by page."""
        from botocore.exceptions import BotoCoreError, ClientError

        check_storage_prefix(prefix)
        listing: list[tuple[str, float]] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                listing.extend(
                    (obj["Key"][len(self.prefix) :], obj["LastModified"].timestamp()) for obj in page.get("Contents", [])
                )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, prefix, "listing") from exc
        return sorted(listing)

    def url(self, key: str, expires: int = 3600) -> str | None:
        """A presigned GET URL valid for ``expires`` seconds."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._presigner.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._name(key)}, ExpiresIn=int(expires)
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, key, "presign") from exc

    def ping(self) -> None:
        """HEAD the bucket."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(
                f"S3 bucket {self.bucket!r} at {self.endpoint_url or 'AWS'} unreachable: {exc}."
            ) from exc


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def storage_from_url(
    url: str,
    *,
    endpoint_url: str | None = None,
    public_endpoint_url: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    create_bucket: bool = False,
    base_dir: str | os.PathLike[str] | None = None,
) -> Storage:
    """Build a storage backend from a ``file://``, plain path or ``s3://`` URL (see the module docstring)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return S3Storage(
            parsed.netloc,
            unquote(parsed.path).strip("/"),
            endpoint_url=query.get("endpoint") or endpoint_url,
            region=query.get("region") or region,
            access_key=access_key,
            secret_key=secret_key,
            public_endpoint_url=query.get("public_endpoint") or public_endpoint_url,
            create_bucket=create_bucket or _flag(query.get("create")),
        )
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif not parsed.scheme:
        path = Path(url)
    else:
        raise StorageError(
            f"Unsupported storage URL {url!r}: use a directory path, file:///path, or s3://bucket/prefix."
        )
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return LocalStorage(path)


def storage_from_settings(settings: Settings) -> Storage:
    """Build the storage backend the settings describe, retrying outages for their window."""
    storage = storage_from_url(
        settings.storage_url,
        endpoint_url=settings.s3_endpoint_url,
        public_endpoint_url=settings.s3_public_endpoint_url,
        region=settings.s3_region,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        create_bucket=settings.s3_create_bucket,
    )
    storage.retry = RetryPolicy(window=float(settings.storage_retry_window))
    return storage
