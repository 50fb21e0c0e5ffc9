"""Phoneme budget per model call: audio seconds per CPU second for each bulk budget (issue 18).

One process, one warm engine on ``--threads`` threads. The same text (the first paragraphs
of an Alice chapter, up to ``--chars`` characters) is split with each bulk budget
(``split_text(max_phonemes=...)``; the first-segment budget and its growth stay the
defaults) and rendered; the budgets are interleaved in rounds, the order reversed every
other round, so a change in the machine's load hits them all. CPU is this process's own
user + system time (``time.process_time``), which the other processes on a shared machine
do not inflate the way they inflate wall time.

Printed per budget (medians over rounds): segments, model calls over 510 tokens (split
again), audio s, speech s (audio without the pauses the engine adds between segments),
CPU s, audio s per CPU s and speech s per CPU s, and their ratio to the first budget.

    python benchmarks/budgets.py
    python benchmarks/budgets.py --budgets 100,180,300 --chars 600 --rounds 1    # quicker
"""

from __future__ import annotations

import argparse
import sys
import time

from common import ASSETS, describe_machine, fmt, load_text, machine, median, save_json, table


def paragraphs_upto(text: str, chars: int) -> str:
    """Whole paragraphs from the start of ``text`` (heading skipped) up to about ``chars`` characters."""
    paras = [p for p in text.split("\n\n") if p.strip()][1:]
    out: list[str] = []
    for p in paras:
        if out and sum(len(x) for x in out) + len(p) > chars:
            break
        out.append(p)
    return "\n\n".join(out)


def main() -> None:
    """Parse arguments, render the text with every budget in interleaved rounds, print a table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default="alice-ch1", help="text name or path (default alice-ch1)")
    p.add_argument(
        "--chars", type=int, default=1200, help="whole paragraphs up to N characters (default 1200)"
    )
    p.add_argument(
        "--budgets", default="100,180,300,450", help="bulk budgets to compare (estimated phonemes)"
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--voice", default="af_heart")
    p.add_argument("--assets", default=str(ASSETS))
    p.add_argument("--json", default=None, metavar="OUT", help="also write every measurement here")
    args = p.parse_args()

    from engine import Engine
    from engine.segment import split_text

    info = machine()
    print(describe_machine(info), file=sys.stderr, flush=True)
    _, full = load_text(args.text)
    text = paragraphs_upto(full, args.chars)
    budgets = [int(b) for b in args.budgets.split(",")]
    eng = Engine.from_assets(args.assets, threads=args.threads)
    rv = eng.check(args.voice)
    plans = {b: split_text(text, lang=rv.lang, max_phonemes=b) for b in budgets}
    runs: list[dict] = []
    for rnd in range(args.rounds):
        order = budgets if rnd % 2 == 0 else budgets[::-1]
        for b in order:
            segs = plans[b]
            tokens = [len(eng.model.tokenize(eng.phonemize(s, rv.lang).text)[0]) for s in segs if s.spoken]
            cpu0, t0 = time.process_time(), time.perf_counter()
            audio = speech = 0.0
            for chunk in eng.stream(text, voice=args.voice, segments=segs):
                audio += chunk.duration
                speech += chunk.speech_end
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
            runs.append(
                {
                    "budget": b,
                    "round": rnd,
                    "segments": len(segs),
                    "max_tokens": max(tokens),
                    "over_510": sum(t > 510 for t in tokens),
                    "audio_s": audio,
                    "speech_s": speech,
                    "cpu_s": cpu,
                    "wall_s": wall,
                }
            )
            print(
                f"# round {rnd + 1} budget {b}: {len(segs)} segments, audio {audio:.1f} s, cpu {cpu:.1f} s, "
                f"{audio / cpu:.3f} audio s per CPU s",
                file=sys.stderr,
                flush=True,
            )
    rows = []
    summary = {}
    for b in budgets:
        rs = [r for r in runs if r["budget"] == b]
        s = {k: median(r[k] for r in rs) for k in ("audio_s", "speech_s", "cpu_s", "wall_s")}
        s["audio_per_cpu"] = median(r["audio_s"] / r["cpu_s"] for r in rs)
        s["speech_per_cpu"] = median(r["speech_s"] / r["cpu_s"] for r in rs)
        summary[b] = s
    base = summary[budgets[0]]
    for b in budgets:
        s = summary[b]
        r0 = next(r for r in runs if r["budget"] == b)
        rows.append(
            [
                b,
                r0["segments"],
                r0["max_tokens"],
                r0["over_510"],
                s["audio_s"],
                s["speech_s"],
                s["cpu_s"],
                fmt(s["audio_per_cpu"], 3),
                fmt(s["speech_per_cpu"], 3),
                fmt(s["audio_per_cpu"] / base["audio_per_cpu"]) + "x",
                fmt(s["speech_per_cpu"] / base["speech_per_cpu"]) + "x",
            ]
        )
    print(describe_machine(info))
    print(
        f"# {args.text}: {len(text.split())} words, {args.threads} thread(s), medians of {args.rounds} rounds"
    )
    print(
        table(
            [
                "budget",
                "segments",
                "max tokens",
                ">510",
                "audio s",
                "speech s",
                "CPU s",
                "audio/CPU",
                "speech/CPU",
                "audio vs first",
                "speech vs first",
            ],
            rows,
        )
    )
    print(f"# load avg after: {' '.join(str(x) for x in machine()['loadavg'])}")
    save_json(args.json, {"benchmark": "budgets", "machine": info, "args": vars(args), "runs": runs})


if __name__ == "__main__":
    main()
