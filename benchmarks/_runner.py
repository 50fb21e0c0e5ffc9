"""Child process of the benchmarks: load one TTS system, render texts, print one JSON line.

Run in a fresh interpreter per measurement so that the peak memory (``VmHWM`` read from
``/proc/self/status`` here, inside the child) is this run's own. Runs under the project's
venv (``--system spool``) or the peer's bench-env (``--system peer``); only the stdlib and
the system under test are imported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SAMPLE_RATE = 24000


def proc_status_mb(field: str) -> float | None:
    """Read a memory field (e.g. ``VmHWM``, ``VmRSS``) of this process from /proc/self/status, in MB."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------- systems


class System:
    """A loaded TTS system that can stream one text as (samples, sample_rate, info) items."""

    name = "?"

    def stream(self, text: str) -> Iterator[tuple[Any, int, dict]]:
        """Yield audio pieces of ``text`` in order."""
        raise NotImplementedError


class SpoolSystem(System):
    """Spool's engine (``engine.Engine``)."""

    name = "spool"

    def __init__(self, args: argparse.Namespace) -> None:
        t0 = time.perf_counter()
        import engine  # noqa: F401  (timed separately from the model load)

        self.import_s = time.perf_counter() - t0
        from engine import Engine

        t0 = time.perf_counter()
        if args.model or args.voices:
            self.engine = Engine.load(args.model, args.voices, threads=args.threads)
        else:
            try:
                self.engine = Engine.from_assets(args.assets, threads=args.threads)
            except TypeError:  # from_assets without a threads option
                assets = Path(args.assets)
                self.engine = Engine.load(
                    str(assets / "kokoro-v1.0.int8.onnx"), str(assets / "voices"), threads=args.threads
                )
        self.load_s = time.perf_counter() - t0  # Engine.load includes its warm-up
        if args.first_phonemes:
            self.engine.first_max_phonemes = args.first_phonemes
        self.warmup_s = 0.0
        self.voice = args.voice
        self.speed = args.speed

    def stream(self, text: str) -> Iterator[tuple[Any, int, dict]]:
        """Stream with ``Engine.stream``; one item per segment."""
        for chunk in self.engine.stream(text, voice=self.voice, speed=self.speed):
            seg = chunk.segment
            yield chunk.samples, chunk.sample_rate, {"segment": getattr(seg, "text", None)}


class PeerSystem(System):
    """kokoro-onnx, from a session built with the same thread settings."""

    name = "peer"

    def __init__(self, args: argparse.Namespace) -> None:
        t0 = time.perf_counter()
        import onnxruntime as ort
        from kokoro_onnx import Kokoro

        self.import_s = time.perf_counter() - t0
        model = args.model or str(Path(args.assets) / "kokoro-v1.0.int8.onnx")
        t0 = time.perf_counter()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        self.kokoro = Kokoro.from_session(session, args.peer_voices)
        self.load_s = time.perf_counter() - t0
        self.voice = args.voice
        self.speed = args.speed
        self.warmup_s = 0.0
        if args.warmup:  # a warm server: one short render first, as Spool's load does
            t0 = time.perf_counter()
            self.kokoro.create("Hello there.", voice=self.voice, speed=self.speed, lang="en-us")
            self.warmup_s = time.perf_counter() - t0

    def stream(self, text: str) -> Iterator[tuple[Any, int, dict]]:
        """Drive kokoro-onnx's ``create_stream`` async generator from synchronous code."""
        import asyncio

        loop = asyncio.new_event_loop()
        agen = self.kokoro.create_stream(text, voice=self.voice, speed=self.speed, lang="en-us")
        try:
            while True:
                try:
                    samples, rate = loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    break
                yield samples, rate, {}
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()


SYSTEMS: dict[str, Callable[[argparse.Namespace], System]] = {"spool": SpoolSystem, "peer": PeerSystem}


# --------------------------------------------------------------------------- measuring


def render(system: System, text: str, wav_path: str | None, encode: str | None = None) -> dict:
    """Render one text (then encode it as ``encode``, if given), timing the first piece and the whole."""
    import numpy as np

    pieces = []
    first_piece: dict = {}
    ttfa = None
    rate = SAMPLE_RATE
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    for samples, rate, info in system.stream(text):
        now = time.perf_counter()
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if ttfa is None:
            ttfa = now - t0
            first_piece = {"first_audio_s": len(samples) / rate, **info}
        pieces.append(samples)
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    encode_s = encoded_bytes = None
    if encode:  # the service encodes its result; an engine run compared with it does the same
        from engine import encode_audio

        t1 = time.perf_counter()
        encoded_bytes = len(encode_audio(audio, rate, encode))
        encode_s = time.perf_counter() - t1
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    audio_s = len(audio) / rate
    if wav_path:
        write_wav(wav_path, audio, rate)
    return {
        "ttfa_s": ttfa,
        "wall_s": wall,
        "audio_s": audio_s,
        "rtf": audio_s / wall if wall > 0 else None,  # audio seconds per wall second (higher is faster)
        "cpu_s": cpu,
        "pieces": len(pieces),
        "sample_rate": rate,
        "peak_abs": float(np.max(np.abs(audio))) if len(audio) else None,
        "finite": bool(np.isfinite(audio).all()),
        "encode_s": encode_s,
        "encoded_bytes": encoded_bytes,
        **first_piece,
    }


def write_wav(path: str, audio: Any, rate: int) -> None:
    """Write float audio as 16-bit mono WAV (stdlib ``wave``)."""
    import numpy as np

    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def main() -> None:
    """Parse arguments, load the system, render each text ``--repeat`` times, print JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--system", choices=sorted(SYSTEMS), required=True)
    p.add_argument("--text-file", action="append", required=True, help="may be given more than once")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--first-phonemes", type=int, default=None, help="spool: first-segment phoneme budget")
    default_assets = os.environ.get("SPOOL_ASSETS_DIR", str(Path("~/.cache/spool").expanduser()))
    p.add_argument("--assets", default=default_assets)
    p.add_argument("--model", default=None, help="model path (default: the int8 model in --assets)")
    p.add_argument("--voices", default=None, help="Spool voices path (default: from --assets)")
    p.add_argument("--peer-voices", default=None, help="kokoro-onnx voices .npz")
    p.add_argument("--warmup", action="store_true", help="peer: one short render after loading")
    p.add_argument("--repeat", type=int, default=1, help="render the texts this many times in this process")
    p.add_argument("--encode", default=None, help="spool: also encode the audio (wav, mp3, ...), timed")
    p.add_argument("--save-wav", default=None, help="write the first render's audio here")
    p.add_argument("--ready-file", default=None, help="create this file once loaded (for a start barrier)")
    p.add_argument("--go-file", default=None, help="once loaded, wait until this file exists, then render")
    args = p.parse_args()

    texts = [Path(f).read_text(encoding="utf-8") for f in args.text_file]
    rss_start = proc_status_mb("VmRSS")
    system = SYSTEMS[args.system](args)
    out: dict[str, Any] = {
        "system": system.name,
        "threads": args.threads,
        "pid": os.getpid(),
        "import_s": system.import_s,
        "load_s": system.load_s,
        "warmup_s": system.warmup_s,
        "ready_s": system.load_s + system.warmup_s,
        "vmrss_start_mb": rss_start,
        "vmrss_after_load_mb": proc_status_mb("VmRSS"),
        "vmhwm_after_load_mb": proc_status_mb("VmHWM"),
    }
    if args.ready_file:
        Path(args.ready_file).touch()
    if args.go_file:  # several children released together: poll for the parent's go signal
        deadline = time.monotonic() + 3600
        while not Path(args.go_file).exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    out["t_start"] = time.time()  # epoch seconds, comparable between children
    runs = []
    for r in range(args.repeat):
        wav = args.save_wav if (r == 0 and len(texts) == 1) else None
        per_text = [render(system, t, wav, args.encode) for t in texts]
        run = {
            "ttfa_s": per_text[0]["ttfa_s"],
            "wall_s": sum(x["wall_s"] for x in per_text),
            "audio_s": sum(x["audio_s"] for x in per_text),
            "cpu_s": sum(x["cpu_s"] for x in per_text),
            "pieces": sum(x["pieces"] for x in per_text),
            "first_audio_s": per_text[0].get("first_audio_s"),
            "first_segment": per_text[0].get("segment"),
            "peak_abs": max((x["peak_abs"] or 0.0) for x in per_text),
            "finite": all(x["finite"] for x in per_text),
            "encode_s": sum(x["encode_s"] or 0.0 for x in per_text) if args.encode else None,
        }
        run["rtf"] = run["audio_s"] / run["wall_s"] if run["wall_s"] > 0 else None
        if len(texts) > 1:
            run["texts"] = per_text
        runs.append(run)
    out["t_end"] = time.time()
    out.update(runs[0])
    out["runs"] = runs
    out["vmhwm_mb"] = proc_status_mb("VmHWM")  # this process's own peak resident set
    out["vmrss_end_mb"] = proc_status_mb("VmRSS")
    sys.stdout.flush()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
