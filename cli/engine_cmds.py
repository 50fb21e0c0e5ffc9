"""``spool say`` and ``spool voices``: the engine straight from the command line, no service needed."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from config.settings import Settings
from engine.audio import StreamEncoder, encode_audio, format_for_path, normalize_format
from engine.exceptions import InvalidTextError, LexiconError
from engine.lexicon import Lexicon
from engine.markup import MARKUP_MODES
from engine.voices import voice_info


def _load_engine(args: argparse.Namespace):
    """Load the engine from --model/--voices or the assets cache."""
    from engine import Engine

    settings = Settings.from_env()
    threads = args.threads or settings.engine_threads or None
    providers = list(settings.providers) or None
    if args.model or args.voices:
        if not (args.model and args.voices):
            raise InvalidTextError("Pass both --model and --voices (or neither, to use the assets cache).")
        return Engine.load(
            args.model, args.voices, vocab_path=args.vocab, threads=threads, providers=providers
        )
    return Engine.from_assets(args.assets or settings.assets_path, threads=threads, providers=providers)


def _read_text(args: argparse.Namespace) -> str:
    """The text to speak: the argument, ``--file``, or stdin when the argument is ``-`` or absent."""
    if args.file:
        return Path(args.file).read_text(encoding="utf-8")
    if args.text is None or args.text == "-":
        if sys.stdin.isatty() and args.text is None:
            raise InvalidTextError('Give the text to speak: spool say "Hello there." (or --file, or stdin).')
        return sys.stdin.read()
    return args.text


def load_lexicon_file(path: str) -> Lexicon:
    """A lexicon from a W3C PLS file (.pls, .xml) or Spool's JSON (.json)."""
    data = Path(path).expanduser().read_bytes()
    name = Path(path).stem
    if data.lstrip()[:1] in (b"{", b"["):
        try:
            lexicon = Lexicon.from_dict(json.loads(data))
        except ValueError as exc:
            raise LexiconError(f"{path} is not valid JSON: {exc}.") from None
        return lexicon if lexicon.name else dataclasses.replace(lexicon, name=name)
    return Lexicon.from_pls(data, name=name)


def cmd_say(args: argparse.Namespace) -> int:
    """Synthesise text to a file (format from --format or the extension) or to stdout."""
    text = _read_text(args)
    fmt = (
        normalize_format(args.format)
        if args.format
        else (format_for_path(args.output) if args.output else "wav")
    )
    engine = _load_engine(args)
    rv = engine.check(args.voice, args.speed, args.lang)
    lexicon = load_lexicon_file(args.lexicon).validate(engine.model.vocab) if args.lexicon else None
    started = time.perf_counter()
    first = None
    pieces = []
    chunks = engine.stream(
        text, voice=args.voice, speed=args.speed, lang=args.lang, lexicon=lexicon, markup=args.markup
    )
    for chunk in chunks:
        first = first if first is not None else time.perf_counter() - started
        pieces.append(chunk.samples)
        if not args.quiet:
            print(
                f"\r  segment {chunk.index + 1}: {chunk.segment.text[:60]!r}".ljust(80),
                end="",
                file=sys.stderr,
            )
    import numpy as np

    samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    elapsed = time.perf_counter() - started
    if args.output and args.output != "-":
        Path(args.output).write_bytes(encode_audio(samples, rv.sample_rate, fmt))
    else:
        enc = StreamEncoder(fmt, rv.sample_rate)
        sys.stdout.buffer.write(enc.header() + enc.encode(samples) + enc.finish())
    if not args.quiet:
        seconds = len(samples) / rv.sample_rate
        print(
            f"\r{seconds:.2f} s of audio in {elapsed:.2f} s ({seconds / elapsed:.1f}x real time, "
            f"first audio {first or 0:.2f} s) -> {args.output or 'stdout'}".ljust(80),
            file=sys.stderr,
        )
    return 0


def cmd_voices(args: argparse.Namespace) -> int:
    """List the voices: name, language, gender."""
    from engine import assets
    from engine.voices import VoiceStore

    settings = Settings.from_env()
    root = Path(args.assets or settings.assets_path)
    paths = assets.locate(root)
    store = VoiceStore.load(args.voices or paths.voices)
    for info in store.info():
        if args.lang and info.language != args.lang:
            continue
        print(f"{info.name:<14} {info.language:<6} {info.gender:<7} {info.language_name}")
    for name in paths.piper_voices():
        print(f"{'piper:' + name:<14} en-us  male    Piper ({name})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``say`` and ``voices`` to the ``spool`` command."""
    say = subparsers.add_parser("say", help="speak text into an audio file with the local engine")
    say.add_argument("text", nargs="?", help="text to speak ('-' or nothing: read stdin)")
    say.add_argument("-f", "--file", help="read the text from this file")
    say.add_argument("-o", "--output", help="output file (format from extension); '-' or none: stdout")
    say.add_argument("--format", help="wav, flac, mp3, opus or pcm (default: from -o, else wav)")
    say.add_argument(
        "--voice", default="af_heart", help="voice name, blend af_bella(2)+af_sky(1), or piper:NAME"
    )
    say.add_argument("--speed", type=float, default=1.0, help="0.5 to 2.0")
    say.add_argument("--lang", help="language (default: the voice's), e.g. en-us, en-gb, es, fr-fr")
    say.add_argument("--lexicon", help="pronunciation lexicon: a W3C PLS file or Spool's JSON")
    say.add_argument("--markup", choices=MARKUP_MODES, default="none", help="inline markup in the text")
    say.add_argument("--threads", type=int, help="engine threads")
    say.add_argument("--assets", help="assets directory (default: SPOOL_ASSETS_DIR or ~/.cache/spool)")
    say.add_argument("--model", help="your own kokoro-v1.0.onnx (with --voices)")
    say.add_argument("--voices", help="your own voices-v1.0.bin or directory of voice files")
    say.add_argument("--vocab", help="vocab.json for --model (default: next to the model)")
    say.add_argument("-q", "--quiet", action="store_true")
    say.set_defaults(func=cmd_say)

    voices = subparsers.add_parser("voices", help="list the voices")
    voices.add_argument("--lang", help="only this language, e.g. en-gb")
    voices.add_argument("--assets", help="assets directory")
    voices.add_argument("--voices", help="a voices file or directory to list instead")
    voices.set_defaults(func=cmd_voices)


__all__ = ["register", "voice_info"]
