"""The job render: one job from its stored spec to stored audio, with progress, streaming and cancel.

A worker's task calls :func:`run_synthesis` with its engine. The spec is read from
the job store; each chunk the engine yields is published to the job's chunk
stream and counted in its progress; a cancel request is honoured between
segments; the whole audio is encoded once in the job's format and uploaded. A finished
job's webhook is only enqueued here (``service.webhooks.notify``); its own task sends it.

The rendered chunks are kept on the worker's disk (:mod:`service.spill`) until the upload and
the job's success are recorded. Storage waits out an outage for its retry window; when the
upload still fails, the job goes back to the queue (within the job's ``SPOOL_MAX_ATTEMPTS``) and the
next attempt uploads the kept audio without rendering it again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from engine.audio import AUDIO_FORMATS, encode_audio
from engine.exceptions import SpoolError
from service.exceptions import JobCancelledError, StorageUnavailableError
from service.logging import log_context
from service.qa import run_job_qa
from service.reconnect import with_reconnect
from service.spill import SPILL_DIR, Spill, spill_digest
from service.waiting import record_job
from service.webhooks import notify

if TYPE_CHECKING:
    from engine import AudioChunk, Engine
    from service.jobs import Job
    from service.services import Services

log = logging.getLogger("spool.synthesis")  # the name operators filter on


class _Cancelled(Exception):
    """Raised inside the render loop when the owner cancelled the job."""


class _HandBack(Exception):
    """Raised inside the render loop when the worker is shutting down: the job goes back to the queue."""


def run_synthesis(
    svc: Services,
    job_id: str,
    engine_factory: Callable[[], Engine],
    *,
    worker_name: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> str | None:
    """Render one job end to end; return the storage key of its audio, or None if it did not succeed.

    ``should_stop`` is asked after every segment: True (the worker is shutting down) hands the job
    back to the queue, where another worker (or this one, restarted) renders it.
    """
    job = svc.jobs.find(job_id)
    if job is None:
        log.warning("job %s not found (expired?); nothing to do", job_id)
        return None
    with log_context(request_id=job.request_id or "-", job_id=job_id):
        if job.is_terminal:
            log.info("job is already %s; not running it", job.state)
            return None
        if job.state == "running" and job.worker and job.worker != worker_name:
            live = {w["name"] for w in svc.workers.live()}
            if job.worker in live:
                # A second delivery of a job whose worker is alive and rendering it: leave it be.
                log.info("job is running on live worker %s; skipping this duplicate delivery", job.worker)
                return None
        if job.attempts >= svc.settings.max_attempts:
            # A stale redelivery of a job that already used up its attempts (its worker died each time).
            from service.recovery import fail_exhausted

            fail_exhausted(svc, job)
            return None
        started = svc.jobs.start(job_id, worker=worker_name)
        if started is None:
            log.info("job could not start (now %s)", svc.jobs.get(job_id).state)
            return None
        job = started
        log.info(
            "started (attempt %d): %d chars, voice %s, speed %g, %s",
            job.attempts,
            job.text_chars,
            job.voice,
            job.speed,
            job.format,
        )
        render_started = time.perf_counter()
        try:
            key = _render(svc, job, engine_factory(), render_started, should_stop)
        except _HandBack:
            rendered = svc.jobs.get(job_id).segments_done
            if svc.jobs.hand_back(job, worker_name or ""):
                svc.enqueue(job, job.request_id)
                log.info("worker shutting down: job handed back to the queue after %d segment(s)", rendered)
            key = None
        except _Cancelled:
            # Only a cancel request ends the job as cancelled; a job taken back meanwhile (requeued,
            # expired) is simply left to its new state.
            if svc.jobs.cancel(job_id):
                svc.streams.fail(job_id, JobCancelledError("The job was cancelled by its owner."))
                log.info("cancelled after %d segment(s)", svc.jobs.get(job_id).segments_done)
            else:
                log.info("stopped: the job is no longer running here")
            key = None
        except StorageUnavailableError as exc:
            key = None
            if not _requeue_after_outage(svc, job, exc):
                _fail(svc, job_id, exc.code, exc.message, exc)
        except SoftTimeLimitExceeded:
            _fail(
                svc,
                job_id,
                "timeout",
                f"Rendering took longer than {svc.settings.task_soft_time_limit} s "
                "and was stopped; split the text into shorter jobs.",
            )
            key = None
        except SpoolError as exc:
            _fail(svc, job_id, exc.code, exc.message, exc)
            key = None
        except Exception as exc:
            log.exception("synthesis failed")
            _fail(
                svc,
                job_id,
                "internal_error",
                # The exception's text stays in the log: it may name server paths or addresses.
                f"Synthesis failed unexpectedly ({type(exc).__name__}); the server log has the details.",
                exc,
            )
            key = None
        final = with_reconnect(svc.settings.redis_retry_window, svc.jobs.find, job_id)
        if final is not None and final.is_terminal:
            notify(svc, final)  # only enqueued: the webhook task delivers it, never this one
        return key


def _spill(svc: Services) -> Spill:
    """This machine's spill directory (under the var directory)."""
    return Spill(Path(svc.settings.var_dir) / SPILL_DIR)


def _requeue_after_outage(svc: Services, job: Job, error: StorageUnavailableError) -> bool:
    """Put a job whose upload outlasted the storage window back in the queue; False when it used its turns."""
    if job.attempts >= svc.settings.max_attempts:
        return False
    if not svc.jobs.requeue_orphan(job, job.worker or ""):
        return False
    log.warning(
        "storage still unavailable after %g s (%s): job requeued, its audio kept on this machine",
        svc.settings.storage_retry_window,
        error.message,
    )
    svc.enqueue(job, job.request_id)
    return True


def _fail(svc: Services, job_id: str, code: str, message: str, error: Exception | None = None) -> None:
    """Mark the job failed and end its chunk stream with the error."""
    log.warning("failed: %s: %s", code, message)
    with_reconnect(svc.settings.redis_retry_window, svc.jobs.fail, job_id, code, message)
    _spill(svc).discard(job_id)  # a failed job's kept audio will not be uploaded
    try:
        svc.streams.fail(job_id, error if isinstance(error, SpoolError) else SpoolError(message))
    except Exception:
        log.exception("could not end the chunk stream")


def _render(
    svc: Services,
    job: Job,
    engine: Engine,
    render_started: float,
    should_stop: Callable[[], bool] | None = None,
) -> str | None:
    """The render loop: stream chunks, track progress, honour cancel, encode, upload, finish."""
    jobs = svc.jobs
    window = svc.settings.redis_retry_window  # every job-store write below rides out a Redis restart
    # Split once, in the voice's language (as the stream would), so the total is the real count.
    voice = engine.check(job.voice, job.speed, job.language)
    segments = engine.segments(job.text, voice.lang, markup=job.markup)
    lexicon = svc.lexicons.snapshot(job.owner, job.lexicon, job.lexicon_version or "") if job.lexicon else None
    total = len(segments)
    with_reconnect(window, jobs.progress, job.id, 0, total, 0.0)
    with_reconnect(window, svc.streams.reset, job.id)
    if with_reconnect(window, jobs.is_cancel_requested, job.id):
        raise _Cancelled
    spill = _spill(svc)
    digest = spill_digest(engine.model_id, voice, segments)
    kept = spill.load(job.id, digest, segments)
    if kept is not None:
        log.info("uploading the audio kept from an earlier attempt (%d chunks): nothing to render", len(kept))
    rendered: list[AudioChunk] = []
    pieces: list[np.ndarray] = []
    sample_rate = voice.sample_rate
    done = 0
    audio_seconds = 0.0
    chunks = (
        iter(kept)
        if kept is not None
        else engine.stream(job.text, voice=job.voice, speed=job.speed, lang=job.language, segments=segments, lexicon=lexicon)
    )
    for chunk in chunks:
        rendered.append(chunk)
        pieces.append(np.asarray(chunk.samples, dtype=np.float32))
        sample_rate = chunk.sample_rate
        # With storage: chunks the stream's byte bound trims stay replayable as parts (service.stream).
        with_reconnect(window, svc.streams.publish, job.id, chunk, svc.storage)
        done += 1
        audio_seconds += chunk.duration
        with_reconnect(window, jobs.progress, job.id, done, max(total, done), audio_seconds)
        # Checked after every segment, so a cancel stops the job before the next one is rendered.
        if with_reconnect(window, jobs.is_cancel_requested, job.id):
            raise _Cancelled
        if should_stop is not None and done < total and should_stop():
            raise _HandBack
    if kept is None:
        spill.save(job.id, digest, rendered)  # kept until stored: an outage never costs a re-render
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    data = encode_audio(samples, sample_rate, job.format)
    fmt = AUDIO_FORMATS[job.format]
    key = svc.keys.job_audio(job.id, fmt.extension)
    content_type = fmt.content_type
    svc.storage.put(key, data, content_type=content_type)
    duration = len(samples) / sample_rate
    render_seconds = time.perf_counter() - render_started
    totals = {
        "segments": done,
        "duration": duration,
        "samples": int(len(samples)),
        "sample_rate": sample_rate,
        "format": job.format,
        "size": len(data),
        "key": key,
    }
    with_reconnect(window, svc.streams.finish, job.id, svc.storage, totals)
    succeeded = with_reconnect(
        window,
        jobs.succeed,
        job.id,
        {
            "result_key": key,
            "result_size": len(data),
            "result_duration": round(duration, 4),
            "result_content_type": content_type,
            "result_etag": hashlib.sha256(data).hexdigest()[:32],
            "render_seconds": round(render_seconds, 3),
            "segments_total": done,
        },
    )
    spill.discard(job.id)
    if not succeeded:
        # Cancelled (or expired) between the last segment and now: the upload stays, the state wins.
        log.info("finished rendering but the job is now %s", jobs.get(job.id).state)
        return None
    with_reconnect(window, jobs.record_render, job.queue, job.text_chars, render_seconds)
    with_reconnect(window, record_job, svc, job.queue, job.text_chars, done, render_seconds)
    log.info(
        "succeeded: %d segments, %.2f s of audio in %.2f s (%.1fx real time), %d bytes",
        done,
        duration,
        render_seconds,
        duration / render_seconds if render_seconds else 0.0,
        len(data),
    )
    if job.qa:
        # After the success is recorded: the audio is never held back for QA (issue 17 part 4).
        run_job_qa(svc, job, rendered, voice.lang)
    return key
