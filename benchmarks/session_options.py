"""onnxruntime session variants for one-thread workers: load time and audio s per CPU s (issue 18).

One process builds one session per variant from the same model file (the int8 model with
the durations output), wraps each in an Engine, and renders the same text with each in
interleaved rounds (order reversed every other round). CPU is this process's own user +
system time (``time.process_time``). Variants:

* ``base``: the engine's ``session_options`` (all graph optimisations at every load,
  memory pattern off, arena on);
* ``denormal``: base + ``session.set_denormal_as_zero=1``;
* ``optimized-file``: a model file already optimised once by onnxruntime
  (``SessionOptions.optimized_model_filepath``), loaded with the optimiser off;
* ``mem-pattern``: base with the memory pattern on.

    python benchmarks/session_options.py
    python benchmarks/session_options.py --rounds 1 --chars 300    # quicker
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from budgets import paragraphs_upto
from common import ASSETS, describe_machine, fmt, load_text, machine, median, save_json, table


def build(variant: str, model: Path, optimized: Path, threads: int) -> tuple[object, float]:
    """An InferenceSession for ``variant`` and the seconds it took to build."""
    import onnxruntime as ort

    from engine.kokoro import session_options

    opts = session_options(threads)
    source = model
    if variant == "denormal":
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    elif variant == "mem-pattern":
        opts.enable_mem_pattern = True
    elif variant == "optimized-file":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        source = optimized
    t0 = time.perf_counter()
    session = ort.InferenceSession(str(source), sess_options=opts, providers=["CPUExecutionProvider"])
    return session, time.perf_counter() - t0


def main() -> None:
    """Build the variants (timing each build), render interleaved, print a table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default="alice-ch1")
    p.add_argument(
        "--chars", type=int, default=1200, help="whole paragraphs up to N characters (default 1200)"
    )
    p.add_argument("--variants", default="base,denormal,optimized-file")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--assets", default=str(ASSETS))
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args()

    import onnxruntime as ort

    from engine import Engine
    from engine.kokoro import prepare_timed_model, session_options
    from engine.voices import VoiceStore

    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    assets = Path(args.assets).expanduser()
    model = prepare_timed_model(assets / "kokoro-v1.0.int8.onnx") or assets / "kokoro-v1.0.int8.onnx"
    optimized = Path(tempfile.mkdtemp(prefix="spool-ort-")) / "optimized.onnx"
    opts = session_options(args.threads)
    opts.optimized_model_filepath = str(optimized)
    t0 = time.perf_counter()
    ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    write_s = time.perf_counter() - t0
    voices = VoiceStore.load(assets / "voices")
    variants = args.variants.split(",")
    engines = {}
    load_s = {}
    for v in variants:
        session, load_s[v] = build(v, model, optimized, args.threads)
        engines[v] = Engine.from_session(session, voices, assets / "vocab.json")
        engines[v].warm_up()
    _, full = load_text(args.text)
    text = paragraphs_upto(full, args.chars)
    runs = []
    for rnd in range(args.rounds):
        for v in variants if rnd % 2 == 0 else variants[::-1]:
            cpu0 = time.process_time()
            audio = sum(c.duration for c in engines[v].stream(text, voice=args.voice))
            cpu = time.process_time() - cpu0
            runs.append({"variant": v, "round": rnd, "audio_s": audio, "cpu_s": cpu})
            print(f"# round {rnd + 1} {v}: {audio / cpu:.3f} audio s per CPU s", file=sys.stderr, flush=True)
    base = median(r["audio_s"] / r["cpu_s"] for r in runs if r["variant"] == variants[0])
    rows = []
    for v in variants:
        speed = median(r["audio_s"] / r["cpu_s"] for r in runs if r["variant"] == v)
        rows.append([v, fmt(load_s[v], 2), fmt(speed, 3), fmt(speed / base, 3) + "x"])
    print(describe_machine(info))
    print(
        f"# {len(text.split())} words, {args.threads} thread(s), medians of {args.rounds} rounds; "
        f"writing the optimised file took {write_s:.2f} s ({optimized.stat().st_size / 1e6:.1f} MB)"
    )
    print(table(["variant", "session build s", "audio s per CPU s", f"vs {variants[0]}"], rows))
    print(f"# load avg after: {' '.join(str(x) for x in machine()['loadavg'])}")
    save_json(args.json, {"benchmark": "session_options", "machine": info, "load_s": load_s, "runs": runs})


if __name__ == "__main__":
    main()
