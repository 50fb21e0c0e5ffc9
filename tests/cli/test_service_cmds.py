"""The service commands: ``spool submit`` / ``spool status`` over real HTTP, and their error handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from engine.audio import decode_audio


def test_submit_to_nowhere_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "Hello.", "--url", "http://127.0.0.1:1", "--wait"]) == 1
    assert "Cannot reach Spool at http://127.0.0.1:1" in capsys.readouterr().err


def test_submit_validation_error_is_shown(live_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "Hello.", "--voice", "af_nobody", "--url", live_server.url]) == 1
    err = capsys.readouterr().err
    assert "Unknown voice 'af_nobody'" in err and "unknown_voice" in err


def test_submit_wait_download_and_status(live_server: Any, worker: Any, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.wav"
    text_file = tmp_path / "in.txt"
    text_file.write_text("The command line waits for this.", encoding="utf-8")
    assert main(["submit", str(text_file), "--url", live_server.url, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    job_id = captured.out.strip().splitlines()[0]
    assert "succeeded" in captured.err and "wrote" in captured.err
    samples, rate = decode_audio(out.read_bytes(), "wav")
    assert 1.0 < len(samples) / rate < 8.0
    assert main(["status", job_id, "--url", live_server.url]) == 0
    assert "succeeded" in capsys.readouterr().out
