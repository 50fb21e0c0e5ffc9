"""Lexicon matching time on 50,000-character texts: hostile shapes and a real book, median of 5 runs.

Usage: PYTHONPATH=. python benchmarks/lexicon_matching.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from engine.book import load_book
from engine.lexicon import Lexicon, LexiconEntry
from engine.markup import parse_markup


def median_seconds(fn, runs: int = 5) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    entries = [LexiconEntry(("a " * 11) + f"x{k}", alias="y") for k in range(2000)]
    entries += [LexiconEntry("a" * 99 + "b", alias="z", whole_word=False)]
    entries += [LexiconEntry(f"in{k}", alias="y", whole_word=False) for k in range(199)]
    entries += [LexiconEntry(f"word{k}", phonemes="wˈɜɹd") for k in range(5000)]
    hostile = Lexicon(entries)
    book = load_book(Path("tests/data/pg1342-pride-and-prejudice.epub"))
    prose = book.text[20_000:70_000]
    names = Lexicon([LexiconEntry(w, phonemes="nˈAm") for w in ("Elizabeth", "Darcy", "Bingley", "Bennet")])
    texts = {
        "a a a ... (25,000 one-letter words)": ("a " * 25_000, hostile),
        "aaa... (50,000 letters)": ("a" * 50_000, hostile),
        "word0 word1 ... (every word an entry)": (" ".join(f"word{k % 7000}" for k in range(10_000))[:50_000], hostile),
        "in1in1... (16,000 in-word matches)": ("in1" * 16_000, hostile),
        "Pride and Prejudice, 50,000 chars, 7,200 entries": (prose, hostile),
        "Pride and Prejudice, 50,000 chars, 4 names": (prose, names),
    }
    print(f"{'text':52} {'matches':>8} {'median s':>9}")
    for name, (text, lex) in texts.items():
        lex.matches("warm up")
        print(f"{name:52} {len(lex.matches(text)):>8} {median_seconds(lambda lex=lex, text=text: lex.apply(text)):>9.3f}")
    ssml = "<speak>" + '<s>Word <break time="10ms"/> <sub alias="x">y</sub> [a](/ʌ/)</s>' * 800 + "</speak>"
    print(f"{'SSML, ' + format(len(ssml), ',') + ' chars, 3,200 elements':52} {'':>8} "
          f"{median_seconds(lambda: parse_markup(ssml, 'ssml')):>9.3f}")


if __name__ == "__main__":
    main()
