"""``/v1/lexicons``: CRUD in JSON and PLS, IPA checks, owners kept apart, and jobs that use them.

Jobs created here go to the ``idle`` queue, which no worker consumes; the rendering is tested in
tests/e2e/test_pronunciation.py.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app
from config.settings import Settings
from engine.lexicon import Lexicon

ALICE = {"Authorization": "Bearer alice-secret-1"}
BOB = {"Authorization": "Bearer bob-secret-22"}

ENTRIES = [
    {"grapheme": "Hermione", "phonemes": "hɜːmˈaɪəni"},
    {"grapheme": "W3C", "alias": "World Wide Web Consortium", "case_sensitive": True},
]

PLS = """<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa" xml:lang="en-US">
  <lexeme><grapheme>Hermione</grapheme><phoneme>hɜːmˈaɪəni</phoneme></lexeme>
  <lexeme><grapheme>Ron</grapheme><alias>Ronald</alias></lexeme>
</lexicon>"""


@pytest.fixture(scope="module")
def keyed_app(settings: Settings) -> Iterator[Any]:
    application = create_app(
        settings.replace(queue="idle", api_keys={"alice-secret-1": "alice", "bob-secret-22": "bob"})
    )
    yield application
    application.extensions["spool"].close()


@pytest.fixture
def api(keyed_app: Any) -> Any:
    return keyed_app.test_client()


def test_crud_in_json(api: Any) -> None:
    created = api.post("/v1/lexicons", json={"name": "hp", "entries": ENTRIES}, headers=ALICE)
    assert created.status_code == 201, created.data
    body = created.get_json()
    lexicon_id, first = body["id"], body["version"]
    assert body["entry_count"] == 2 and body["entries"][1]["case_sensitive"] is True
    assert created.headers["Location"].endswith(f"/v1/lexicons/{lexicon_id}")
    assert api.get(f"/v1/lexicons/{lexicon_id}", headers=ALICE).get_json()["entries"] == body["entries"]
    listed = api.get("/v1/lexicons", headers=ALICE).get_json()["data"]
    assert lexicon_id in [x["id"] for x in listed] and "entries" not in listed[0]

    changed = api.put(
        f"/v1/lexicons/{lexicon_id}", json={"name": "hp", "entries": ENTRIES[:1]}, headers=ALICE
    ).get_json()
    assert changed["version"] != first and changed["versions"] == [changed["version"], first]

    assert api.delete(f"/v1/lexicons/{lexicon_id}", headers=ALICE).status_code == 204
    gone = api.get(f"/v1/lexicons/{lexicon_id}", headers=ALICE)
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "lexicon_not_found"


def test_pls_upload_and_export_round_trip(api: Any) -> None:
    created = api.post(
        "/v1/lexicons?name=pls", data=PLS.encode(), headers=ALICE | {"Content-Type": "application/pls+xml"}
    )
    assert created.status_code == 201, created.data
    body = created.get_json()
    assert [e["grapheme"] for e in body["entries"]] == ["Hermione", "Ron"] and body["lang"] == "en-US"
    exported = api.get(f"/v1/lexicons/{body['id']}?format=pls", headers=ALICE)
    assert exported.mimetype == "application/pls+xml"
    assert Lexicon.from_pls(exported.data).version == body["version"]
    uploaded = api.post(
        "/v1/lexicons",
        data={"file": (io.BytesIO(exported.data), "names.pls")},
        headers=ALICE,
        content_type="multipart/form-data",
    ).get_json()
    assert uploaded["version"] == body["version"] and uploaded["name"] == "names"


def test_bad_ipa_is_a_400_naming_the_symbols(api: Any) -> None:
    response = api.post(
        "/v1/lexicons", json={"entries": [{"grapheme": "Zed", "phonemes": "z€d§"}]}, headers=ALICE
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_phonemes" and "€" in error["message"] and "§" in error["message"]
    assert [(b["symbol"], b["position"]) for b in error["details"]["bad_symbols"]] == [("€", 1), ("§", 3)]


@pytest.mark.parametrize(
    "body, code",
    [
        ({"entries": [{"grapheme": "x"}]}, "invalid_lexicon"),
        ({"entries": "nope"}, "invalid_lexicon"),
        ({"entries": [{"grapheme": "x", "alias": "y", "colour": 1}]}, "invalid_lexicon"),
    ],
)
def test_bad_lexicons_are_400s(api: Any, body: Any, code: str) -> None:
    response = api.post("/v1/lexicons", json=body, headers=ALICE)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code


def test_pls_with_entities_is_refused(api: Any) -> None:
    doc = '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaa">]><lexicon>&a;&a;</lexicon>'
    response = api.post("/v1/lexicons", data=doc, headers=ALICE | {"Content-Type": "application/pls+xml"})
    assert response.status_code == 400 and "entities" in response.get_json()["error"]["message"]


def test_another_owner_gets_404s(api: Any) -> None:
    lexicon_id = api.post("/v1/lexicons", json={"entries": ENTRIES}, headers=ALICE).get_json()["id"]
    assert api.get(f"/v1/lexicons/{lexicon_id}", headers=BOB).status_code == 404
    assert api.put(f"/v1/lexicons/{lexicon_id}", json={"entries": []}, headers=BOB).status_code == 404
    assert api.delete(f"/v1/lexicons/{lexicon_id}", headers=BOB).status_code == 404
    assert lexicon_id not in [x["id"] for x in api.get("/v1/lexicons", headers=BOB).get_json()["data"]]
    job = api.post("/v1/jobs", json={"text": "Hi Hermione.", "lexicon": lexicon_id}, headers=BOB)
    assert job.status_code == 404 and job.get_json()["error"]["code"] == "lexicon_not_found"
    assert api.get(f"/v1/lexicons/{lexicon_id}", headers=ALICE).status_code == 200


def test_a_job_records_the_lexicon_version_and_markup(api: Any) -> None:
    lexicon = api.post("/v1/lexicons", json={"entries": ENTRIES}, headers=ALICE).get_json()
    job = api.post(
        "/v1/jobs",
        json={"text": "<speak>Hi <break time='200ms'/> Hermione.</speak>", "lexicon": lexicon["id"], "markup": "ssml"},
        headers=ALICE,
    )
    assert job.status_code == 202, job.data
    body = job.get_json()
    assert (body["lexicon"], body["lexicon_version"], body["markup"]) == (lexicon["id"], lexicon["version"], "ssml")
    plain = api.post("/v1/jobs", json={"text": "Hi."}, headers=ALICE).get_json()
    assert (plain["lexicon"], plain["markup"]) == (None, "none")


@pytest.mark.parametrize(
    "body, code, where",
    [
        ({"text": "<speak>Hi <break time='x'/></speak>", "markup": "ssml"}, "invalid_markup", (1, 11)),
        ({"text": "Hi\n<speak>there", "markup": "ssml"}, "invalid_markup", None),
        ({"text": "Say [it](/ɪ€/).", "markup": "ipa-links"}, "invalid_markup", (1, 12)),
        ({"text": "<speak><voice name='af_nobody'>x</voice></speak>", "markup": "ssml"}, "unknown_voice", None),
        ({"text": "Hi.", "markup": "html"}, "invalid_request", None),
        ({"text": "Hi.", "lexicon": "not-an-id"}, "invalid_request", None),
    ],
)
def test_bad_markup_is_a_400_with_line_and_column(api: Any, body: Any, code: str, where: Any) -> None:
    response = api.post("/v1/jobs", json=body, headers=ALICE)
    assert response.status_code == 400, response.data
    error = response.get_json()["error"]
    assert error["code"] == code
    if where:
        assert (error["details"]["line"], error["details"]["column"]) == where


def test_openapi_documents_lexicons(api: Any) -> None:
    doc = api.get("/openapi.json").get_json()
    assert {"post", "get"} <= set(doc["paths"]["/v1/lexicons"])
    assert {"get", "put", "delete"} <= set(doc["paths"]["/v1/lexicons/{lexicon_id}"])
    schemas = doc["components"]["schemas"]
    assert {"Lexicon", "LexiconEntry", "LexiconRequest", "LexiconList"} <= set(schemas)
    assert {"lexicon", "markup"} <= set(schemas["JobRequest"]["properties"])


def test_a_book_records_the_lexicon_and_refuses_another_owners(api: Any) -> None:
    lexicon = api.post("/v1/lexicons", json={"entries": ENTRIES}, headers=ALICE).get_json()
    text = b"Chapter 1\n\nHermione waved.\n"
    form = {"file": (io.BytesIO(text), "hp.txt"), "lexicon": lexicon["id"]}
    created = api.post("/v1/books", data=form, headers=ALICE, content_type="multipart/form-data")
    assert created.status_code == 202, created.data
    assert (created.get_json()["lexicon"], created.get_json()["lexicon_version"]) == (lexicon["id"], lexicon["version"])
    form = {"file": (io.BytesIO(text), "hp.txt"), "lexicon": lexicon["id"]}
    refused = api.post("/v1/books", data=form, headers=BOB, content_type="multipart/form-data")
    assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "lexicon_not_found"
