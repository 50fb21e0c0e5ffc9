"""Webhooks: where a finished job may be announced, how it is signed, and its delivery.

A ``webhook_url`` is checked when the job is submitted (:func:`check_url`) and again, freshly
resolved, when it is sent (:func:`deliver`): only public addresses are reached (no loopback,
private, link-local, multicast, reserved or unspecified ones, IPv4-mapped IPv6 included) unless
``SPOOL_WEBHOOK_ALLOW`` lists the address's network or the host's name. The request goes to the
very address that was checked (the name is sent as Host and TLS SNI, so a DNS answer that changes
between check and connect cannot redirect it), redirects are never followed, and one deadline
(``SPOOL_WEBHOOK_TIMEOUT``) bounds the whole delivery, a receiver that drips its answer included.

Deliveries run in the light ``spool.webhook`` task on their own queue (``SPOOL_WEBHOOK_QUEUE``);
the render task only enqueues. Each job records ``webhook_state``, ``webhook_attempts`` and
``webhook_last_status``. Bodies are signed: ``Spool-Signature: t=<unix time>,v1=<hex>`` where
``v1`` is HMAC-SHA256 over ``"<t>.<body>"`` (docs/security.md shows how a receiver verifies it).
The URL's query string (where receivers put tokens) is never logged: see :func:`redact`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from config import defaults
from service.exceptions import InvalidRequestError
from service.jobs import iso_time
from service.task_names import WEBHOOK

if TYPE_CHECKING:
    from config.settings import Settings
    from service.jobs import Job
    from service.services import Services

log = logging.getLogger("spool.webhooks")

#: Content type of webhook bodies.
CONTENT_TYPE = "application/json"

#: Header carrying the signature.
SIGNATURE_HEADER = "Spool-Signature"

#: Longest status line read from a receiver; the rest of its answer is never read.
MAX_STATUS_LINE = 8192

#: Delivery states recorded on the job (``webhook.state``).
STATES: tuple[str, ...] = ("pending", "queued", "retrying", "delivered", "failed", "refused")

#: Statuses worth a retry (besides connection errors and timeouts).
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# KEYS: job. ARGV: state. Moves a pending delivery to queued once: True when this call did.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'webhook_state') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'webhook_state', ARGV[1])
return 1
"""


class WebhookRefusedError(InvalidRequestError):
    """A webhook URL that Spool will not call (scheme, host, or an address inside the network)."""

    code = "webhook_refused"


@dataclass(frozen=True)
class Target:
    """A checked webhook destination: the URL's parts and the addresses it may be sent to."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def redact(url: str | None) -> str:
    """The URL as logged: scheme, host, port and path; no credentials, query or fragment."""
    if not url:
        return "-"
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}" + ("?…" if parts.query else "")


#: NAT64's well-known prefix: its addresses reach the IPv4 address in their last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _plain(address: Address) -> Address:
    """An IPv4-mapped or NAT64 IPv6 address as the IPv4 address it reaches; others as they are."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: Address) -> bool:
    """True for an address on the public internet (not loopback, private, link-local, multicast, ...)."""
    ip = _plain(address)
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


@dataclass(frozen=True)
class AllowList:
    """``SPOOL_WEBHOOK_ALLOW``: networks (CIDRs or single addresses) and host names allowed anyway."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Parse entries such as ``127.0.0.1``, ``10.0.0.0/8``, ``::1`` or ``hooks.internal``."""
        networks = []
        hosts = set()
        for entry in entries:
            entry = entry.strip().strip("[]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows(self, host: str, address: Address) -> bool:
        """True when the host's name or this address is listed."""
        if host.lower().rstrip(".") in self.hosts:
            return True
        plain = _plain(address)
        return any(plain in net or address in net for net in self.networks)


def resolve(host: str, port: int, timeout: float = 5.0) -> list[str]:
    """The addresses ``host`` resolves to (getaddrinfo, bounded by ``timeout`` seconds)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        infos = future.result(timeout=max(0.1, timeout))
    except (concurrent.futures.TimeoutError, OSError, UnicodeError):
        return []
    finally:
        pool.shutdown(wait=False)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in seen:
            seen.append(address)
    return seen


def check_url(
    url: str, allow: AllowList, *, resolver: Resolver | None = None, timeout: float = 5.0
) -> Target:
    """Resolve ``url``'s host and return the target, or raise WebhookRefusedError naming why.

    Every address the name resolves to must be public or allow-listed: a name with one private
    answer among public ones is refused, so a resolver cannot pick the private one later.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise WebhookRefusedError(
            "Invalid webhook_url: give an absolute http:// or https:// URL.", field="webhook_url"
        ) from None
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookRefusedError(
            "Invalid webhook_url: only absolute http:// and https:// URLs are called.", field="webhook_url"
        )
    if parts.username or parts.password:
        raise WebhookRefusedError(
            "Invalid webhook_url: credentials in the URL are not sent; put a token in the path or query.",
            field="webhook_url",
        )
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = (resolver or (lambda h, p: resolve(h, p, timeout)))(host, port)
    if not addresses:
        raise WebhookRefusedError(
            f"webhook_url host {host!r} does not resolve; give a host name with a public address.",
            field="webhook_url",
        )
    for text in addresses:
        address = ipaddress.ip_address(text)
        if not is_public(address) and not allow.allows(host, address):
            raise WebhookRefusedError(
                f"webhook_url host {host!r} is not a public address (loopback, private, link-local, "
                "multicast and reserved addresses are refused); the operator can allow it with "
                "SPOOL_WEBHOOK_ALLOW.",
                field="webhook_url",
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port, path, tuple(addresses))


# -- signing ---------------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Spool-Signature`` value: ``t=<timestamp>,v1=<HMAC-SHA256 of "<t>.<body>">``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance: float = defaults.WEBHOOK_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when ``header`` is a valid signature of ``body`` under ``secret``, made within ``tolerance``."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).rsplit("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


def key_secret(api_key: str) -> str:
    """The webhook secret of an API key: HMAC-SHA256 of ``spool-webhook-v1`` under the key, in hex."""
    return hmac.new(api_key.encode(), defaults.WEBHOOK_KEY_CONTEXT.encode(), hashlib.sha256).hexdigest()


def secret_for(settings: Settings, owner: str) -> str | None:
    """The secret an owner's deliveries are signed with: its API key's, else SPOOL_WEBHOOK_SECRET."""
    for key, name in settings.api_keys.items():
        if name == owner:
            return key_secret(key)
    return settings.webhook_secret


# -- delivery --------------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A delivery that got no status: refused target, connection error, or the deadline."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeliveryError("the delivery deadline passed")
    return left


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """The TLS context of https deliveries: the system's CAs plus ``ca_file``'s, hostname checked."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(
                f"SPOOL_WEBHOOK_CA_FILE could not be loaded ({type(exc).__name__}); give a readable PEM file."
            ) from None
    return context


def post(
    target: Target, body: bytes, headers: Mapping[str, str], timeout: float, *, ca_file: str = ""
) -> int:
    """POST ``body`` to the checked target within ``timeout`` seconds in all; return the HTTP status.

    Connects to the checked addresses only (the name goes in Host and SNI, and an https receiver's
    certificate must be valid for the name, trusted by the system or ``ca_file``), reads nothing
    but the status line, and never follows a redirect: a 3xx is returned as it is.
    """
    deadline = time.monotonic() + timeout
    context = tls_context(ca_file) if target.scheme == "https" else None
    last_error: Exception | None = None
    for address in target.addresses:
        try:
            sock = socket.create_connection((address, target.port), timeout=_remaining(deadline))
        except OSError as exc:
            last_error = exc
            continue
        try:
            if context is not None:
                sock.settimeout(_remaining(deadline))
                sock = context.wrap_socket(sock, server_hostname=target.host)
            host = f"[{target.host}]" if ":" in target.host else target.host
            default_port = 443 if target.scheme == "https" else 80
            authority = host if target.port == default_port else f"{host}:{target.port}"
            lines = [f"POST {target.path} HTTP/1.1", f"Host: {authority}"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
            sock.settimeout(_remaining(deadline))
            sock.sendall("\r\n".join(lines).encode("latin-1") + body)
            status_line = b""
            while b"\r\n" not in status_line:
                sock.settimeout(_remaining(deadline))  # one deadline for the whole answer, not per read
                chunk = sock.recv(1024)
                if not chunk:
                    break
                status_line += chunk
                if len(status_line) > MAX_STATUS_LINE:
                    raise DeliveryError("the receiver's status line is too long")
            parts = status_line.split(b"\r\n", 1)[0].split()
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise DeliveryError("the receiver did not answer with an HTTP status")
            return int(parts[1])
        except (OSError, ssl.SSLError) as exc:
            if isinstance(exc, TimeoutError | socket.timeout) or time.monotonic() >= deadline:
                raise DeliveryError(f"no answer within {timeout:g} s") from None
            last_error = exc
        finally:
            sock.close()
    raise DeliveryError(f"could not connect ({type(last_error).__name__ if last_error else 'no address'})")


def payload(job: Job) -> dict[str, Any]:
    """What a webhook receives: the job's id, state, timings, error or result (no text)."""
    body: dict[str, Any] = {
        "id": job.id,
        "object": "job",
        "event": f"job.{job.state}",
        "state": job.state,
        "format": job.format,
        "created_at": iso_time(job.created_at),
        "started_at": iso_time(job.started_at),
        "finished_at": iso_time(job.finished_at),
        "progress": {
            "segments_done": job.segments_done,
            "segments_total": job.segments_total,
            "audio_seconds": round(job.audio_seconds, 3),
        },
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "result": None,
    }
    if job.state == "succeeded":
        body["result"] = {
            "size": job.result_size,
            "duration": job.result_duration,
            "format": job.format,
            "content_type": job.result_content_type,
        }
    return body


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): the backoff, doubled each time."""
    return settings.webhook_backoff * 2 ** (attempt - 1)


def notify(svc: Services, job: Job) -> bool:
    """Enqueue the webhook of a job that just finished (once per job); True when it was enqueued.

    Called by whoever made the job terminal: the render task, or the API for a cancel while queued.
    Never raises: a broker hiccup leaves the delivery ``pending`` and is logged.
    """
    if not job.webhook_url or not job.is_terminal:
        return False
    try:
        claimed = svc.redis.register_script(_CLAIM)(keys=[svc.keys.job(job.id)], args=["queued"])
        if not claimed:
            return False
    except Exception:
        log.exception("could not queue the webhook of job %s", job.id)
        return False
    try:
        svc.send_task(WEBHOOK, [job.id, 1], queue=svc.settings.webhook_queue, priority=0)
    except Exception:
        log.exception("could not queue the webhook of job %s; it stays pending", job.id)
        try:
            svc.jobs.set_fields(job.id, webhook_state="pending")
        except Exception:
            log.exception("could not mark the webhook of job %s pending again", job.id)
        return False
    log.info("webhook for job %s (%s) queued to %s", job.id, job.state, redact(job.webhook_url))
    return True


def deliver(svc: Services, job_id: str, attempt: int) -> float | None:
    """Make delivery ``attempt`` of a job's webhook and record it; return seconds until a retry, or None."""
    settings = svc.settings
    job = svc.jobs.find(job_id)
    if job is None or not job.webhook_url:
        return None
    url = redact(job.webhook_url)
    body = json.dumps(payload(job)).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": CONTENT_TYPE,
        "User-Agent": "spool-webhook/2",
        "X-Spool-Job-Id": job.id,
        "X-Spool-Event": f"job.{job.state}",
        "X-Spool-Delivery-Attempt": str(attempt),
    }
    secret = secret_for(settings, job.owner)
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
    status: int | None = None
    retry = False
    deadline = time.monotonic() + settings.webhook_timeout  # one for the lookup, connect, send and answer
    try:
        target = check_url(job.webhook_url, AllowList.parse(settings.webhook_allow), timeout=settings.webhook_timeout)
    except WebhookRefusedError as exc:
        log.warning("webhook for job %s to %s refused at send time: %s", job.id, url, exc.message)
        svc.jobs.set_fields(job.id, webhook_state="refused", webhook_attempts=attempt)
        return None
    try:
        status = post(
            target, body, headers, max(0.0, deadline - time.monotonic()), ca_file=settings.webhook_ca_file
        )
        ok = 200 <= status < 300
        retry = not ok and status in RETRY_STATUSES
        log.info("webhook for job %s to %s answered %d (attempt %d)", job.id, url, status, attempt)
    except DeliveryError as exc:
        ok, retry = False, True
        log.warning("webhook for job %s to %s failed (attempt %d): %s", job.id, url, attempt, exc)
    more = retry and attempt < settings.webhook_attempts
    state = "delivered" if ok else ("retrying" if more else "failed")
    fields: dict[str, Any] = {"webhook_state": state, "webhook_attempts": attempt}
    if status is not None:
        fields["webhook_last_status"] = status
    svc.jobs.set_fields(job.id, **fields)
    return backoff(settings, attempt) if more else None
