"""Rendered audio kept on the worker's disk until it is safely in storage.

Before a job's audio is uploaded, its chunks (float samples, word timings, speech ends) are
written to ``<SPOOL_VAR_DIR>/spill/jobs/<job id>-<content digest>.npz``. The file is removed
once the upload and the job's success are recorded. When the upload fails (storage down past
``SPOOL_STORAGE_RETRY_WINDOW``, or the worker killed while it waited), the job goes back to
the queue and the next attempt on this machine finds the file: it publishes and uploads the
same audio without a single model call. The digest covers the model, the resolved voice,
speed and language, and every segment's spoken text and boundary, so a file is only ever
reused for exactly the audio it holds. Workers on other machines do not see it and render
again (the result is the same: Kokoro's output is deterministic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.chunk import AudioChunk, WordTiming
from engine.segment import Segment
from engine.speech import ResolvedVoice
from service.keys import check_id

log = logging.getLogger("spool.spill")

#: Sub-directory of the var directory that holds spilled jobs.
SPILL_DIR = "spill"


def spill_digest(model_id: str, voice: ResolvedVoice, segments: Sequence[Segment]) -> str:
    """Hash of everything the job's audio is made from (model, voice, speed, language, segments)."""
    digest = hashlib.sha256()
    for part in (model_id, voice.spec, f"{voice.speed:.4f}", voice.lang, str(len(segments))):
        digest.update(part.encode("utf-8") + b"\x1f")
    for seg in segments:
        digest.update(f"{seg.index}\x1e{seg.spoken}\x1e{seg.boundary}\x1e{int(seg.trim_lead)}\x1f".encode())
    return digest.hexdigest()[:32]


class Spill:
    """One worker machine's directory of rendered-but-not-yet-stored jobs."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root) / "jobs"

    def path(self, job_id: str, digest: str) -> Path:
        """Where a job's rendered audio is kept."""
        return self.root / f"{check_id(job_id, 'job id')}-{digest}.npz"

    def save(self, job_id: str, digest: str, chunks: Sequence[AudioChunk]) -> Path:
        """Write every chunk to the job's spill file (a temporary file renamed into place)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(job_id, digest)
        meta = [
            {
                "index": c.index,
                "rate": int(c.sample_rate),
                "length": len(c.samples),
                "speech_end": c.speech_end,
                "is_last": c.is_last,
                "words": [[w.word, w.start, w.end] for w in c.words],
            }
            for c in chunks
        ]
        samples = (
            np.concatenate([np.asarray(c.samples, dtype=np.float32) for c in chunks])
            if chunks
            else np.zeros(0, dtype=np.float32)
        )
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, samples=samples, meta=np.array(json.dumps(meta)))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def load(self, job_id: str, digest: str, segments: Sequence[Segment]) -> list[AudioChunk] | None:
        """The chunks spilled for this job and content, or None when there are none (or they are unreadable)."""
        path = self.path(job_id, digest)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                samples = saved["samples"]
                meta = json.loads(str(saved["meta"]))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("spill file %s is unreadable (%s); rendering again", path, exc)
            path.unlink(missing_ok=True)
            return None
        if len(meta) != len(segments):
            return None
        chunks = []
        at = 0
        for entry, segment in zip(meta, segments, strict=True):
            length = int(entry["length"])
            chunks.append(
                AudioChunk(
                    index=int(entry["index"]),
                    samples=samples[at : at + length],
                    sample_rate=int(entry["rate"]),
                    segment=segment,
                    words=[WordTiming(str(w), float(s), float(e)) for w, s, e in entry["words"]],
                    speech_end=float(entry["speech_end"]),
                    is_last=bool(entry["is_last"]),
                )
            )
            at += length
        return chunks

    def discard(self, job_id: str) -> None:
        """Remove every spill file of a job (its audio is stored, or the job is over)."""
        if not self.root.is_dir():
            return
        for path in self.root.glob(f"{check_id(job_id, 'job id')}-*.npz"):
            path.unlink(missing_ok=True)
