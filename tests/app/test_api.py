"""The HTTP API without a worker: validation matrix, job resources, auth, downloads, system routes.

Jobs created here go to the ``idle`` queue, which no worker consumes, so they stay queued.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app
from config.settings import Settings
from service.jobs import JobSpec
from service.keys import new_id

LONG_LIMIT = 200


@pytest.fixture(scope="module")
def idle_app(settings: Settings) -> Iterator[Any]:
    """The app with jobs routed to a queue nobody consumes, and small limits."""
    application = create_app(settings.replace(queue="idle", max_text_chars=LONG_LIMIT, max_body_bytes=4000))
    yield application
    application.extensions["spool"].close()


@pytest.fixture
def api(idle_app: Any) -> Any:
    return idle_app.test_client()


def error_of(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert body and "error" in body, response.data
    assert body["error"]["message"] and body["error"]["code"]
    return body["error"]


OK = {"text": "Hello there."}

MATRIX = [
    ("empty text", {"text": ""}, 400, "invalid_text"),
    ("whitespace text", {"text": " \n\t "}, 400, "invalid_text"),
    ("nothing speakable", {"text": "🎉 ✨ ... !!"}, 400, "invalid_text"),
    ("missing text", {"voice": "af_heart"}, 400, "invalid_text"),
    ("text not a string", {"text": 5}, 400, "invalid_text"),
    ("text too long", {"text": "a" * (LONG_LIMIT + 1)}, 413, "text_too_long"),
    ("unknown voice", {**OK, "voice": "af_nobody"}, 400, "unknown_voice"),
    ("bad blend weight", {**OK, "voice": "af_bella(0)+af_sky"}, 400, "invalid_voice_spec"),
    ("voice not a string", {**OK, "voice": 3}, 400, "unknown_voice"),
    ("speed too high", {**OK, "speed": 3.0}, 400, "invalid_speed"),
    ("speed not a number", {**OK, "speed": "fast"}, 400, "invalid_speed"),
    ("speed boolean", {**OK, "speed": True}, 400, "invalid_speed"),
    ("bad format", {**OK, "format": "m4a"}, 400, "unsupported_format"),
    ("format not a string", {**OK, "format": 7}, 400, "unsupported_format"),
    ("bad language", {**OK, "language": "xx"}, 400, "unsupported_language"),
    ("bad priority", {**OK, "priority": "urgent"}, 400, "invalid_request"),
    ("webhook not http", {**OK, "webhook_url": "ftp://example.com/x"}, 400, "invalid_request"),
    ("webhook not a url", {**OK, "webhook_url": "not a url"}, 400, "invalid_request"),
    ("unknown field", {**OK, "voise": "af_sky"}, 400, "invalid_request"),
    ("array body", [OK], 400, "invalid_request"),
]


@pytest.mark.parametrize("name, body, status, code", MATRIX, ids=[m[0] for m in MATRIX])
def test_validation_matrix(api: Any, name: str, body: Any, status: int, code: str) -> None:
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == status, response.data
    assert error_of(response)["code"] == code


def test_validation_messages_say_what_is_valid(api: Any) -> None:
    assert "af_heart" in error_of(api.post("/v1/jobs", json={**OK, "voice": "af_hart"}))["message"]
    assert "wav" in error_of(api.post("/v1/jobs", json={**OK, "format": "m4a"}))["message"]
    assert "0.5" in error_of(api.post("/v1/jobs", json={**OK, "speed": 9}))["message"]
    assert "en-us" in error_of(api.post("/v1/jobs", json={**OK, "language": "xx"}))["message"]
    assert str(LONG_LIMIT) in error_of(api.post("/v1/jobs", json={"text": "b" * 500}))["message"]


@pytest.mark.parametrize(
    "data, content_type, status, code",
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "malformed_json"),
        (b"\xff\xfe\x00", "application/json", 400, "malformed_json"),
        (b'{"text": "hi"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"text": "hi"}', None, 415, "unsupported_media_type"),
        (b'{"text": "' + b"x" * 5000 + b'"}', "application/json", 413, "payload_too_large"),
    ],
)
def test_body_errors(api: Any, data: bytes, content_type: str | None, status: int, code: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.post("/v1/jobs", data=data, headers=headers)
    assert response.status_code == status and error_of(response)["code"] == code


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("get", "/v1/jobs/" + "0" * 32, 404, "job_not_found"),
        ("get", "/v1/jobs/not-an-id", 404, "job_not_found"),
        ("delete", "/v1/jobs/" + "0" * 32, 404, "job_not_found"),
        ("get", "/v1/jobs/" + "0" * 32 + "/audio", 404, "job_not_found"),
        ("get", "/v1/nothing", 404, "not_found"),
        ("put", "/v1/jobs", 405, "method_not_allowed"),
        ("get", "/v1/jobs?limit=0", 400, "invalid_request"),
        ("get", "/v1/jobs?limit=abc", 400, "invalid_request"),
        ("get", "/v1/jobs?state=done", 400, "invalid_request"),
        ("get", "/v1/jobs?cursor=%%%", 400, "invalid_request"),
    ],
)
def test_routes_errors(api: Any, method: str, path: str, status: int, code: str) -> None:
    response = getattr(api, method)(path)
    assert response.status_code == status and error_of(response)["code"] == code
    if status == 405:
        assert "POST" in response.headers["Allow"]


def test_bad_idempotency_key(api: Any) -> None:
    response = api.post("/v1/jobs", json=OK, headers={"Idempotency-Key": "has space"})
    assert response.status_code == 400 and "Idempotency-Key" in error_of(response)["message"]


def test_create_get_list_cancel(api: Any) -> None:
    response = api.post(
        "/v1/jobs",
        json={
            "text": "Queued and cancelled.",
            "voice": "af_bella(2)+af_sky(1)",
            "format": "ogg",
            "language": "en",
            "priority": "high",
            "webhook_url": "http://127.0.0.1:9/hook",
        },
    )
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == job["links"]["self"]
    assert job["state"] == "queued" and job["format"] == "opus" and job["language"] == "en-us"
    assert job["queue_position"] >= 1 and job["eta_seconds"] > 0
    assert set(job["links"]) == {"self", "audio", "stream", "events"}
    assert job["links"]["stream"].endswith(f"/v1/jobs/{job['id']}/stream")
    got = api.get(f"/v1/jobs/{job['id']}").get_json()
    assert got["id"] == job["id"] and got["progress"] == {
        "segments_done": 0,
        "segments_total": None,
        "audio_seconds": 0.0,
        "percent": 0.0,
    }
    listed = api.get("/v1/jobs?state=queued&limit=200").get_json()
    assert job["id"] in [j["id"] for j in listed["data"]]
    assert api.get(f"/v1/jobs/{job['id']}/audio").status_code == 409
    cancelled = api.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
    assert api.delete(f"/v1/jobs/{job['id']}").status_code == 200
    audio = api.get(f"/v1/jobs/{job['id']}/audio")
    assert audio.status_code == 409 and error_of(audio)["code"] == "job_not_ready"


def test_idempotency_over_http(api: Any) -> None:
    key = uuid.uuid4().hex
    first = api.post("/v1/jobs", json=OK, headers={"Idempotency-Key": key})
    second = api.post("/v1/jobs", json=OK, headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] == second.get_json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    clash = api.post("/v1/jobs", json={"text": "Another text."}, headers={"Idempotency-Key": key})
    assert clash.status_code == 422 and error_of(clash)["code"] == "idempotency_conflict"


def test_request_id_is_honoured(api: Any) -> None:
    response = api.get("/v1/jobs", headers={"X-Request-ID": "client-123"})
    assert response.headers["X-Request-ID"] == "client-123"
    replaced = api.get("/v1/jobs", headers={"X-Request-ID": "bad id with spaces"})
    assert replaced.headers["X-Request-ID"] != "bad id with spaces"
    error = api.get("/v1/jobs/" + "0" * 32, headers={"X-Request-ID": "req-42"})
    assert error_of(error)["request_id"] == "req-42"


def test_request_and_job_ids_reach_the_log(api: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    response = api.post("/v1/jobs", json=OK, headers={"X-Request-ID": "trace-me"})
    job_id = response.get_json()["id"]
    records = [r for r in caplog.records if getattr(r, "request_id", None) == "trace-me"]
    assert records and any(getattr(r, "job_id", None) == job_id for r in records)


def test_api_keys_isolate_owners(settings: Settings) -> None:
    keyed = create_app(
        settings.replace(queue="idle", api_keys={"alice-secret-1": "alice", "bob-secret-22": "bob"})
    )
    client = keyed.test_client()
    alice = {"Authorization": "Bearer alice-secret-1"}
    bob = {"X-API-Key": "bob-secret-22"}
    assert error_of(client.post("/v1/jobs", json=OK))["code"] == "unauthorized"
    assert client.post("/v1/jobs", json=OK).status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer wrong-key-123"}).status_code == 401
    assert client.get("/healthz").status_code == 200  # system routes stay open
    created = client.post("/v1/jobs", json=OK, headers=alice)
    assert created.status_code == 202
    job_id = created.get_json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 200
    for method, path in (("get", ""), ("delete", ""), ("get", "/audio")):
        response = getattr(client, method)(f"/v1/jobs/{job_id}{path}", headers=bob)
        assert response.status_code == 404, (method, path)
    assert job_id not in [j["id"] for j in client.get("/v1/jobs", headers=bob).get_json()["data"]]
    assert job_id in [j["id"] for j in client.get("/v1/jobs", headers=alice).get_json()["data"]]
    # The same Idempotency-Key from two owners makes two jobs.
    a = client.post("/v1/jobs", json=OK, headers={**alice, "Idempotency-Key": "shared"}).get_json()["id"]
    b = client.post("/v1/jobs", json=OK, headers={**bob, "Idempotency-Key": "shared"}).get_json()["id"]
    assert a != b
    keyed.extensions["spool"].close()


def _stored_job(idle_app: Any, data: bytes, fmt: str = "wav") -> str:
    """A succeeded job whose audio is ``data`` (stored directly, no worker)."""
    svc = idle_app.extensions["spool"]
    job, _ = svc.jobs.create(JobSpec(text="Stored.", format=fmt), owner="public", queue="idle")
    svc.jobs.start(job.id)
    key = svc.keys.job_audio(job.id, fmt)
    svc.storage.put(key, data, content_type="audio/wav")
    svc.jobs.succeed(
        job.id,
        {
            "result_key": key,
            "result_size": len(data),
            "result_duration": 1.0,
            "result_content_type": "audio/wav",
            "result_etag": "etag-" + job.id[:8],
        },
    )
    return job.id


def test_audio_download_and_ranges(api: Any, idle_app: Any) -> None:
    data = bytes(range(256)) * 40
    job_id = _stored_job(idle_app, data)
    url = f"/v1/jobs/{job_id}/audio"
    full = api.get(url)
    assert full.status_code == 200 and full.data == data
    assert full.headers["Accept-Ranges"] == "bytes" and full.headers["Content-Length"] == str(len(data))
    assert full.headers["Content-Type"] == "audio/wav" and full.headers["ETag"]
    part = api.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert api.get(url, headers={"Range": "bytes=10000-"}).data == data[10000:]
    assert api.get(url, headers={"Range": "bytes=-16"}).data == data[-16:]
    assert api.get(url, headers={"Range": "bytes=0-99999999"}).data == data
    assert api.get(url, headers={"Range": "bytes=0-1,5-6"}).status_code == 200  # multi-range: whole file
    assert api.get(url, headers={"Range": "pages=1-2"}).status_code == 200
    beyond = api.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    assert error_of(beyond)["code"] == "range_not_satisfiable"
    assert api.get(url, headers={"If-None-Match": full.headers["ETag"]}).status_code == 304
    stale = api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.data == data
    head = api.head(url)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data)) and head.data == b""


def test_audio_redirects_to_presigned_url(api: Any, idle_app: Any) -> None:
    job_id = _stored_job(idle_app, b"RIFF-presigned")
    response = api.get(f"/v1/jobs/{job_id}/audio?redirect=1")
    assert response.status_code == 302
    import urllib.request

    with urllib.request.urlopen(response.headers["Location"], timeout=10) as got:
        assert got.read() == b"RIFF-presigned"


def test_speech_validation(api: Any) -> None:
    cases = [
        ({"model": "tts-9", "input": "Hi."}, "invalid_request"),
        ({"model": "tts-1", "input": ""}, "invalid_text"),
        ({"model": "tts-1", "input": "Hi.", "response_format": "aiff"}, "unsupported_format"),
        ({"model": "tts-1", "input": "Hi.", "speed": 4.0}, "invalid_speed"),
        ({"model": "tts-1", "input": "Hi.", "voice": "nobody"}, "unknown_voice"),
        ({"model": "tts-1", "input": "Hi.", "stream": "yes"}, "invalid_request"),
    ]
    for body, code in cases:
        response = api.post("/v1/audio/speech", json=body)
        assert response.status_code == 400 and error_of(response)["code"] == code, body
    assert "mp3" in error_of(api.post("/v1/audio/speech", json=cases[2][0]))["message"]


def test_openai_routes_answer_errors_in_openai_shape(api: Any) -> None:
    cases = [
        (api.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "speed": 0.3}), 400, "speed"),
        (api.post("/v1/audio/speech", json={"input": "Hi.", "voice": {"name": "x"}}), 400, "voice"),
        (api.post("/v1/audio/speech", json={"input": "Hi.", "stream_format": "sse", "stream": False}), 400, "stream"),
        (api.post("/v1/audio/speech", json={"input": "Hi.", "instructions": 7}), 400, "instructions"),
        (api.get("/v1/audio/speech"), 405, None),
        (api.get("/v1/models/whisper-1"), 404, "model"),
    ]
    for response, status, param in cases:
        error = response.get_json()["error"]
        assert response.status_code == status and error["param"] == param, error
        assert error["type"] == "invalid_request_error" and error["message"] and error["code"]
    # Spool's own routes keep Spool's shape.
    assert "type" not in error_of(api.get("/v1/jobs/" + "0" * 32))


def test_speech_accepts_openai_models_voices_and_formats(api: Any) -> None:
    for model in ("tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2031-01-31", "kokoro"):
        body = {"model": model, "input": "Hi.", "voice": {"id": "marin"}, "response_format": "aac"}
        response = api.post("/v1/audio/speech", json=body, headers={"Accept": "application/octet-stream"})
        # No worker consumes the idle queue: the stream's headers come at once, the audio never does.
        assert response.status_code == 200, response.data
        assert response.headers["Content-Type"] == "audio/aac" and response.headers["X-Spool-Voice"] == "af_kore"
        response.close()
    models = api.get("/v1/models").get_json()
    assert models["object"] == "list" and "gpt-4o-mini-tts" in {m["id"] for m in models["data"]}


def test_speech_times_out_with_a_job_to_poll(settings: Settings) -> None:
    quick = create_app(settings.replace(queue="idle", speech_timeout=0.5))
    response = quick.test_client().post(
        "/v1/audio/speech", json={"input": "Nobody renders this.", "voice": "alloy", "stream": False}
    )
    assert response.status_code == 504
    error = error_of(response)
    assert error["code"] == "job_timeout" and error["details"]["job_id"]
    quick.extensions["spool"].close()


def test_enqueue_failure_fails_the_job_clearly(idle_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = idle_app.extensions["spool"]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(svc, "send_task", broken)
    response = idle_app.test_client().post("/v1/jobs", json=OK)
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "enqueue_failed"
    job = svc.jobs.get(error["details"]["job_id"])
    assert job.state == "failed" and job.error_code == "enqueue_failed"


def test_redis_down_is_503(settings: Settings) -> None:
    down = create_app(settings.replace(redis_url="redis://127.0.0.1:1/0", queue="idle"))
    client = down.test_client()
    response = client.post("/v1/jobs", json=OK)
    assert response.status_code == 503 and error_of(response)["code"] == "service_unavailable"
    assert client.get("/healthz").status_code == 503
    assert client.get("/v1/jobs/" + new_id()).status_code == 503


def test_healthz_reports_storage(api: Any, settings: Settings, s3_endpoint: Any) -> None:
    assert api.get("/healthz").get_json() == {
        "status": "ok",
        "checks": {"redis": "ok", "storage": "ok"},
        "storage": "s3",
    }
    broken = create_app(
        settings.replace(storage_url=f"s3://absent-{uuid.uuid4().hex[:6]}?endpoint={s3_endpoint.url}")
    )
    body = broken.test_client().get("/healthz")
    assert body.status_code == 503 and body.get_json()["checks"]["storage"].startswith("error")


def test_status(api: Any) -> None:
    api.post("/v1/jobs", json=OK)
    status = api.get("/status").get_json()
    assert {"cpu", "gpu", "idle"} <= set(status["queues"])
    assert status["queues"]["idle"]["waiting"] >= 1
    assert set(status["queues"]["idle"]["by_priority"]) >= {"high", "normal", "low"}
    assert status["jobs"]["queued"] >= 1
    assert isinstance(status["workers"], list)


def test_openapi_documents_every_route(api: Any, idle_app: Any) -> None:
    spec = api.get("/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    for rule in idle_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)  # <path:name> -> {name}
        assert path in spec["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], (path, method)
    assert spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobRequest"
    }
    assert "Job" in spec["components"]["schemas"]
    speech = spec["paths"]["/v1/audio/speech"]["post"]
    assert speech["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIError")
    assert {"audio/pcm", "audio/aac", "text/event-stream"} <= set(speech["responses"]["200"]["content"])
    request = spec["components"]["schemas"]["SpeechRequest"]["properties"]
    assert {"instructions", "stream_format", "stream"} <= set(request) and request["stream"]["default"] is True
    upload = spec["paths"]["/v1/books"]["post"]
    assert upload["requestBody"]["content"]["multipart/form-data"]["schema"] == {
        "$ref": "#/components/schemas/BookRequest"
    }
    assert set(upload["responses"]) >= {"200", "202", "400", "413"}
    assert {"Book", "BookPlan", "BookSection", "BookList"} <= set(spec["components"]["schemas"])


def test_no_500_for_odd_inputs(api: Any) -> None:
    odd = [
        {"text": None},
        {"text": ["a"]},
        {"text": "ok", "speed": None},
        {"text": "ok", "speed": float("nan")},
        {"text": "ok", "language": 5},
        {"text": "ok", "webhook_url": 5},
        {"text": "ok", "priority": None},
        {"text": "\x00\x01"},
        {"text": "ok", "voice": "+"},
        {"text": "ok", "voice": "af_sky()"},
        {"text": "ok", "webhook_url": "http://[::1"},
        {"text": "ok", "webhook_url": "http://h:99999/x"},
    ]
    for body in odd:
        response = api.post("/v1/jobs", json=body)
        assert response.status_code < 500, (body, response.data)
