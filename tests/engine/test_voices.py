"""Voices: all 54 by name, blends in Kokoro-FastAPI's form, user archives, and clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from engine.exceptions import AssetError, InvalidSpeedError, InvalidVoiceSpecError, UnknownVoiceError
from engine.voices import VoiceStore, check_speed, parse_blend


@pytest.fixture(scope="module")
def store(assets_dir: Path) -> VoiceStore:
    return VoiceStore.load(assets_dir / "voices")


def test_all_54_voices_with_languages(store: VoiceStore) -> None:
    assert len(store) == 54
    langs = {info.language for info in store.info()}
    assert langs == {"en-us", "en-gb", "es", "fr-fr", "hi", "it", "ja", "pt-br", "cmn"}


def test_blend_weights_are_normalised_and_mixed(store: VoiceStore) -> None:
    assert parse_blend("af_bella(2)+af_sky(1)") == (("af_bella", 2 / 3), ("af_sky", 1 / 3))
    assert parse_blend("af_bella+af_sky") == (("af_bella", 0.5), ("af_sky", 0.5))
    voice = store.resolve("af_bella(2)+af_sky(1)")
    expected = (2 * store.get("af_bella") + store.get("af_sky")) / 3
    assert np.allclose(voice.style, expected, atol=1e-6)
    assert voice.is_blend and voice.lang == "en-us"


@pytest.mark.parametrize("spec", ["af_bella(0)", "af_bella(-1)+af_sky", "af_bella(x)", "af_bella((2)", ""])
def test_bad_blends_name_the_form(store: VoiceStore, spec: str) -> None:
    with pytest.raises(InvalidVoiceSpecError) as info:
        store.resolve(spec)
    assert "af_bella(2)+af_sky(1)" in info.value.message


def test_unknown_voice_suggests_close_names(store: VoiceStore) -> None:
    with pytest.raises(UnknownVoiceError) as info:
        store.resolve("af_hart")
    assert "af_heart" in info.value.message


@pytest.mark.parametrize("speed", [0.49, 2.01, "fast", None, True, float("inf")])
def test_speed_out_of_range(speed: object) -> None:
    with pytest.raises(InvalidSpeedError, match="0.5 to 2.0"):
        check_speed(speed)


def test_a_users_npz_archive_loads(store: VoiceStore, tmp_path: Path) -> None:
    archive = tmp_path / "voices-v1.0.bin"
    with open(archive, "wb") as fh:
        np.savez(fh, af_heart=store.get("af_heart").reshape(510, 1, 256), bm_george=store.get("bm_george"))
    loaded = VoiceStore.load(archive)
    assert loaded.names() == ["af_heart", "bm_george"]
    assert np.array_equal(loaded.get("af_heart"), store.get("af_heart"))


def test_a_truncated_voice_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "af_bad.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(AssetError, match="spool models fetch"):
        VoiceStore.load(tmp_path)


@pytest.mark.parametrize(
    "spec",
    [
        "af_heart(" + " " * 50_000 + "x",  # cubic in the old pattern: 1,600 spaces took 1.3 s
        "af_heart(" + "1" * 50_000,
        "+".join(["af_heart(1"] * 5_000),
        "(" * 50_000,
    ],
)
def test_hostile_voice_specs_are_refused_in_linear_time(spec: str) -> None:
    from engine.voices import MAX_VOICE_SPEC_CHARS, parse_blend

    started = time.perf_counter()
    with pytest.raises(InvalidVoiceSpecError, match=str(MAX_VOICE_SPEC_CHARS)):
        parse_blend(spec)
    assert time.perf_counter() - started < 0.1
    # Under the cap, the hand-written reader is linear too.
    started = time.perf_counter()
    with pytest.raises(InvalidVoiceSpecError):
        parse_blend(spec[: MAX_VOICE_SPEC_CHARS - 1])
    assert time.perf_counter() - started < 0.1
