"""``spool book FIX``: the edit syntax, and the server's answer shown (real HTTP to the test app)."""

from __future__ import annotations

from typing import Any

import pytest

from cli.book_fix import FixUsageError, parse_edit, parse_segment
from cli.main import main


def test_edit_and_segment_syntax() -> None:
    assert parse_edit("3:Hermoine=>Hermione") == {"chapter": 3, "find": "Hermoine", "replace": "Hermione"}
    assert parse_edit("1:a: b=>c => d") == {"chapter": 1, "find": "a: b", "replace": "c => d"}
    assert parse_edit("2:drop this=>") == {"chapter": 2, "find": "drop this", "replace": ""}
    assert parse_segment("12:New: text.") == {"segment": 12, "text": "New: text."}
    for bad in ("Hermoine=>Hermione", "x:a=>b", "3:=>b", "3:no arrow"):
        with pytest.raises(FixUsageError, match="CHAPTER:find=>replace"):
            parse_edit(bad)
    with pytest.raises(FixUsageError, match="N:text"):
        parse_segment("twelve:text")


def test_fix_needs_an_id_and_something_to_change(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["book", "FIX"]) == 1
    assert "needs the book id" in capsys.readouterr().err
    assert main(["book", "FIX", "0" * 32, "--url", "http://127.0.0.1:1"]) == 1
    assert "Nothing to fix" in capsys.readouterr().err


def test_fix_of_an_unknown_book_shows_the_404(live_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["book", "FIX", "0" * 32, "--edit", "1:a=>b", "--url", live_server.url])
    assert code == 1
    err = capsys.readouterr().err
    assert "book_not_found" in err or "No book" in err, err
