"""``spool book --plan``: the chapter list without the model, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import engine
from cli.main import main
from tests.fixtures.epubs import gutenberg_several_per_file


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to load the model."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("--plan must not load the model")

    monkeypatch.setattr(engine.Engine, "from_assets", refuse)
    monkeypatch.setattr(engine.Engine, "load", refuse)


@pytest.mark.usefixtures("no_model")
def test_plan_json_lists_every_section_and_why_it_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "g.epub"
    path.write_bytes(gutenberg_several_per_file())
    assert main(["book", str(path), "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    read = [s["title"] for s in plan["sections"] if s["selected"]]
    assert read == [f"CHAPTER {r}. The {r} Road" for r in ("I", "II", "III", "IV", "V")]
    assert {s["reason"] for s in plan["skipped"]} == {
        "Project Gutenberg header",
        "title page",
        "contents page",
        "Project Gutenberg licence",
    }


@pytest.mark.usefixtures("no_model")
def test_plan_table_shows_numbers_minutes_and_reasons(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "g.epub"
    path.write_bytes(gutenberg_several_per_file())
    assert main(["book", str(path), "--plan", "--chapters", "2"]) == 0
    out = capsys.readouterr().out
    assert "skipped: Project Gutenberg header" in out and "skipped: contents page" in out
    line = next(line for line in out.splitlines() if "CHAPTER II." in line)
    assert line.split()[0] == "2" and line.rstrip().endswith("yes")
    assert "1 chapters" in out


def test_rendering_needs_an_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "g.epub"
    path.write_bytes(gutenberg_several_per_file())
    assert main(["book", str(path)]) == 2
    assert "--output" in capsys.readouterr().err
