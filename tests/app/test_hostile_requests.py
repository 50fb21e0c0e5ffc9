"""Hostile payloads against the running service: each is answered within a second, and ``/healthz`` keeps
answering while they are (issue 14).

The app here queues to a lane no worker consumes, so accepted jobs are only stored (and cancelled at
the end): what is measured is the web process's own handling of the request, where a backtracking
pattern would hold the GIL and stall every thread of the process. Books asked for with plan_only are
parsed by the session's light parse worker (in a child process with limits), as deployed.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

#: The longest any one hostile request (or a health check beside it) may take on a quiet machine.
LIMIT_S = 1.0

N = 50_000

#: (route, JSON body or multipart form, acceptable statuses)
JSON_CASES: dict[str, tuple[str, dict[str, Any], set[int]]] = {
    "blend parser": ("/v1/jobs", {"text": "Hello.", "voice": "af_heart(" + " " * N + "x"}, {400}),
    "blend on the OpenAI route": (
        "/v1/audio/speech",
        {"model": "tts-1", "input": "Hello.", "voice": "af_heart(" + " " * N + "x"},
        {400},
    ),
    "nested blend": ("/v1/jobs", {"text": "Hello.", "voice": "(" * N}, {400}),
    "spaced thousands": ("/v1/jobs", {"text": "1 000 " * (N // 6)}, {202}),
    "comma groups": ("/v1/jobs", {"text": "1,000" * (N // 5)}, {202}),
    "dotted host": ("/v1/jobs", {"text": "a." * (N // 2)}, {202}),
    "version-like": ("/v1/jobs", {"text": "1.2." * (N // 4)}, {202}),
    "brackets": ("/v1/jobs", {"text": "[" * N}, {202, 400}),
    "ssml": ("/v1/jobs", {"text": "<speak>" + "<s>" * (N // 3), "markup": "ssml"}, {400}),
    "ipa links": ("/v1/jobs", {"text": "[a](/" * (N // 5), "markup": "ipa-links"}, {202, 400}),
    "webhook url": ("/v1/jobs", {"text": "Hello.", "webhook_url": "https://" + "a." * (N // 2) + "com/"}, {400}),
}

BOOK_CASES: dict[str, tuple[str, bytes]] = {
    "markdown headings": ("hostile.md", ("#" * N + " x\n").encode()),
    "markdown emphasis": ("hostile.md", ("*a" * (N // 2)).encode()),
    "markdown images": ("hostile.md", ("![" * (N // 2)).encode()),
    "text chapter lines": ("hostile.txt", ("CHAPTER I.\n" * (N // 11)).encode()),
}


@pytest.fixture(scope="module")
def idle_server(settings: Any) -> Iterator[str]:
    """The app on its own HTTP server, queuing to a lane no worker takes."""
    from werkzeug.serving import make_server

    from app import create_app

    app = create_app(dataclasses.replace(settings, queue="hostile-idle"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        app.extensions["spool"].close()


class HealthProbe(threading.Thread):
    """Polls ``/healthz`` until stopped, recording how long each answer took and its status."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[int, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.done.is_set():
                started = time.perf_counter()
                status = session.get(self.url + "/healthz", timeout=30).status_code
                self.answers.append((status, time.perf_counter() - started))
                self.done.wait(0.05)


def timed_post(url: str, **kwargs: Any) -> tuple[requests.Response, float]:
    """POST and return the answer with its wall time."""
    started = time.perf_counter()
    response = requests.post(url, timeout=60, **kwargs)
    return response, time.perf_counter() - started


@pytest.mark.usefixtures("parse_worker")  # plan_only books are parsed by the light worker, as deployed
def test_hostile_payloads_are_answered_fast_while_healthz_keeps_answering(idle_server: str) -> None:
    probe = HealthProbe(idle_server)
    probe.start()
    results: dict[str, tuple[int, float]] = {}
    accepted: list[str] = []
    try:
        for name, (route, body, statuses) in JSON_CASES.items():
            response, took = timed_post(idle_server + route, json=body)
            results[name] = (response.status_code, took)
            assert response.status_code in statuses, (name, response.status_code, response.text[:300])
            if response.status_code >= 400:
                # A clear JSON error, never a server path or a traceback.
                error = response.json()["error"]
                assert error["message"] and "/work/" not in error["message"], (name, error)
            else:
                accepted.append(response.json()["id"])
        for name, (filename, data) in BOOK_CASES.items():
            response, took = timed_post(
                idle_server + "/v1/books",
                data={"plan_only": "true"},
                files={"file": (filename, io.BytesIO(data))},
            )
            results[name] = (response.status_code, took)
            assert response.status_code in (200, 400, 422), (name, response.status_code, response.text[:300])
    finally:
        probe.done.set()
        probe.join(timeout=60)
        for job_id in accepted:
            requests.delete(f"{idle_server}/v1/jobs/{job_id}", timeout=30)
    slow = {name: took for name, (_, took) in results.items() if took >= LIMIT_S}
    assert not slow, f"hostile requests over {LIMIT_S} s: {slow}"
    assert probe.answers and all(status == 200 for status, _ in probe.answers), probe.answers[:5]
    worst = max(took for _, took in probe.answers)
    assert worst < LIMIT_S, f"/healthz took {worst:.2f} s while hostile requests were handled"
