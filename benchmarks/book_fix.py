"""Fixing one sentence of a finished book against rendering it first (issue 17 part 3).

Two parts, both through the service's own code in this process (``service.book_render``,
``service.book_fix``), with Redis (``--redis``; keys under a unique prefix) and local storage:

* ``model``: a real book (Alice chapters, ``--chapters``) rendered with the real model, then one
  sentence of its middle chapter edited through ``start_fix`` and the revision planned, rendered
  and rebuilt. Wall time and model calls of each, and their ratio.
* ``assembly``: what a rebuild costs that grows with the book, for a long synthetic book
  (``--hours``; checkpoints written without the model, as ``tests/fixtures/synthetic_book.py``):
  the first assembly (every chapter encoded) against the rebuild after one segment of one chapter
  changed (that chapter encoded, the others' MP3s and M4B packets copied).

    python benchmarks/book_fix.py --chapters 1-3 --hours 0.5
    python benchmarks/book_fix.py --part model --chapters 1-3 --words 150   # reduced size
    python benchmarks/book_fix.py --part assembly --hours 2
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from book_throughput import book_texts, parse_chapters  # noqa: E402
from common import describe_machine, fmt, machine, save_json, table  # noqa: E402


def _services(redis: str, storage: Path, queue: str) -> Any:
    from config.settings import Settings
    from service.services import Services

    settings = Settings.from_env().replace(
        redis_url=redis,
        storage_url=f"file://{storage}",
        key_prefix=f"bench-fix-{uuid.uuid4().hex[:8]}:",
        queue=queue,
    )
    return Services(settings)


def _drop_messages(store: Any, book_id: str) -> None:
    """No worker consumes the queue: the tasks this process plays itself are dropped from the broker."""
    from config.defaults import PRIORITY_STEPS
    from service.keys import Keys

    prefix = store.svc.settings.broker_key_prefix
    store.redis.delete(*(Keys.broker_queue(store.queue(book_id), step, prefix) for step in PRIORITY_STEPS))


class Counting:
    """The engine with its model calls counted and the assembly timed."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def synthesize_segment(self, *args: Any, **kwargs: Any) -> Any:
        """One model call."""
        self.calls += 1
        return self.engine.synthesize_segment(*args, **kwargs)


def _timed_assembly() -> dict[str, float]:
    """Wrap the assembly so its wall time is recorded (the batch that completes a book calls it)."""
    from service import book_render

    seen = {"seconds": 0.0}
    inner = book_render.assemble_book

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seen["seconds"] += time.perf_counter() - started

    book_render.assemble_book = timed  # plan_revision imports it from the module when it is called
    return seen


def _render_all(store: Any, engine: Any, book_id: str) -> None:
    from service.book_render import render_batch

    _drop_messages(store, book_id)
    for batch in range(len(store.plan(book_id)["batches"])):
        render_batch(store, engine, book_id, batch, "bench@host:1")


def model_part(args: argparse.Namespace, redis: str) -> dict[str, Any]:
    """First render of real Alice chapters, then a one-sentence fix and rebuild; wall times and model calls."""
    from engine import Engine
    from engine.book import load_book
    from service import book_render
    from service.book_fix import Edit, FixRequest, start_fix
    from service.books import BookSpec

    texts = book_texts(parse_chapters(args.chapters))
    if args.words:
        # Reduced size: each chapter cut to its first paragraphs of about --words words.
        cut = []
        for text in texts:
            kept, count = [], 0
            for para in text.split("\n\n"):
                if count >= args.words:
                    break
                kept.append(para)
                count += len(para.split())
            cut.append("\n\n".join(kept))
        texts = cut
    text = "\n\n".join(texts)
    # Unique per run, so no checkpoint of an earlier run is reused.
    tag = uuid.uuid4().hex[:6]
    text = text.replace(".", f" {tag}.", 1)
    middle = texts[len(texts) // 2]
    # A whole sentence near the middle of the middle chapter, found once in the book.
    candidates = [m for m in re.finditer(r"(?<=[.!?] )[A-Z][^.!?\n]{15,150}\.", middle) if text.count(m.group()) == 1]
    if not candidates:
        raise SystemExit("no sentence to fix in the middle chapter; pick other chapters or more --words")
    sentence = min(candidates, key=lambda m: abs(m.start() - len(middle) // 2)).group()
    if text.count(sentence) != 1:
        raise SystemExit(f"the sentence to fix occurs {text.count(sentence)} times; pick other chapters")
    with tempfile.TemporaryDirectory(prefix="bench-fix-") as tmp:
        svc = _services(redis, Path(tmp), f"bench-fix-{tag}")
        store = svc.books
        engine = Counting(Engine.from_assets(svc.settings.assets_path, threads=args.threads or None))
        engine.synthesize_segment(
            book_render.plan_segment(
                {"n": 0, "start": 0, "end": 5, "text": "Warm.", "spoken": "Warm.", "boundary": "end"}
            ),
            engine.check("af_heart", 1.0, "en-us"),
        )  # warm the session: neither timing below pays for loading
        engine.calls = 0
        assembly = _timed_assembly()
        book = load_book("bench.txt", data=text.encode(), filename="bench.txt")
        started = time.perf_counter()
        book_id = store.create(book, BookSpec(voice="af_heart"), "bench", source_name="bench.txt")
        store.plan_and_queue(book_id, "bench@host:1")
        _render_all(store, engine, book_id)
        first = time.perf_counter() - started
        rec = store.record(book_id)
        assert rec.state == "succeeded", rec.error_message
        first_calls, first_assembly = engine.calls, assembly["seconds"]
        audio = json.loads(rec.manifest or "{}")["duration"]
        engine.calls = 0
        assembly["seconds"] = 0.0
        chapter = len(texts) // 2 + 1  # the middle chapter, 1-based among those rendered
        replacement = sentence[:-1] + ", or so it seemed."
        started = time.perf_counter()
        fix = FixRequest(edits=(Edit(1, chapter=chapter, find=sentence, replace=replacement),))
        start_fix(svc, book_id, "bench", fix)
        planned_at = time.perf_counter()
        book_render.plan_book(store, book_id, "bench@host:1", engine=lambda: engine)
        _render_all(store, engine, book_id)
        fixed = time.perf_counter() - started
        rec = store.record(book_id)
        assert rec.state == "succeeded" and rec.revision == 2, rec.error_message
        payload = store.payload(book_id)
        result = {
            "chapters": args.chapters,
            "segments": payload["progress"]["segments_total"],
            "audio_seconds": audio,
            "first": {"seconds": first, "model_calls": first_calls, "assembly_seconds": first_assembly},
            "fix": {
                "seconds": fixed,
                "request_seconds": planned_at - started,
                "model_calls": engine.calls,
                "assembly_seconds": assembly["seconds"],
                "segments_rendered": payload["segments_rendered"],
                "segments_reused": payload["segments_reused"],
                "m4b": payload["manifest"].get("m4b", "encoded"),
            },
        }
        svc.close()
        return result


def assembly_part(args: argparse.Namespace, redis: str) -> dict[str, Any]:
    """First assembly of a synthetic book of ``--hours`` against the rebuild after one segment changed."""
    import numpy as np

    from engine.chunk import AudioChunk
    from service.book_render import assemble_book
    from service.books import encode_checkpoint, plan_segment, segment_digest
    from tests.fixtures.synthetic_book import MODEL_ID, RATE, SyntheticEngine, make_book

    chapters = max(3, round(args.hours * 3))  # chapters of about 20 minutes
    per_chapter = max(4, round(args.hours * 3600 / 10 / chapters))
    with tempfile.TemporaryDirectory(prefix="bench-fix-") as tmp:
        svc = _services(redis, Path(tmp), "bench-fix-idle")
        store = svc.books
        book = make_book(svc, chapters=chapters, segments_per_chapter=per_chapter)
        engine = SyntheticEngine()
        assert store.try_assembly(book.id)
        started = time.perf_counter()
        assemble_book(store, engine, book.id)  # type: ignore[arg-type]
        first = time.perf_counter() - started
        # Revision 2: one segment in the middle chapter has new text (and new audio, as a render leaves it).
        plan = json.loads(json.dumps(store.plan(book.id)))
        target = plan["chapters"][chapters // 2]["first"] + per_chapter // 2
        seg = plan["segments"][target]
        seg["text"] = seg["spoken"] = seg["text"].replace("slowly", "quickly")
        seg["end"] = seg["start"] + len(seg["text"])
        rv = engine.check("af_heart", 1.0, "en-us")
        samples = (0.2 * np.sin(np.arange(int(7.3 * RATE)) * 0.05)).astype(np.float32)
        chunk = AudioChunk(index=seg["n"], samples=samples, sample_rate=RATE, segment=plan_segment(seg), words=[])
        key = svc.keys.segment_checkpoint(segment_digest(seg, rv.spec, rv.speed, rv.lang, MODEL_ID))
        svc.storage.put(key, encode_checkpoint(chunk), "application/octet-stream")
        plan["revision"] = 2
        svc.storage.put(
            svc.keys.book_revision_file(book.id, 2, "plan.json"), json.dumps(plan).encode(), "application/json"
        )
        svc.redis.hset(svc.keys.book(book.id), mapping={"revision": 2, "state": "rendering"})
        assert store.try_assembly(book.id)
        started = time.perf_counter()
        assemble_book(store, engine, book.id)  # type: ignore[arg-type]
        rebuild = time.perf_counter() - started
        manifest = store.payload(book.id)["manifest"]
        result = {
            "hours": round(book.seconds / 3600, 2),
            "chapters": chapters,
            "segments": book.segments,
            "first_assembly_seconds": first,
            "rebuild_assembly_seconds": rebuild,
            "m4b": manifest.get("m4b", "encoded"),
            "chapters_rebuilt": sum(1 for c in manifest["chapters"] if c["revision"] == 2),
        }
        svc.close()
        return result


def main() -> None:
    """Run the parts asked for and print their tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["model", "assembly", "both"], default="both")
    p.add_argument("--chapters", default="1-3", help="Alice chapters for the model part (default 1-3)")
    p.add_argument("--words", type=int, default=0, help="cut each chapter to about this many words (0: whole)")
    p.add_argument("--hours", type=float, default=0.5, help="length of the synthetic book (default 0.5)")
    p.add_argument("--threads", type=int, default=0, help="engine threads (default: the engine's)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    info = machine()
    out: dict[str, Any] = {"machine": info}
    print(describe_machine(info))
    if args.part in ("model", "both"):
        m = out["model"] = model_part(args, args.redis)
        first, fix = m["first"], m["fix"]
        print(f"\nAlice chapters {m['chapters']}: {m['segments']} segments, {m['audio_seconds'] / 60:.1f} min of audio")
        print(
            table(
                ["", "wall s", "model calls", "assembly s", "segments rendered / reused"],
                [
                    ["first render", fmt(first["seconds"]), first["model_calls"], fmt(first["assembly_seconds"]), "all"],
                    [
                        "one-sentence fix",
                        fmt(fix["seconds"]),
                        fix["model_calls"],
                        fmt(fix["assembly_seconds"]),
                        f"{fix['segments_rendered']} / {fix['segments_reused']}",
                    ],
                    ["fix / first", fmt(fix["seconds"] / first["seconds"], 3), "", "", ""],
                ],
            )
        )
        print(f"fix: request {fix['request_seconds']:.3f} s; M4B {fix['m4b']}")
    if args.part in ("assembly", "both"):
        a = out["assembly"] = assembly_part(args, args.redis)
        print(f"\nsynthetic book: {a['hours']} h, {a['chapters']} chapters, {a['segments']} segments")
        print(
            table(
                ["assembly", "wall s"],
                [
                    ["first (every chapter encoded)", fmt(a["first_assembly_seconds"])],
                    [f"rebuild ({a['chapters_rebuilt']} chapter encoded; {a['m4b']})", fmt(a["rebuild_assembly_seconds"])],
                ],
            )
        )
    save_json(args.json, out)


if __name__ == "__main__":
    main()
