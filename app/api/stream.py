"""Progressive playback routes: a job's audio as it renders, and its events as Server-Sent Events.

Also the two stream bodies of ``POST /v1/audio/speech``: :func:`stream_job_response` (the audio
bytes, OpenAI's default) and :func:`speech_events_response` (OpenAI's ``stream_format: "sse"``).

* ``GET /v1/jobs/<id>/stream?format=wav|mp3|opus|pcm|flac&from=N`` answers at once with the
  format's header, replays every chunk from sequence N and follows the job live until it ends.
* ``GET /v1/jobs/<id>/events`` is an SSE stream: a ``state`` snapshot first, then ``state``,
  ``progress``, ``chunk`` (captions on the job's timeline, ``id:`` = chunk seq) and ``end`` or
  ``error``; a heartbeat comment every ~15 s; ``Last-Event-ID`` (or ``?from=N``) resumes the chunks.

Every stream holds an open-stream slot until it ends. While one waits for chunks (a queued job)
it looks at its client's socket about once a second (``app.hangup``), so a client that hung up
frees its slot within seconds, not when the job renders.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from app import services
from app.api import job_payload
from app.auth import current_owner
from app.hangup import hangup_probe
from engine.audio import AUDIO_FORMATS, STREAM_FORMATS
from service.exceptions import JobNotReadyError, ListenerGoneError, StreamAbortedError
from service.jobs import Job
from service.logging import bind_job
from service.quotas import StreamSlot
from service.states import FINISHED
from service.stream import (
    ChunkStream,
    StreamEvent,
    chunk_caption,
    iter_encoded,
    parse_from,
    parse_stream_format,
)

log = logging.getLogger("spool.api.stream")

bp = Blueprint("stream", __name__, url_prefix="/v1/jobs")

#: Seconds between SSE heartbeat comments (proxies drop connections idle for a minute or more).
HEARTBEAT_SECONDS = 15.0

#: Seconds between heartbeats on a server that exposes no socket to probe (app/hangup.py): the
#: comments are then what finds a hung-up client (the second write after its close fails).
UNPROBED_HEARTBEAT_SECONDS = 3.0

#: Seconds one pub/sub poll waits before the job's state is re-read.
POLL_SECONDS = 1.0

#: Milliseconds an EventSource waits before reconnecting.
RETRY_MS = 2000

#: Seconds the events stream waits, after the end entry, for the job's final state.
FINAL_STATE_WAIT = 15.0

#: Longest an events stream stays open for one job (a client reconnects with Last-Event-ID).
MAX_EVENTS_SECONDS = 4 * 3600.0


def _streams() -> ChunkStream:
    """The app's chunk stream service."""
    return services().streams


def _streamable_job(job_id: str) -> Job:
    """The job, unless it has already failed or been cancelled (then there is no audio to stream)."""
    job = services().jobs.get(job_id)
    if job.state in ("failed", "cancelled"):
        detail = f" ({job.error_code}: {job.error_message})" if job.error_code else ""
        raise JobNotReadyError(
            f"Job {job.id} is {job.state}{detail}; it has no audio to stream.", state=job.state
        )
    return job


def stream_slot() -> StreamSlot:
    """Take one of the caller's open-stream slots (429 with Retry-After when none is free)."""
    return StreamSlot(services().quotas, current_owner())


def _held(body: Iterator[Any], slot: StreamSlot) -> Iterator[Any]:
    """``body``, renewing the stream slot's lease while it sends and releasing it when it ends.

    A body that finds its client gone while it waits (ListenerGoneError) just ends: nobody reads on.
    """
    try:
        for item in body:
            slot.touch()
            yield item
    except ListenerGoneError as exc:
        log.info("%s", exc.message)
    finally:
        slot.release()
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _slot_response(body: Iterator[Any], slot: StreamSlot, **kwargs: Any) -> Response:
    """A streamed response that holds ``slot`` until the body ends or the client goes away."""
    response = Response(stream_with_context(_held(body, slot)), **kwargs)
    response.call_on_close(slot.release)
    return response


def stream_job_response(
    job_id: str,
    fmt: str,
    from_seq: int = 0,
    extra_headers: dict[str, str] | None = None,
    slot: StreamSlot | None = None,
) -> Response:
    """Stream a job's audio from chunk ``from_seq``: the header at once, then chunks as they come."""
    svc = services()
    try:
        fmt = parse_stream_format(fmt, "wav")
        job = _streamable_job(job_id)
        rate = svc.catalog.sample_rate(job.voice)
        svc.streams.check_replayable(job.id, from_seq, job.state)
        slot = slot or stream_slot()
    except BaseException:
        if slot is not None:
            slot.release()
        raise

    def on_error(event: StreamEvent) -> None:
        # A clean end would pass a cut-short file off as the whole audio: abort the response instead
        # (no closing chunk), which every HTTP client reports as an incomplete body.
        meta = dict(event.meta)
        log.info("stream of job %s ended early: %s", job_id, meta)
        raise StreamAbortedError(
            f"Job {job_id} stopped before its audio was complete ({meta.get('code')}: {meta.get('message')}); "
            f"GET /v1/jobs/{job_id} says why.",
            job_id=job_id,
            error_code=meta.get("code"),
        )

    events = svc.streams.events(job.id, from_seq, storage=svc.storage, gone=hangup_probe(request.environ))
    body = iter_encoded(events, fmt, rate, on_error=on_error)
    headers = {
        "Content-Type": AUDIO_FORMATS[fmt].content_type + (f";rate={rate};channels=1" if fmt == "pcm" else ""),
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
        "X-Job-Id": job.id,
        "X-Sample-Rate": str(rate),
        "X-Stream-From": str(from_seq),
        **(extra_headers or {}),
    }
    return _slot_response(body, slot, status=200, headers=headers, direct_passthrough=True)


def speech_events_response(
    job_id: str, fmt: str, extra_headers: dict[str, str] | None = None, slot: StreamSlot | None = None
) -> Response:
    """OpenAI's speech SSE: ``speech.audio.delta`` (base64 bytes of the ``fmt`` file) as the job renders,
    then ``speech.audio.done`` with usage, or ``error`` when the job fails mid-way."""
    svc = services()
    try:
        job = _streamable_job(job_id)
        rate = svc.catalog.sample_rate(job.voice)
        slot = slot or stream_slot()
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    chunks = 0
    failure: dict[str, Any] = {}
    gone = hangup_probe(request.environ)

    def counted(events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
        nonlocal chunks
        try:
            for event in events:
                chunks += event.type == "chunk"
                yield event
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def on_error(event: StreamEvent) -> None:
        failure.update(event.meta)

    def body() -> Iterator[str]:
        events = counted(svc.streams.events(job.id, 0, storage=svc.storage, gone=gone))
        for data in iter_encoded(events, fmt, rate, on_error=on_error):
            if data:
                yield sse(None, {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
        if failure:
            log.info("speech events of job %s ended early: %s", job.id, failure)
            error = {"message": failure.get("message") or "Synthesis failed.", "type": "server_error"}
            yield sse(None, {"type": "error", "error": {**error, "param": None, "code": failure.get("code")}})
            return
        # Spool has no tokenizer: usage counts the input's characters and the audio chunks rendered.
        usage = {"input_tokens": len(job.text), "output_tokens": chunks, "total_tokens": len(job.text) + chunks}
        yield sse(None, {"type": "speech.audio.done", "usage": usage})

    headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
        "X-Job-Id": job.id,
        "X-Sample-Rate": str(rate),
        **(extra_headers or {}),
    }
    return _slot_response(body(), slot, status=200, headers=headers)


@bp.get("/<job_id>/stream")
def stream_audio(job_id: str):  # type: ignore[no-untyped-def]
    """The job's audio as it renders: header at once, every chunk from ``from``, until the end."""
    svc = services()
    job = svc.jobs.get(job_id, current_owner())
    bind_job(job.id)
    default = job.format if job.format in STREAM_FORMATS else "wav"
    fmt = parse_stream_format(request.args.get("format"), default)
    from_seq = parse_from(request.args.get("from"))
    log.info("streaming %s from chunk %d (job is %s)", fmt, from_seq, job.state)
    return stream_job_response(job.id, fmt, from_seq)


def sse(event: str | None, data: Any, event_id: int | None = None) -> str:
    """One Server-Sent Event (JSON data on a single line)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return "\n".join(lines) + "\n\n"


def _resume_from() -> int:
    """First chunk seq the client wants: after ``Last-Event-ID``, else ``?from=N``, else 0."""
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if last_id:
        try:
            return max(0, int(last_id) + 1)
        except ValueError:
            log.info("ignoring Last-Event-ID %r", last_id)
    return parse_from(request.args.get("from"))


def _progress_payload(data: dict[str, Any]) -> dict[str, Any]:
    """A progress event with the percentage a progress bar needs."""
    done = int(data.get("segments_done") or 0)
    total = data.get("segments_total")
    percent = round(100.0 * done / total, 1) if total else 0.0
    return {
        "segments_done": done,
        "segments_total": total,
        "audio_seconds": data.get("audio_seconds", 0.0),
        "percent": percent,
        "at": data.get("at"),
    }


class EventSession:
    """One client's SSE stream of one job: merges pub/sub (state, progress) with the chunk stream."""

    def __init__(
        self, job: Job, streams: ChunkStream, from_seq: int, gone: Callable[[], bool] | None = None
    ) -> None:
        svc = services()
        self.svc = svc
        #: Says when the client has hung up (None: the server exposes no socket; heartbeats find out).
        self.gone = gone
        self.heartbeat = HEARTBEAT_SECONDS if gone is not None else UNPROBED_HEARTBEAT_SECONDS
        self.job_id = job.id
        self.streams = streams
        self.next_seq = from_seq
        self.ended = False
        self.final_state_sent = job.is_terminal
        # Subscribe before the snapshot, so no state change between the two is lost.
        self.pubsub = svc.redis.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(svc.keys.job_events(job.id))
        self.snapshot = job_payload(job)

    def close(self) -> None:
        """Release the pub/sub connection."""
        try:
            self.pubsub.close()
        except Exception:  # a broken connection is being dropped anyway
            log.debug("pubsub close failed", exc_info=True)

    def _stream_event(self, event: StreamEvent) -> str:
        """Render a chunk-stream entry as an SSE event and advance the cursor."""
        if event.type == "chunk":
            self.next_seq = event.seq + 1
            return sse("chunk", event.caption(), event.seq)
        self.ended = True
        if event.type == "end":
            return sse("end", {"seq": event.seq, "totals": dict(event.meta)}, event.seq)
        meta = dict(event.meta)
        payload = {"seq": event.seq, "code": meta.get("code"), "message": meta.get("message")}
        return sse("error", payload, event.seq if event.seq >= 0 else None)

    def catch_up(self, *, follow: bool = False) -> Iterator[str]:
        """Chunk events the client has not had yet, from the Redis stream or storage."""
        events = self.streams.events(
            self.job_id,
            self.next_seq,
            follow=follow,
            timeout=POLL_SECONDS * 5,
            storage=self.svc.storage,
            audio=False,
            gone=self.gone,
        )
        for event in events:
            if event.type == "chunk" and event.seq < self.next_seq:
                continue
            yield self._stream_event(event)
            if self.ended:
                return

    def state_event(self) -> tuple[str, Job | None]:
        """A fresh job snapshot as a ``state`` event."""
        job = self.svc.jobs.find(self.job_id)
        if job is None:
            self.ended = True
            return sse("error", {"code": "job_not_found", "message": "The job has expired."}), None
        if job.is_terminal:
            self.final_state_sent = True
        return sse("state", job_payload(job)), job

    def on_message(self, data: dict[str, Any]) -> Iterator[str]:
        """Translate one pub/sub message into SSE events."""
        kind = data.get("type")
        if kind == "state":
            text, _ = self.state_event()
            yield text
        elif kind == "progress":
            yield sse("progress", _progress_payload(data))
        elif kind == "chunk":
            seq = int(data.get("seq", -1))
            if seq == self.next_seq:
                self.next_seq = seq + 1
                caption = chunk_caption(
                    seq,
                    int(data.get("offset", 0)),
                    int(data.get("rate", 0)),
                    int(data.get("samples", 0)),
                    data,
                )
                yield sse("chunk", caption, seq)
            elif seq > self.next_seq:
                # A wake-up was lost (or we joined mid-way): the stream has every chunk in order.
                yield from self.catch_up()
        elif kind in ("end", "error"):
            yield from self.catch_up()
            if not self.ended:
                yield from self.catch_up(follow=True)

    def run(self) -> Iterator[str]:
        """The whole SSE body."""
        started = last_write = time.monotonic()
        yield f"retry: {RETRY_MS}\n\n"
        yield sse("state", self.snapshot)
        for text in self.catch_up():
            yield text
        while not self.ended:
            now = time.monotonic()
            if now - started > MAX_EVENTS_SECONDS:
                yield sse("error", {"code": "stream_timeout", "message": "Reconnect to keep following."})
                return
            if self.gone is not None and self.gone():
                raise ListenerGoneError(f"The events listener of job {self.job_id} hung up.", job_id=self.job_id)
            message = self.pubsub.get_message(timeout=POLL_SECONDS)
            wrote = False
            if message is not None and message.get("type") == "message":
                try:
                    data = json.loads(message["data"])
                except (TypeError, ValueError):
                    data = {}
                for text in self.on_message(data):
                    wrote = True
                    yield text
            else:
                # A cheap look at the state (not the whole job hash, which holds the text).
                state = self.streams.job_state(self.job_id).get("state")
                if state is None:
                    yield sse("error", {"code": "job_not_found", "message": "The job has expired."})
                    return
                # Also catches chunks whose wake-up was dropped, and a job that ended without one.
                for text in self.catch_up(follow=state in FINISHED):
                    wrote = True
                    yield text
            if wrote:
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= self.heartbeat:
                last_write = time.monotonic()
                yield ": heartbeat\n\n"
        yield from self.final_state()

    def final_state(self) -> Iterator[str]:
        """After the end entry: the job's terminal state snapshot (the worker marks it just after)."""
        if self.final_state_sent:
            return
        deadline = time.monotonic() + FINAL_STATE_WAIT
        while time.monotonic() < deadline:
            job = self.svc.jobs.find(self.job_id)
            if job is None or job.is_terminal:
                text, _ = self.state_event()
                yield text
                return
            self.pubsub.get_message(timeout=min(POLL_SECONDS, max(0.01, deadline - time.monotonic())))
        text, _ = self.state_event()
        yield text


@bp.get("/<job_id>/events")
def job_events(job_id: str):  # type: ignore[no-untyped-def]
    """Server-Sent Events of a job: state, progress, chunk captions, then end or error."""
    svc = services()
    job = svc.jobs.get(job_id, current_owner())
    bind_job(job.id)
    from_seq = _resume_from()
    slot = stream_slot()
    try:
        session = EventSession(job, _streams(), from_seq, hangup_probe(request.environ))
    except BaseException:
        slot.release()
        raise

    def body() -> Iterator[str]:
        try:
            yield from session.run()
        finally:
            session.close()

    headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
        "X-Job-Id": job.id,
    }
    return _slot_response(body(), slot, status=200, headers=headers)
