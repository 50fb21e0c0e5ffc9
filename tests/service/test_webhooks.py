"""Webhook checks, signatures and delivery (service/webhooks.py), against real loopback receivers."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import pytest

from config.settings import Settings
from service.jobs import JobSpec
from service.services import Services
from service.webhooks import (
    AllowList,
    DeliveryError,
    WebhookRefusedError,
    check_url,
    deliver,
    is_public,
    key_secret,
    post,
    redact,
    secret_for,
    signature,
    verify,
)
from tests.fixtures.hooks import receiver

REFUSED = [
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
]


@pytest.mark.parametrize("address", REFUSED)
def test_inside_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_internet_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", REFUSED)
def test_check_url_refuses_every_inside_answer(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(WebhookRefusedError) as caught:
        check_url(f"http://{host}:8080/hook", AllowList())
    assert caught.value.details["field"] == "webhook_url"
    assert caught.value.http_status == 400


def test_one_private_answer_among_public_ones_is_refused() -> None:
    # A name that also resolves inside the network could be steered there by whoever runs its DNS.
    def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(WebhookRefusedError, match="SPOOL_WEBHOOK_ALLOW"):
        check_url("https://hooks.example.com/x", AllowList(), resolver=resolver)
    target = check_url("https://hooks.example.com/x?t=1", AllowList.parse(["10.0.0.0/8"]), resolver=resolver)
    assert target.addresses == ("93.184.216.34", "10.0.0.7") and target.path == "/x?t=1"
    assert target.port == 443 and target.host == "hooks.example.com"


def test_allow_list_by_network_and_by_name() -> None:
    allow = AllowList.parse(["127.0.0.1/32", "[::1]", "hooks.internal", " "])
    assert check_url("http://127.0.0.1:9/h", allow).addresses == ("127.0.0.1",)
    assert check_url("http://[::1]:9/h", allow).addresses == ("::1",)
    # IPv4-mapped forms of an allowed network are allowed; others are not.
    mapped = check_url("http://[::ffff:127.0.0.1]:9/h", allow).addresses
    assert [ipaddress.ip_address(a).ipv4_mapped for a in mapped] == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(WebhookRefusedError):
        check_url("http://127.0.0.2:9/h", allow)
    named = check_url("http://hooks.internal/h", allow, resolver=lambda h, p: ["10.1.2.3"])
    assert named.addresses == ("10.1.2.3",)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/x", "http:///x", "gopher://a/b"],
)
def test_only_plain_http_urls_are_called(url: str) -> None:
    with pytest.raises(WebhookRefusedError):
        check_url(url, AllowList(), resolver=lambda h, p: ["93.184.216.34"])


def test_unresolvable_host_is_refused() -> None:
    with pytest.raises(WebhookRefusedError, match="does not resolve"):
        check_url("http://no-such-host.invalid/x", AllowList())


def test_redact_drops_query_credentials_and_fragment() -> None:
    assert redact("https://a.example:8443/hook/x?token=SECRET#frag") == "https://a.example:8443/hook/x?…"
    assert redact("http://u:p@[::1]/") == "http://[::1]/"
    assert "SECRET" not in redact("http://h/?SECRET")


def test_signature_verifies_and_rejects_tampering() -> None:
    body = b'{"id": "x", "state": "succeeded"}'
    now = int(time.time())
    header = signature("s3cret", now, body)
    assert header.startswith(f"t={now},v1=")
    assert verify("s3cret", header, body)
    assert not verify("s3cret", header, body + b" ")
    assert not verify("other", header, body)
    assert not verify("s3cret", signature("s3cret", now - 3600, body), body)  # replayed an hour later
    assert not verify("s3cret", "v1=abc", body)


def test_secret_per_key_else_per_deployment() -> None:
    settings = Settings(api_keys={"alice-key-123": "alice"}, webhook_secret="deploy")
    assert secret_for(settings, "alice") == key_secret("alice-key-123") != "deploy"
    assert secret_for(settings, "bob") == "deploy"
    assert secret_for(Settings(), "public") is None


def test_post_never_follows_a_redirect() -> None:
    with receiver() as inside, receiver("redirect", location="") as outside:
        with receiver("redirect", location=inside.url + "/stolen") as hop:
            target = check_url(hop.url + "/hook", AllowList.parse(["127.0.0.1"]))
            assert post(target, b"{}", {"Content-Type": "application/json"}, 2.0) == 302
        assert hop.count() == 1 and inside.count() == 0
        assert outside.count() == 0


def test_post_abandons_a_dripping_receiver_at_the_deadline() -> None:
    with receiver("drip") as drip:
        target = check_url(drip.url + "/slow", AllowList.parse(["127.0.0.1"]))
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="within 1"):
            post(target, b"{}", {}, 1.0)
        took = time.monotonic() - started
    # Every read got a byte within 0.25 s, yet the whole delivery stopped at its one deadline.
    assert 0.9 < took < 1.6, took
    assert drip.count() == 1


def test_https_to_a_plain_server_fails_fast() -> None:
    # TLS is verified against the URL's name (sent as SNI); a server that does not speak it is an error.
    with receiver() as plain:
        target = check_url(plain.url.replace("http://", "https://") + "/h", AllowList.parse(["127.0.0.1"]))
        started = time.monotonic()
        with pytest.raises(DeliveryError):
            post(target, b"{}", {}, 2.0)
        assert time.monotonic() - started < 2.5


def test_deliver_checks_the_address_again_at_send_time(settings: Settings) -> None:
    # Accepted when submitted (say the allow-list changed, or DNS now answers with loopback):
    # the delivery resolves and checks again, and never reaches the receiver.
    strict = Services(settings.replace(webhook_allow=()))
    try:
        with receiver() as hook:
            job, _ = strict.jobs.create(JobSpec(text="x", webhook_url=hook.url + "/h?token=t"), owner="public")
            strict.jobs.set_state(job.id, "failed", error_code="x", error_message="y")
            assert deliver(strict, job.id, 1) is None
            record = strict.jobs.get(job.id)
            assert hook.count() == 0
        assert (record.webhook_state, record.webhook_attempts) == ("refused", 1)
    finally:
        strict.close()


def test_deliver_signs_records_and_schedules_retries(settings: Settings, caplog: Any) -> None:
    svc = Services(settings)
    try:
        with receiver() as hook:
            job, _ = svc.jobs.create(
                JobSpec(text="x", webhook_url=hook.url + "/h?token=SECRET"), owner="public"
            )
            assert svc.jobs.get(job.id).webhook_state == "pending"
            svc.jobs.set_state(job.id, "failed", error_code="x", error_message="y")
            with caplog.at_level("INFO", logger="spool.webhooks"):
                assert deliver(svc, job.id, 1) is None
            hit = hook.hits[0]
        assert hit.path == "/h?token=SECRET"
        assert verify(settings.webhook_secret or "", hit.headers["Spool-Signature"], hit.body)
        assert json.loads(hit.body)["state"] == "failed"
        record = svc.jobs.get(job.id)
        assert (record.webhook_state, record.webhook_attempts, record.webhook_last_status) == (
            "delivered",
            1,
            204,
        )
        assert "SECRET" not in caplog.text and "answered 204" in caplog.text
        # Nobody listening: the first attempt asks for a retry after the backoff, the last gives up.
        svc.jobs.set_fields(job.id, webhook_url="http://127.0.0.1:9/h")
        assert deliver(svc, job.id, 1) == pytest.approx(settings.webhook_backoff)
        assert svc.jobs.get(job.id).webhook_state == "retrying"
        assert deliver(svc, job.id, settings.webhook_attempts) is None
        assert svc.jobs.get(job.id).webhook_state == "failed"
    finally:
        svc.close()
