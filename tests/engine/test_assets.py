"""Assets: the cache verifies, damage is caught with a fix-it message, a fetch never half-writes."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from engine import assets
from engine.exceptions import AssetError


def test_the_cache_verifies(assets_dir: Path) -> None:
    reports = assets.verify(assets_dir)
    assert all(r.ok for r in reports), [r for r in reports if not r.ok]
    paths = assets.locate(assets_dir)
    assert paths.model.stat().st_size == assets.MODEL_BYTES
    assert len(list(paths.voices.glob("*.bin"))) == assets.VOICE_COUNT
    assert paths.piper_voices() == [assets.PIPER_VOICE]


@pytest.fixture
def copy(assets_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the cache (voices, vocab, manifest) with the model hard-linked or copied."""
    root = tmp_path / "cache"
    shutil.copytree(assets_dir / "voices", root / "voices")
    shutil.copytree(assets_dir / "piper", root / "piper")
    for name in (assets.VOCAB_FILE, assets.MANIFEST_FILE):
        shutil.copy(assets_dir / name, root / name)
    shutil.copy(assets_dir / assets.MODEL_FILE, root / assets.MODEL_FILE)
    return root


def test_a_truncated_model_is_refused_with_the_fix(copy: Path) -> None:
    model = copy / assets.MODEL_FILE
    with open(model, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(AssetError) as info:
        assets.locate(copy)
    assert "spool models fetch" in info.value.message
    bad = {r.name: r for r in assets.verify(copy)}
    assert not bad["kokoro model (int8)"].ok


def test_a_flipped_byte_fails_the_checksum(copy: Path) -> None:
    model = copy / assets.MODEL_FILE
    with open(model, "r+b") as fh:
        fh.seek(5_000_000)
        byte = fh.read(1)
        fh.seek(5_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    report = {r.name: r for r in assets.verify(copy)}["kokoro model (int8)"]
    assert not report.ok and "SHA-256" in report.detail
    assert {r.name: r for r in assets.verify(copy, full=False)}["kokoro model (int8)"].ok


def test_a_corrupt_voice_is_named(copy: Path) -> None:
    voice = copy / "voices" / "af_heart.bin"
    data = bytearray(voice.read_bytes())
    data[100] ^= 0xFF
    voice.write_bytes(bytes(data))
    report = {r.name: r for r in assets.verify(copy)}["kokoro voices"]
    assert not report.ok and "af_heart.bin" in report.detail


def test_missing_voices_say_how_to_fix(copy: Path) -> None:
    shutil.rmtree(copy / "voices")
    with pytest.raises(AssetError, match="spool models fetch"):
        assets.locate(copy)


def test_fetch_keeps_verified_files_and_downloads_nothing(copy: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    result = assets.fetch(copy, source_dir=copy / "no-such-dir")
    assert result.written == []
    assert len(result.kept) == 4
    after = {
        p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file() and p.name != assets.MANIFEST_FILE
    }
    assert all(before[p] == t for p, t in after.items() if p in before)
    # The durations-exposing copy of the model is written once, beside it.
    assert (copy / "kokoro-v1.0.int8.durations.onnx").is_file()


def test_a_tampered_voices_tarball_is_rejected_before_writing(copy: Path, tmp_path: Path) -> None:
    shutil.rmtree(copy / "voices")
    source = tmp_path / "mirror"
    source.mkdir()
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        data = b"\0" * assets.VOICE_FILE_BYTES
        info = tarfile.TarInfo("package/voices/af_fake.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (source / "kokoro-js-1.2.1.tgz").write_bytes(payload.getvalue())
    with pytest.raises(AssetError, match="integrity"):
        assets.fetch(copy, source_dir=source, piper=False)
    assert not (copy / "voices").exists()
