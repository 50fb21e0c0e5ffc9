"""Automatic QA of finished jobs and books (issue 17 part 4): which segments do not say their text.

A job with ``qa`` is checked in its render task right after its audio is stored and the job has
succeeded (the audio is never held back for QA; its webhook is sent once QA is done, so a receiver
that fetches the job finds the report). A book with ``qa`` is checked during its assembly, on the audio actually assembled: each
checkpoint is read there anyway, so QA costs no extra storage read. Either way the worker's one
recogniser (:func:`transcriber`, loaded on first use and kept for the process) transcribes each
segment; a segment whose word error rate exceeds ``SPOOL_QA_THRESHOLD`` is listed with its text,
what was heard, its chapter and start time, so its owner can fix it.

The report (``qa_report`` of a job, ``manifest["qa"]`` of a book) is a JSON object:
``{"state": "done", "model", "threshold", "segments_checked", "segments_flagged", "flagged": [...],
"audio_seconds", "qa_seconds"}``; ``state`` is ``pending`` or ``running`` before, and
``unavailable`` or ``failed`` (with ``message``) when QA could not run; the audio is delivered either way.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.chunk import AudioChunk
from engine.exceptions import SpoolError
from engine.normalize import is_english
from engine.qa import WINDOW_SECONDS, Transcriber, bundled_model_dir, check_window, qa_missing
from service.exceptions import InvalidRequestError, QaNotInstalledError

if TYPE_CHECKING:
    from config.settings import Settings
    from service.jobs import Job
    from service.services import Services

log = logging.getLogger("spool.qa")

#: Longest text and heard text kept per flagged segment in a report (characters).
MAX_REPORT_TEXT = 500

_lock = threading.Lock()
_state: dict[str, Any] = {"pid": None, "transcriber": None}


def check_qa_request(qa: bool, lang: str | None) -> bool:
    """Validate ``qa=true`` for a request: 400 when QA is not installed here or cannot hear the language."""
    if not qa:
        return False
    missing = qa_missing()
    if missing:
        raise QaNotInstalledError(
            f"QA is not installed on this deployment: {missing}; or send the request without qa.",
            field="qa",
        )
    if lang is not None and not is_english(lang):
        raise InvalidRequestError(
            f"qa=true checks English speech only (Whisper tiny.en), and this request is {lang!r}; "
            "send it without qa.",
            field="qa",
        )
    return True


def parse_qa_flag(value: object) -> bool:
    """A request's ``qa`` value (JSON boolean, or a form field's "true"/"false"); 400 for anything else."""
    if value is None or value is False or value == "":
        return False
    if value is True:
        return True
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise InvalidRequestError(f"qa must be true or false, got {str(value)[:64]!r}.", field="qa")


def transcriber(settings: Settings) -> Transcriber:
    """This process's recogniser, loaded (and its model files checked) on first use."""
    if _state["transcriber"] is None or _state["pid"] != os.getpid():
        with _lock:
            if _state["transcriber"] is None or _state["pid"] != os.getpid():
                started = time.perf_counter()
                _state["transcriber"] = Transcriber(bundled_model_dir(), threads=settings.qa_threads)
                _state["pid"] = os.getpid()
                log.info("QA recogniser loaded in %.2f s", time.perf_counter() - started)
    return _state["transcriber"]


class QaRun:
    """QA over one job's or book's segments, fed in order one chunk at a time; :meth:`report` sums it up.

    Chunks are held until a window of ``WINDOW_SECONDS`` of audio is full, then transcribed together
    (one recogniser pass per window, and short segments heard in context); :meth:`report` checks the rest.
    """

    def __init__(self, asr: Transcriber, threshold: float, lang: str) -> None:
        self.asr = asr
        self.threshold = threshold
        self.lang = lang
        self.checked = 0
        self.flagged: list[dict[str, Any]] = []
        self.audio_seconds = 0.0
        self.seconds = 0.0
        self.failure: str | None = None
        self._window: list[tuple[AudioChunk, dict[str, Any]]] = []
        self._window_seconds = 0.0

    def check(
        self, chunk: AudioChunk, *, start: float, chapter: int | None = None, chapter_title: str | None = None
    ) -> None:
        """Queue one segment for QA; ``start`` is its time in seconds (from its chapter's start in a book).

        Never raises: the first failure is kept (the report says ``failed``) and later segments are skipped,
        so a broken recogniser never stops the delivery of the audio.
        """
        if self.failure is not None:
            return
        if self._window and self._window_seconds + chunk.duration > WINDOW_SECONDS:
            self._flush()
        where: dict[str, Any] = {"start": start}
        if chapter is not None:
            where |= {"chapter": chapter, "chapter_title": chapter_title or ""}
        self._window.append((chunk, where))
        self._window_seconds += chunk.duration

    def _flush(self) -> None:
        """Check the segments held."""
        window, self._window, self._window_seconds = self._window, [], 0.0
        if not window or self.failure is not None:
            return
        began = time.perf_counter()
        try:
            results = check_window(self.asr, [c for c, _ in window], self.threshold, self.lang)
        except SpoolError as exc:
            self.failure = exc.message
            return
        except Exception as exc:
            log.exception("QA failed on segments %d-%d", window[0][0].index, window[-1][0].index)
            self.failure = f"QA failed unexpectedly ({type(exc).__name__}); the worker log has the details."
            return
        self.seconds += time.perf_counter() - began
        for (chunk, where), result in zip(window, results, strict=True):
            self.audio_seconds += chunk.duration
            self.checked += bool(result.words)
            if result.flagged:
                self.flagged.append(
                    {
                        **{k: v for k, v in where.items() if k != "start"},
                        "segment": chunk.index,
                        "text": result.text[:MAX_REPORT_TEXT],
                        "heard": result.heard[:MAX_REPORT_TEXT],
                        "wer": result.wer,
                        "start": round(where["start"], 3),
                        "duration": round(chunk.duration, 3),
                    }
                )

    def report(self) -> dict[str, Any]:
        """The finished report (see the module docstring), after checking the segments still held."""
        self._flush()
        if self.failure is not None:
            return not_run("failed", self.threshold, self.failure)
        return {
            "state": "done",
            "model": self.asr.name,
            "threshold": self.threshold,
            "segments_checked": self.checked,
            "segments_flagged": len(self.flagged),
            "flagged": self.flagged,
            "audio_seconds": round(self.audio_seconds, 3),
            "qa_seconds": round(self.seconds, 3),
        }


def not_run(state: str, threshold: float, message: str) -> dict[str, Any]:
    """The report of a QA that could not run (``unavailable``) or broke off (``failed``)."""
    return {"state": state, "threshold": threshold, "message": message}


def start_run(settings: Settings, lang: str) -> QaRun | dict[str, Any]:
    """A QaRun ready to check segments, or the report saying why QA cannot run on this worker."""
    try:
        return QaRun(transcriber(settings), settings.qa_threshold, lang)
    except SpoolError as exc:
        log.warning("QA cannot run on this worker: %s", exc.message)
        return not_run("unavailable", settings.qa_threshold, exc.message)


def check_chunks(settings: Settings, chunks: Iterable[AudioChunk], lang: str) -> dict[str, Any]:
    """QA over a job's chunks in order (start times from the start of the audio); the report."""
    run = start_run(settings, lang)
    if isinstance(run, dict):
        return run
    at = 0.0
    for chunk in chunks:
        run.check(chunk, start=at)
        at += chunk.duration
    return run.report()


def run_job_qa(svc: Services, job: Job, chunks: list[AudioChunk], lang: str) -> dict[str, Any]:
    """QA a succeeded job's chunks and store the report on the job (``qa_state``, ``qa_report``)."""
    svc.jobs.set_fields(job.id, qa_state="running")
    report = check_chunks(svc.settings, chunks, lang)
    svc.jobs.set_fields(job.id, qa_state=report["state"], qa_report=json.dumps(report))
    log.info(
        "QA %s: %s of %s segment(s) flagged",
        report["state"],
        report.get("segments_flagged", "-"),
        report.get("segments_checked", "-"),
    )
    return report


def job_qa_view(job: Job, threshold: float) -> dict[str, Any] | None:
    """The ``qa`` object of a job's JSON: None without qa, ``pending`` until its worker has run it."""
    if not job.qa:
        return None
    if job.qa_report:
        return json.loads(job.qa_report)
    if job.state in ("failed", "cancelled"):
        return not_run("unavailable", threshold, f"The job {job.state}: there is no audio to check.")
    return {"state": job.qa_state or "pending", "threshold": threshold}


def book_report(run: QaRun | dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """A book's finished QA report, each flagged segment also timed from the start of the book."""
    if isinstance(run, dict):
        return run
    report = run.report()
    starts = {c["number"]: c["start"] for c in manifest.get("chapters", [])}
    for entry in report.get("flagged", []):
        entry["book_start"] = round(starts.get(entry.get("chapter"), 0.0) + entry["start"], 3)
    return report


def book_qa_view(
    qa: bool, manifest: dict[str, Any] | None, threshold: float, state: str = ""
) -> dict[str, Any] | None:
    """The ``qa`` object of a book's JSON: its manifest's report once assembled, else ``pending``."""
    if not qa:
        return None
    if manifest and isinstance(manifest.get("qa"), dict):
        return manifest["qa"]
    if state in ("failed", "cancelled"):
        return not_run("unavailable", threshold, f"The book {state}: there is no audio to check.")
    return {"state": "pending", "threshold": threshold}
