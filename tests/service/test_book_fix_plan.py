"""The text side of a fix, without the model: edits applied, and a re-split that keeps unedited segments."""

from __future__ import annotations

import pytest

from engine.book import Chapter
from service.book_fix import _apply, _runs, parse_fix
from service.books import plan_book
from service.exceptions import BookFixError

NAMES = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
CHAPTER = " ".join(f"Sentence {name} is here, and it goes on for a while before it ends." for name in NAMES)


def _keys(text: str) -> list[tuple[str, str, bool, bool]]:
    """What names a segment's checkpoint (besides voice, speed, model): spoken text, boundary, last, lead trim."""
    plan = plan_book([Chapter(0, "One", text)], "en-us")
    return [(s["spoken"], s["boundary"], s["last"], s["trim_lead"]) for s in plan["segments"]]


def test_an_edit_re_splits_only_its_sentence() -> None:
    at = CHAPTER.index("Sentence golf")
    end = CHAPTER.index(".", at) + 1
    edited = _apply(CHAPTER, [(at, end, "A much shorter golf one.", 1)], 1)
    before, after = _keys(CHAPTER), _keys(edited)
    changed = [k for k in after if k not in before]
    assert changed and all("golf" in spoken for spoken, *_ in changed)
    # Every segment without the edited sentence is as it was: its checkpoint is reused.
    assert [k for k in after if "golf" not in k[0]] == [k for k in before if "golf" not in k[0]]


def test_overlapping_edits_are_refused_and_runs_batch_the_rest() -> None:
    with pytest.raises(BookFixError, match="Edits 1 and 2 change overlapping text"):
        _apply("abcdef", [(0, 3, "x", 1), (2, 4, "y", 2)], 1)
    assert _apply("abcdef", [(4, 6, "Z", 2), (0, 1, "", 1)], 1) == "bcdZ"
    assert _runs([0, 1, 2, 3, 4, 9, 11, 12]) == [[0, 4], [4, 5], [9, 10], [11, 13]]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "must be a JSON object"),
        ({"edits": {}}, "'edits' must be a list"),
        ({"edits": ["x"]}, "Edit 1 must be an object"),
        ({"edits": [{"chapter": "2", "find": "a", "replace": "b"}]}, "'chapter' must be a whole number"),
        ({"edits": [{"chapter": 2, "find": "", "replace": "b"}]}, "'find' is empty"),
        ({"edits": [{"segment": 1, "text": 5}]}, "'text' must be a string"),
        ({"voice": 5}, "voice must be"),
    ],
)
def test_malformed_fixes_say_what_is_wrong(body: object, words: str) -> None:
    with pytest.raises(BookFixError, match=words):
        parse_fix(body)
