"""The chunk stream: every rendered chunk of a job, in order, replayable by late and returning listeners.

Pub/sub alone is at-most-once, so each chunk is written to the job's Redis
Stream (``Keys.job_chunks``) as well as announced on its channel
(``Keys.job_events``). Entry ids are ``0-<seq+1>``, so a listener that wants
"everything from chunk N" asks ``XRANGE`` for ids from ``0-<N+1>`` and then
follows with a blocking ``XREAD``. The stream is bounded (``MAXLEN ~``) and
expires ``ttl`` seconds after its last write; before that, :meth:`ChunkStream.finish`
copies the canonical PCM and a chunk index to storage, so a finished job
replays from there once Redis has let go of it.

The stream is also bounded in bytes (``SPOOL_STREAM_MAX_BYTES``): past it the oldest chunks leave
Redis. The worker stores them first, as numbered *parts* under ``jobs/<id>/stream-parts/`` (PCM
plus a chunk index each; the info hash lists them), and the trim never deletes a chunk that is
not in a part yet. A late listener of the running job replays the parts chunk by chunk, then
goes on from Redis without a gap or an overlap; the parts are deleted once the job's whole
replay is stored (deleting the job, or the retention sweep, removes any left behind).

Entry fields: ``type`` (chunk, end, error), ``seq``, ``offset`` (samples of the
job before this entry), and for chunks ``rate``, ``samples``, ``pcm`` (s16le
mono) and ``meta`` (JSON: segment index, text span and text, chunk-relative
word timings, duration, speech_end); ``end`` carries the totals and ``error``
the error code and message in ``meta``.

Publishing is one Lua script (sequence number, offset, XADD, EXPIRE, PUBLISH in
one round trip), so a slow or absent listener never slows the worker.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import redis as redis_lib

from engine.audio import AUDIO_FORMATS, STREAM_FORMATS, StreamEncoder, normalize_format, to_pcm16, wav_header
from engine.exceptions import SpoolError
from service.exceptions import (
    ConflictError,
    InvalidRequestError,
    ListenerGoneError,
    ServiceError,
    StorageKeyNotFoundError,
)
from service.keys import Keys
from service.states import FINISHED

if TYPE_CHECKING:
    from service.storage import Storage

log = logging.getLogger("spool.stream")

#: Milliseconds one blocking XREAD waits before the reader re-checks the job's state.
READ_BLOCK_MS = 1_000

#: Entries fetched per XRANGE call while replaying (each holds a few hundred KB of PCM at most).
REPLAY_BATCH = 32

#: Seconds a reader waits without a new chunk before giving up on a job that is not finished.
IDLE_TIMEOUT = 900.0

#: Name of the canonical PCM and chunk index of a finished job in its storage area.
REPLAY_PCM = "stream.pcm"
REPLAY_INDEX = "chunks.json"

#: Version of the chunk index format written by :meth:`ChunkStream.finish`.
INDEX_VERSION = 1

#: Folder (under the job's storage area) of the parts: chunks stored before the byte bound trims them.
PARTS_DIR = "stream-parts"

# The byte-bound trim of the append script. Deletes the oldest chunk entries while the stream holds
# more than max_bytes PCM bytes, never the entry ``keep_id`` (the newest) and, when ``floor`` >= 0,
# never a chunk with seq >= floor (one not yet stored as a part: ChunkStream._store_part).
# ``trimmed_before`` in the info hash says which seq is the first still held.
_TRIM_LOOP = """
while max_bytes > 0 and total > max_bytes do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #first == 0 or first[1][1] == keep_id then break end
  local f = first[1][2]
  local h = {}
  for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
  if h['type'] ~= 'chunk' then break end
  if floor >= 0 and tonumber(h['seq']) >= floor then break end
  redis.call('XDEL', KEYS[1], first[1][1])
  total = redis.call('HINCRBY', KEYS[3], 'bytes', -2 * tonumber(h['samples']))
  redis.call('HSET', KEYS[3], 'trimmed_before', tonumber(h['seq']) + 1)
end
"""

# KEYS: stream, channel, info hash (PCM bytes held, first seq kept, stored parts).
# ARGV: type, maxlen, ttl, rate, samples, pcm, meta json, wake-up json tail (starts with ',' or '}'),
# max bytes (0: no byte bound), trim floor (-1: none; see _TRIM_LOOP).
# Returns {seq, offset, 1, bytes held, first seq held} when appended; {seq, offset, 0, 0, 0} when the
# stream was already closed by an end or error entry (that entry's seq and offset), so finish and fail
# are idempotent.
_APPEND = """
local seq, offset = 0, 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local f = last[1][2]
  local h = {}
  for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
  if h['type'] ~= 'chunk' then
    return {tonumber(h['seq']), tonumber(h['offset']), 0, 0, 0}
  end
  seq = tonumber(h['seq']) + 1
  offset = tonumber(h['offset']) + tonumber(h['samples'])
end
local id = '0-' .. string.format('%d', seq + 1)
local kind = ARGV[1]
local total = 0
if kind == 'chunk' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id, 'type', kind, 'seq', seq, 'offset', offset,
             'rate', ARGV[4], 'samples', ARGV[5], 'pcm', ARGV[6], 'meta', ARGV[7])
  total = redis.call('HINCRBY', KEYS[3], 'bytes', 2 * tonumber(ARGV[5]))
  local max_bytes, floor, keep_id = tonumber(ARGV[9]), tonumber(ARGV[10]), id
""" + _TRIM_LOOP + """
else
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id, 'type', kind, 'seq', seq, 'offset', offset,
             'rate', ARGV[4], 'samples', '0', 'meta', ARGV[7])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
local start_time = 0
if tonumber(ARGV[4]) > 0 then start_time = offset / tonumber(ARGV[4]) end
redis.call('PUBLISH', KEYS[2], '{"type":"' .. kind .. '","seq":' .. string.format('%d', seq) ..
           ',"offset":' .. string.format('%d', offset) .. ',"start_time":' ..
           string.format('%.6f', start_time) .. ARGV[8])
return {seq, offset, 1, total, tonumber(redis.call('HGET', KEYS[3], 'trimmed_before') or '0')}
"""


class StreamClosedError(ConflictError):
    """A chunk was published to a stream that already ended; reset it before rendering the job again."""

    code = "stream_closed"


class StreamGapError(ServiceError):
    """Chunks a listener asked for have left the bounded live buffer."""

    code = "stream_trimmed"
    http_status = 410


@dataclass(frozen=True)
class StreamEvent:
    """One entry of a job's chunk stream: a chunk of audio, the end (with totals), or an error."""

    type: str
    seq: int
    offset: int = 0
    rate: int = 0
    pcm: bytes = b""
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: Samples in the chunk when ``pcm`` was left out (a replay without audio); -1: count ``pcm``.
    sample_count: int = -1

    @property
    def samples(self) -> int:
        """Number of audio samples in the chunk (0 for end and error)."""
        return self.sample_count if self.sample_count >= 0 else len(self.pcm) // 2

    @property
    def start_time(self) -> float:
        """Seconds of the job's audio before this event."""
        return self.offset / self.rate if self.rate else 0.0

    @property
    def duration(self) -> float:
        """Seconds of audio in the chunk."""
        return self.samples / self.rate if self.rate else 0.0

    def float_samples(self) -> np.ndarray:
        """The chunk's audio as float32 in [-1, 1]."""
        return np.frombuffer(self.pcm, dtype="<i2").astype(np.float32) / 32767.0

    def caption(self) -> dict[str, Any]:
        """What a player needs to show the chunk: sequence, text span, times on the job's timeline."""
        return chunk_caption(self.seq, self.offset, self.rate, self.samples, self.meta)


def chunk_caption(seq: int, offset: int, rate: int, samples: int, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A chunk's caption payload with word times moved from the chunk's timeline to the job's."""
    start = offset / rate if rate else 0.0
    words = [
        {
            "word": w.get("word", ""),
            "start": round(start + float(w.get("start", 0.0)), 3),
            "end": round(start + float(w.get("end", 0.0)), 3),
        }
        for w in (meta.get("words") or [])
    ]
    segment = meta.get("segment") or {}
    duration = samples / rate if rate else float(meta.get("duration", 0.0))
    return {
        "seq": seq,
        "segment": {
            "index": segment.get("index", seq),
            "start": segment.get("start"),
            "end": segment.get("end"),
            "text": segment.get("text", ""),
        },
        "offset": offset,
        "samples": samples,
        "rate": rate,
        "start_time": round(start, 3),
        "end_time": round(start + duration, 3),
        "speech_end": round(start + float(meta.get("speech_end", duration)), 3),
        "duration": round(duration, 3),
        "words": words,
    }


def chunk_meta(chunk: Any) -> dict[str, Any]:
    """The JSON metadata stored with a chunk: its segment, chunk-relative word timings and durations."""
    segment = chunk.segment
    return {
        "segment": {
            "index": int(getattr(segment, "index", getattr(chunk, "index", 0))),
            "start": int(segment.start),
            "end": int(segment.end),
            "text": str(segment.text),
        },
        "words": [
            {"word": str(w.word), "start": round(float(w.start), 4), "end": round(float(w.end), 4)}
            for w in (chunk.words or [])
        ],
        "duration": round(float(chunk.duration), 4),
        "speech_end": round(float(chunk.speech_end), 4),
        "is_last": bool(getattr(chunk, "is_last", False)),
    }


def _text(value: bytes | str | None) -> str:
    """Decode a Redis reply field."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _event_from_entry(fields: Mapping[bytes, bytes]) -> StreamEvent:
    """Build a StreamEvent from the raw fields of a stream entry."""
    meta_raw = fields.get(b"meta")
    try:
        meta = json.loads(meta_raw) if meta_raw else {}
    except ValueError:
        meta = {}
    return StreamEvent(
        type=_text(fields.get(b"type")) or "chunk",
        seq=int(fields.get(b"seq", b"0")),
        offset=int(fields.get(b"offset", b"0")),
        rate=int(fields.get(b"rate", b"0") or 0),
        pcm=bytes(fields.get(b"pcm", b"")),
        meta=meta,
        sample_count=int(fields.get(b"samples", b"-1") or -1),
    )


def _error_meta(error: BaseException | str) -> dict[str, str]:
    """Code and message of an error, for the stream's error entry."""
    if isinstance(error, SpoolError):
        return {"code": error.code, "message": error.message}
    if isinstance(error, BaseException):
        return {"code": "internal_error", "message": f"{type(error).__name__}: {error}"}
    return {"code": "job_failed", "message": str(error)}


class _Recording:
    """A job's chunks as this process publishes them: PCM spooled to disk past 16 MB, and the index rows.

    Also which of them are stored as parts (``durable``: chunks 0..durable-1) and the parts' list.
    """

    def __init__(self) -> None:
        self.spool = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115 (closed by close())
        self.chunks: list[dict[str, Any]] = []
        self.rate = 0
        self.bytes = 0
        self.durable = 0
        self.parts: list[dict[str, int]] = []
        #: False once a part could not be stored: the bound then trims as if there were no parts.
        self.parts_ok = True
        #: What the live stream held after the last append: PCM bytes, and the first seq still there.
        self.held = 0
        self.first_held = 0

    def needs_part(self, size: int, max_bytes: int) -> bool:
        """True when appending ``size`` bytes would make the bound trim a chunk not yet in a part."""
        total = self.held + size
        seq = self.first_held
        while total > max_bytes and seq < len(self.chunks):
            if seq >= self.durable:
                return True
            total -= self.chunks[seq]["bytes"]
            seq += 1
        return False

    def add(self, seq: int, offset: int, rate: int, pcm: bytes, meta: Mapping[str, Any]) -> bool:
        """Append one chunk; False when it is not the next in order (the recording is then useless)."""
        if seq != len(self.chunks):
            return False
        self.spool.seek(0, 2)
        self.spool.write(pcm)
        self.rate = self.rate or rate
        self.chunks.append(
            {"seq": seq, "offset": offset, "rate": rate, "byte_offset": self.bytes, "bytes": len(pcm), "meta": dict(meta)}
        )
        self.bytes += len(pcm)
        return True

    def read(self, start: int, end: int) -> bytes:
        """PCM bytes ``start`` to ``end`` (exclusive) of what was recorded."""
        self.spool.seek(start)
        data = self.spool.read(end - start)
        self.spool.seek(0, 2)
        return data

    def store(self, storage: Storage, key: str) -> tuple[list[dict[str, Any]], int, int]:
        """Upload the PCM under ``key``; return (index rows, sample rate, bytes)."""
        self.spool.seek(0)
        storage.put(key, self.spool, content_type=AUDIO_FORMATS["pcm"].content_type)
        return self.chunks, self.rate, self.bytes

    def close(self) -> None:
        """Discard the spooled PCM."""
        self.spool.close()


def _replay_rows(
    storage: Storage, pcm_key: str, rows: list[dict[str, Any]], audio: bool
) -> Iterator[StreamEvent]:
    """Chunk events of index rows over one stored PCM object, read piece by piece (or without PCM)."""
    if not rows:
        return
    if not audio:
        for entry in rows:
            yield StreamEvent(
                "chunk", entry["seq"], entry["offset"], entry["rate"], b"", entry["meta"], entry["bytes"] // 2
            )
        return
    first = rows[0]["byte_offset"]
    last = rows[-1]["byte_offset"] + rows[-1]["bytes"] - 1
    buffer = bytearray()
    pieces = storage.iter_range(pcm_key, first, last) if last >= first else iter(())
    position = first
    for entry in rows:
        end = entry["byte_offset"] + entry["bytes"]
        while position + len(buffer) < end:
            piece = next(pieces, None)
            if piece is None:
                break
            buffer += piece
        take = end - position
        pcm = bytes(buffer[:take])
        del buffer[:take]
        position = end
        yield StreamEvent("chunk", entry["seq"], entry["offset"], entry["rate"], pcm, entry["meta"])


class ChunkStream:
    """Publishes a job's chunks to Redis and replays them (live, or from storage once finished)."""

    def __init__(
        self,
        redis: redis_lib.Redis,
        keys: Keys,
        *,
        maxlen: int = 10_000,
        ttl: int = 3600,
        block_ms: int = READ_BLOCK_MS,
        max_bytes: int = 0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = int(maxlen)
        #: PCM bytes one job's live stream keeps (0: bounded by entries only); see ``_APPEND``.
        self.max_bytes = int(max_bytes)
        #: Jobs this process is publishing: their chunks as written, so the stored replay is whole
        #: however much the byte bound trimmed from Redis.
        self._recordings: dict[str, _Recording] = {}
        self.ttl = int(ttl)
        self.block_ms = int(block_ms)
        self._append = redis.register_script(_APPEND)

    # Writing (the worker) ------------------------------------------------------------------------
    def _write(
        self,
        job_id: str,
        kind: str,
        *,
        rate: int = 0,
        pcm: bytes = b"",
        meta: Mapping[str, Any],
        wake: Mapping[str, Any],
        floor: int = -1,
    ) -> tuple[int, int, bool, int, int]:
        """Append one entry and publish its wake-up; returns (seq, offset, appended, bytes held, first seq held)."""
        tail = json.dumps(dict(wake), separators=(",", ":"))
        # The script writes the opening fields (type, seq, offset, start_time); the rest follows them.
        tail = "}" if tail == "{}" else "," + tail[1:]
        seq, offset, appended, held, first_held = self._append(
            keys=[self.keys.job_chunks(job_id), self.keys.job_events(job_id), self.keys.job_chunks_info(job_id)],
            args=[
                kind,
                self.maxlen,
                self.ttl,
                int(rate),
                len(pcm) // 2,
                pcm,
                json.dumps(dict(meta), separators=(",", ":"), ensure_ascii=False),
                tail,
                self.max_bytes,
                int(floor),
            ],
        )
        return int(seq), int(offset), bool(appended), int(held), int(first_held)

    def publish(self, job_id: str, chunk: Any, storage: Storage | None = None) -> int:
        """Append a rendered chunk (an ``engine.AudioChunk``) and wake listeners; returns its seq.

        With ``storage`` and a byte bound, chunks the append would trim are first stored as a part,
        so a late listener of the running job replays them (see :meth:`_store_part`).
        """
        meta = chunk_meta(chunk)
        pcm = to_pcm16(chunk.samples)
        rate = int(chunk.sample_rate)
        wake = {
            "rate": rate,
            "samples": len(pcm) // 2,
            "duration": round(len(pcm) / 2 / rate, 4),
            "segment": meta["segment"],
            "words": meta["words"],
            "speech_end": meta["speech_end"],
        }
        recording = self._recordings.get(job_id)
        floor = -1  # without parts the bound trims any chunk (a late listener then gets a 410)
        if storage is not None and self.max_bytes > 0 and recording is not None and recording.parts_ok:
            if recording.needs_part(len(pcm), self.max_bytes):
                self._store_part(job_id, recording, storage)
            floor = recording.durable if recording.parts_ok else -1
        seq, offset, appended, held, first_held = self._write(
            job_id, "chunk", rate=rate, pcm=pcm, meta=meta, wake=wake, floor=floor
        )
        if not appended:
            raise StreamClosedError(
                f"The chunk stream of job {job_id} already ended (entry {seq}); call reset() before "
                "rendering the job again.",
                job_id=job_id,
            )
        if recording is None and seq == 0:
            recording = self._recordings[job_id] = _Recording()
        if recording is not None:
            if not recording.add(seq, offset, rate, pcm, meta):
                self._drop_recording(job_id)  # out of order: finish() falls back to the Redis stream
            else:
                recording.held, recording.first_held = held, first_held
        return seq

    def part_keys(self, job_id: str, number: int) -> tuple[str, str]:
        """Storage keys of part ``number`` of a running job: its PCM and its chunk index."""
        name = f"{number:05d}"
        return (
            self.keys.storage_key("jobs", job_id, PARTS_DIR, f"{name}.pcm"),
            self.keys.storage_key("jobs", job_id, PARTS_DIR, f"{name}.json"),
        )

    def parts_prefix(self, job_id: str) -> str:
        """Storage prefix of a job's parts."""
        return self.keys.storage_key("jobs", job_id, PARTS_DIR) + "/"

    def _store_part(self, job_id: str, recording: _Recording, storage: Storage) -> None:
        """Store every chunk not yet in a part as the next part, and list it, before the bound trims them.

        Called just before an append that would otherwise have to trim a chunk not yet stored, so
        each part holds about the bound's worth of chunks and Redis never holds more than the bound.
        If storage fails, parts stop for this job and the bound trims freely (late listeners get 410).
        """
        rows = recording.chunks[recording.durable :]
        if not rows:
            return
        start = rows[0]["byte_offset"]
        end = rows[-1]["byte_offset"] + rows[-1]["bytes"]
        number = len(recording.parts)
        pcm_key, index_key = self.part_keys(job_id, number)
        index = {
            "version": INDEX_VERSION,
            "job_id": job_id,
            "part": number,
            "first": rows[0]["seq"],
            "end": rows[-1]["seq"] + 1,
            "bytes": end - start,
            "chunks": [{**row, "byte_offset": row["byte_offset"] - start} for row in rows],
        }
        try:
            storage.put(pcm_key, recording.read(start, end), content_type=AUDIO_FORMATS["pcm"].content_type)
            storage.put(index_key, json.dumps(index, ensure_ascii=False).encode(), content_type="application/json")
        except (SpoolError, OSError):
            log.warning("job %s: could not store stream part %d; late listeners may get a gap", job_id, number, exc_info=True)
            recording.parts_ok = False
            return
        recording.parts.append({"n": number, "first": index["first"], "end": index["end"]})
        recording.durable = index["end"]
        # Listed before the append that trims its chunks, so a reader who sees them trimmed finds the part.
        self.redis.hset(
            self.keys.job_chunks_info(job_id),
            mapping={"parts": json.dumps(recording.parts, separators=(",", ":")), "durable_before": recording.durable},
        )

    def _remove_parts(self, job_id: str, storage: Storage) -> None:
        """Delete a finished job's parts (its whole replay is stored now) and forget them."""
        try:
            storage.delete_prefix(self.parts_prefix(job_id))
            self.redis.hdel(self.keys.job_chunks_info(job_id), "parts", "durable_before")
        except (SpoolError, OSError, redis_lib.RedisError):
            # Deleting the job (or the retention sweep) removes them later.
            log.warning("job %s: could not remove its stream parts", job_id, exc_info=True)

    def finish(self, job_id: str, storage: Storage, totals: Mapping[str, Any]) -> int:
        """Store the canonical replay (PCM and chunk index), append the end entry, drop the parts; returns its seq."""
        recording = self._recordings.get(job_id)
        had_parts = recording is not None and bool(recording.parts)
        try:
            self.save_replay(job_id, storage)
        except (SpoolError, OSError, redis_lib.RedisError):
            # Live listeners still get every chunk; only late ones (after the stream expires) lose out.
            log.exception("could not store the replay of job %s", job_id)
            had_parts = False  # the parts are all a late listener has now
        finally:
            self._drop_recording(job_id)
        seq, _, _, _, _ = self._write(
            job_id,
            "end",
            rate=int(totals.get("sample_rate") or 0),
            meta=dict(totals),
            wake={"totals": totals},
        )
        if had_parts:
            # After the end entry: a listener still reading parts finds the whole replay (see events()).
            self._remove_parts(job_id, storage)
        return seq

    def fail(self, job_id: str, error: BaseException | str) -> int:
        """Append an error entry (the job failed or was cancelled) and wake listeners; returns its seq."""
        meta = _error_meta(error)
        self._drop_recording(job_id)
        seq, _, _, _, _ = self._write(job_id, "error", meta=meta, wake={"error": meta})
        return seq

    def reset(self, job_id: str) -> None:
        """Delete the job's stream so a retried render starts from seq 0."""
        self._drop_recording(job_id)
        self.redis.delete(self.keys.job_chunks(job_id), self.keys.job_chunks_info(job_id))

    def _drop_recording(self, job_id: str) -> None:
        recording = self._recordings.pop(job_id, None)
        if recording is not None:
            recording.close()

    def held_bytes(self, job_id: str) -> int:
        """PCM bytes the job's live stream holds now (what ``SPOOL_STREAM_MAX_BYTES`` bounds)."""
        return int(self.redis.hget(self.keys.job_chunks_info(job_id), "bytes") or 0)

    def trimmed_before(self, job_id: str) -> int:
        """First chunk seq the live stream still holds after byte trimming (0: nothing trimmed)."""
        return int(self.redis.hget(self.keys.job_chunks_info(job_id), "trimmed_before") or 0)

    def parts(self, job_id: str) -> list[dict[str, int]]:
        """The parts a running job's chunks are stored in so far: ``{n, first, end}`` each, in order."""
        raw = self.redis.hget(self.keys.job_chunks_info(job_id), "parts")
        try:
            parts = json.loads(raw) if raw else []
        except ValueError:
            return []
        return parts if isinstance(parts, list) else []

    def _parts_cover(self, job_id: str, from_seq: int, first_held: int) -> bool:
        """True when stored parts hold every chunk from ``from_seq`` up to ``first_held``."""
        at = from_seq
        for part in self.parts(job_id):
            if part["first"] <= at < part["end"]:
                at = part["end"]
        return at >= first_held

    def check_replayable(self, job_id: str, from_seq: int, state: str) -> None:
        """Raise StreamGapError (410) when chunks from ``from_seq`` were trimmed and nothing can replay them.

        A succeeded job replays trimmed chunks from storage, a running one from its stored parts (the
        worker stores chunks before the byte bound trims them); only when that failed, or the stream
        was trimmed by its entry count, is the late listener told where the live stream starts.
        """
        if state == "succeeded":
            return
        first = self.trimmed_before(job_id)
        if from_seq >= first or self._parts_cover(job_id, from_seq, first):
            return
        closing = self._closing_entry(self.keys.job_chunks(job_id))
        if closing is not None and closing.type == "end":
            return  # finished a moment ago: the whole replay is stored
        raise StreamGapError(
            f"Chunks {from_seq}..{first - 1} of job {job_id} have left the live buffer (SPOOL_STREAM_MAX_BYTES="
            f"{self.max_bytes}); listen from={first} to follow it live, or fetch /v1/jobs/{job_id}/audio "
            "once it has succeeded (the stream then replays from storage).",
            job_id=job_id,
            first_available=first,
        )

    # Replay to storage ---------------------------------------------------------------------------
    def replay_keys(self, job_id: str) -> tuple[str, str]:
        """Storage keys of a job's canonical PCM and its chunk index."""
        return (
            self.keys.storage_key("jobs", job_id, REPLAY_PCM),
            self.keys.storage_key("jobs", job_id, REPLAY_INDEX),
        )

    def save_replay(self, job_id: str, storage: Storage) -> dict[str, Any]:
        """Copy every chunk of the live stream to storage: ``stream.pcm`` and the ``chunks.json`` index."""
        pcm_key, index_key = self.replay_keys(job_id)
        recording = self._recordings.get(job_id)
        if recording is not None:
            return self._store_index(job_id, storage, recording.store(storage, pcm_key))
        chunks: list[dict[str, Any]] = []
        rate = 0
        byte_offset = 0
        # Spill to disk past a few MB: an hour of speech is ~170 MB of PCM.
        with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as spool:
            for event in self._range(job_id, 0):
                if event.type != "chunk":
                    break
                if event.seq != len(chunks):
                    raise StreamGapError(
                        f"Job {job_id}'s stream lost chunks {len(chunks)}..{event.seq - 1} to its bounds "
                        "and this process did not record them; raise SPOOL_STREAM_MAXLEN or "
                        "SPOOL_STREAM_MAX_BYTES, or finish the job in the process that rendered it.",
                        job_id=job_id,
                    )
                spool.write(event.pcm)
                rate = rate or event.rate
                chunks.append(
                    {
                        "seq": event.seq,
                        "offset": event.offset,
                        "rate": event.rate,
                        "byte_offset": byte_offset,
                        "bytes": len(event.pcm),
                        "meta": dict(event.meta),
                    }
                )
                byte_offset += len(event.pcm)
            spool.seek(0)
            storage.put(pcm_key, spool, content_type=AUDIO_FORMATS["pcm"].content_type)
        return self._store_index(job_id, storage, (chunks, rate, byte_offset))

    def _store_index(
        self, job_id: str, storage: Storage, stored: tuple[list[dict[str, Any]], int, int]
    ) -> dict[str, Any]:
        """Write the chunk index of a stored replay (chunks, sample rate, total PCM bytes)."""
        chunks, rate, byte_offset = stored
        _, index_key = self.replay_keys(job_id)
        index = {
            "version": INDEX_VERSION,
            "job_id": job_id,
            "sample_rate": rate,
            "encoding": "s16le",
            "channels": 1,
            "bytes": byte_offset,
            "samples": byte_offset // 2,
            "chunks": chunks,
        }
        storage.put(
            index_key, json.dumps(index, ensure_ascii=False).encode(), content_type="application/json"
        )
        return index

    def load_index(self, job_id: str, storage: Storage) -> dict[str, Any] | None:
        """The stored chunk index of a finished job, or None when there is none."""
        _, index_key = self.replay_keys(job_id)
        if not storage.exists(index_key):
            return None
        index = json.loads(storage.get(index_key))
        if index.get("version") != INDEX_VERSION:
            log.warning(
                "job %s: chunk index version %r is not %d", job_id, index.get("version"), INDEX_VERSION
            )
            return None
        return index

    def _replay_stored(
        self, job_id: str, storage: Storage, from_seq: int, job_state: Mapping[str, str], audio: bool = True
    ) -> Iterator[StreamEvent]:
        """Replay a finished job from storage: its chunks from ``from_seq``, then the end."""
        index = self.load_index(job_id, storage)
        if index is None:
            yield self._job_error(
                job_id,
                job_state,
                "replay_missing",
                f"Job {job_id} finished, but its chunk stream has expired and no replay is stored; "
                f"download the whole file from /v1/jobs/{job_id}/audio instead.",
            )
            return
        chunks = [c for c in index["chunks"] if c["seq"] >= from_seq]
        pcm_key, _ = self.replay_keys(job_id)
        yield from _replay_rows(storage, pcm_key, chunks, audio)
        total_seq = len(index["chunks"])
        totals = {
            "segments": total_seq,
            "samples": index.get("samples", 0),
            "sample_rate": index.get("sample_rate", 0),
            "duration": (index.get("samples", 0) / index["sample_rate"]) if index.get("sample_rate") else 0.0,
            "replayed_from": "storage",
        }
        yield StreamEvent("end", total_seq, index.get("samples", 0), index.get("sample_rate", 0), b"", totals)

    def _replay_parts(
        self, job_id: str, storage: Storage, from_seq: int, audio: bool = True
    ) -> Generator[StreamEvent, None, int]:
        """Replay a running job's stored parts from ``from_seq``, one chunk at a time; return the next seq.

        Stops early (returning how far it got) at a part that is gone: the job finished and removed
        its parts, and its whole replay is stored by then.
        """
        next_seq = from_seq
        for part in self.parts(job_id):
            if part["end"] <= next_seq:
                continue
            if part["first"] > next_seq:
                break
            pcm_key, index_key = self.part_keys(job_id, int(part["n"]))
            try:
                index = json.loads(storage.get(index_key))
                rows = [row for row in index["chunks"] if row["seq"] >= next_seq]
                for event in _replay_rows(storage, pcm_key, rows, audio):
                    yield event
                    next_seq = event.seq + 1
            except StorageKeyNotFoundError:
                return next_seq
        return next_seq

    # Reading -------------------------------------------------------------------------------------
    def _range(self, job_id: str, from_seq: int, count: int | None = None) -> Iterator[StreamEvent]:
        """Entries with seq >= ``from_seq`` now in the stream, read in batches."""
        key = self.keys.job_chunks(job_id)
        start = f"0-{from_seq + 1}"
        while True:
            batch = self.redis.xrange(key, min=start, max="+", count=REPLAY_BATCH)
            for _, fields in batch:
                yield _event_from_entry(fields)
            if len(batch) < REPLAY_BATCH:
                return
            last_id = _text(batch[-1][0])
            start = "(" + last_id

    def job_state(self, job_id: str) -> dict[str, str]:
        """State, error code and message of the job ({} when it does not exist)."""
        values = self.redis.hmget(self.keys.job(job_id), "state", "error_code", "error_message")
        if values[0] is None:
            return {}
        return {"state": _text(values[0]), "error_code": _text(values[1]), "error_message": _text(values[2])}

    @staticmethod
    def _job_error(job_id: str, job_state: Mapping[str, str], code: str, message: str) -> StreamEvent:
        """An error event for a job that ended without an error entry in its stream."""
        return StreamEvent(
            "error", -1, meta={"code": code, "message": message, "job_id": job_id, **job_state}
        )

    def _ended_without_stream(
        self,
        job_id: str,
        job_state: Mapping[str, str],
        storage: Storage | None,
        next_seq: int,
        audio: bool = True,
    ) -> Iterator[StreamEvent]:
        """Events for a finished job whose live stream is gone (expired, or never written)."""
        state = job_state.get("state")
        if state == "succeeded":
            if storage is None:
                yield self._job_error(
                    job_id,
                    job_state,
                    "replay_unavailable",
                    f"Job {job_id}'s live stream has expired; download it from /v1/jobs/{job_id}/audio.",
                )
                return
            yield from self._replay_stored(job_id, storage, next_seq, job_state, audio)
            return
        if state == "cancelled":
            yield self._job_error(job_id, job_state, "cancelled", f"Job {job_id} was cancelled.")
            return
        code = job_state.get("error_code") or "job_failed"
        message = job_state.get("error_message") or f"Job {job_id} failed."
        yield self._job_error(job_id, job_state, code, message)

    def events(
        self,
        job_id: str,
        from_seq: int = 0,
        *,
        follow: bool = True,
        timeout: float = IDLE_TIMEOUT,
        storage: Storage | None = None,
        audio: bool = True,
        gone: Callable[[], bool] | None = None,
    ) -> Iterator[StreamEvent]:
        """Yield the job's chunks from ``from_seq`` on, then ``end`` or ``error``; waits for live ones.

        Replays what the stream holds, then follows it with blocking reads, re-checking the job's
        state between reads so a job that fails, is cancelled or vanishes ends the iteration. Chunks
        the byte bound trimmed come from ``storage``: the running job's parts, or a finished job's
        replay (also once its stream has expired). With ``follow=False`` only what is there now is
        yielded. ``timeout`` bounds the wait for the next chunk (an ``error`` event with code
        ``stream_timeout`` ends the iteration then). ``audio=False`` skips reading PCM from storage
        (captions only; events from Redis carry their PCM regardless). ``gone`` is asked before each
        wait: when it says the listener has hung up, ListenerGoneError ends the iteration.
        """
        if from_seq < 0:
            raise InvalidRequestError(f"from must be 0 or more, got {from_seq}.", field="from")
        key = self.keys.job_chunks(job_id)
        next_seq = from_seq
        last_progress = time.monotonic()
        grace_used = False
        while True:
            gap_at = -1
            for event in self._range(job_id, next_seq):
                if event.seq > next_seq:
                    gap_at = event.seq
                    break
                yield event
                if event.type != "chunk":
                    return
                next_seq = event.seq + 1
                last_progress = time.monotonic()
            if gap_at >= 0:
                # Trimmed from the live buffer: from the running job's parts, then back to Redis (which
                # may have trimmed further meanwhile: the next round replays the newer parts).
                job_state = self.job_state(job_id)
                succeeded = job_state.get("state") == "succeeded"
                if storage is not None and not succeeded:
                    resumed = yield from self._replay_parts(job_id, storage, next_seq, audio)
                    if resumed > next_seq:
                        next_seq = resumed
                        last_progress = time.monotonic()
                        continue
                closing = self._closing_entry(key)
                if storage is not None and (succeeded or (closing is not None and closing.type == "end")):
                    # The job's whole replay is stored (parts are removed after it is).
                    yield from self._replay_stored(job_id, storage, next_seq, job_state, audio)
                    return
                yield self._gap_error(job_id, next_seq, gap_at)
                return
            closing = self._closing_entry(key)
            if closing is not None and closing.seq < next_seq:
                # Asked for chunks past the end (or resumed after the last one): only the end is left.
                yield closing
                return
            job_state = self.job_state(job_id)
            if not job_state:
                yield self._job_error(
                    job_id, job_state, "job_not_found", f"Job {job_id} no longer exists (it expired)."
                )
                return
            terminal = job_state["state"] in FINISHED
            if terminal and (grace_used or not self.redis.exists(key)):
                # Finished, and the stream holds no closing entry: replay from storage or report.
                yield from self._ended_without_stream(job_id, job_state, storage, next_seq, audio)
                return
            if not follow:
                return
            if terminal:
                # The worker marks the state before (fail, cancel) or after (finish) writing the closing
                # entry; give it one read's time to arrive.
                grace_used = True
            elif time.monotonic() - last_progress > timeout:
                yield self._job_error(
                    job_id,
                    job_state,
                    "stream_timeout",
                    f"No audio arrived for {timeout:g} s (the job is {job_state['state']}); reconnect with "
                    f"from={next_seq} to continue.",
                )
                return
            if gone is not None and gone():
                raise ListenerGoneError(
                    f"The listener of job {job_id} hung up while waiting for chunk {next_seq}.", job_id=job_id
                )
            self._wait_entry(key, next_seq, self.block_ms)

    def _closing_entry(self, key: str) -> StreamEvent | None:
        """The stream's end or error entry when it has one (it is always the last)."""
        last = self.redis.xrevrange(key, max="+", min="-", count=1)
        if not last:
            return None
        event = _event_from_entry(last[0][1])
        return event if event.type != "chunk" else None

    def _wait_entry(self, key: str, next_seq: int, block_ms: int) -> bool:
        """Block up to ``block_ms`` for an entry with seq >= ``next_seq``; True when one is there."""
        # XREAD returns ids strictly after the one given; on a missing key it waits for its creation.
        reply = self.redis.xread({key: f"0-{next_seq}"}, count=1, block=max(1, block_ms))
        return bool(reply)

    @staticmethod
    def _gap_error(job_id: str, wanted: int, first: int) -> StreamEvent:
        """The error event for chunks trimmed from the live buffer."""
        return StreamEvent(
            "error",
            -1,
            meta={
                "code": StreamGapError.code,
                "message": (
                    f"Chunks {wanted}..{first - 1} of job {job_id} have left the live buffer "
                    f"(SPOOL_STREAM_MAX_BYTES, SPOOL_STREAM_MAXLEN); reconnect with from={first}, or "
                    "download the whole file once the job has succeeded (the stream then replays it)."
                ),
            },
        )


# HTTP streaming -----------------------------------------------------------------------------------
def parse_stream_format(value: str | None, default: str) -> str:
    """The stream format a request asks for (``default`` when none), or InvalidRequestError."""
    if value is None or value == "":
        value = default
    try:
        fmt = normalize_format(value)
    except SpoolError:
        fmt = ""
    if fmt not in STREAM_FORMATS:
        raise InvalidRequestError(
            f"Invalid stream format {value!r}: use one of {', '.join(STREAM_FORMATS)}.",
            field="format",
            formats=list(STREAM_FORMATS),
        )
    return fmt


def parse_from(value: str | None) -> int:
    """The ``from`` sequence number of a request (0 when absent), or InvalidRequestError."""
    if value is None or value == "":
        return 0
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0 or str(number) != value.strip().lstrip("+"):
        raise InvalidRequestError(
            f"Invalid from={value!r}: give the sequence number of the first chunk wanted (0 or more).",
            field="from",
        )
    return number


def _resample(pcm: bytes, rate_in: int, rate_out: int) -> np.ndarray:
    """Linear resampling of s16le PCM to float32 at ``rate_out`` (only if a chunk's rate surprises us)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32767.0
    if rate_in == rate_out or not samples.size:
        return samples
    count = max(1, int(math.floor(samples.size * rate_out / rate_in)))
    positions = np.arange(count, dtype=np.float64) * (rate_in / rate_out)
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)


def iter_encoded(
    events: Iterator[StreamEvent], fmt: str, rate: int, *, on_error: Any = None
) -> Iterator[bytes]:
    """Encode stream events as one file of ``fmt``: the header at once, each chunk, then the trailer."""
    encoder = StreamEncoder(fmt, rate)
    yield encoder.header() if fmt != "wav" else wav_header(rate, None)
    passthrough = fmt in ("wav", "pcm")
    try:
        for event in events:
            if event.type == "chunk":
                if event.rate == rate and passthrough:
                    # Exactly the stored samples: no float round trip.
                    data = event.pcm
                elif event.rate == rate:
                    data = encoder.encode(event.float_samples())
                else:
                    log.warning(
                        "chunk %d is at %d Hz, the stream at %d Hz: resampling", event.seq, event.rate, rate
                    )
                    data = encoder.encode(_resample(event.pcm, event.rate, rate))
                if data:
                    yield data
            elif event.type == "error":
                if on_error is not None:
                    on_error(event)
                break
            else:
                break
        yield encoder.finish() if not passthrough else b""
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


__all__ = [
    "ChunkStream",
    "StreamEvent",
    "StreamClosedError",
    "StreamGapError",
    "chunk_caption",
    "iter_encoded",
    "parse_from",
    "parse_stream_format",
]
