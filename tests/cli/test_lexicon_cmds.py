"""``--lexicon FILE`` on the command line: PLS and JSON files read the same lexicon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.engine_cmds import load_lexicon_file
from engine.exceptions import LexiconError
from engine.lexicon import Lexicon, LexiconEntry

LEXICON = Lexicon([LexiconEntry("Hermione", phonemes="hɜːmˈaɪəni"), LexiconEntry("W3C", alias="W three C")])


def test_pls_and_json_files_load_the_same_entries(tmp_path: Path) -> None:
    pls = tmp_path / "names.pls"
    pls.write_bytes(LEXICON.to_pls())
    as_json = tmp_path / "names.json"
    as_json.write_text(json.dumps({"entries": [e.to_dict() for e in LEXICON.entries]}), encoding="utf-8")
    from_pls, from_json = load_lexicon_file(str(pls)), load_lexicon_file(str(as_json))
    assert from_pls.entries == from_json.entries == LEXICON.entries
    assert from_pls.name == from_json.name == "names"


def test_a_broken_file_says_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(LexiconError, match="not valid JSON"):
        load_lexicon_file(str(bad))
