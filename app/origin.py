"""Cross-site request refusal: a web page elsewhere must not drive a Spool it can reach.

Browsers send multipart and form POSTs to any address without a CORS preflight, so a page on
another site could submit books or cancel jobs on a Spool listening on a user's machine. Every
state-changing request (POST, PUT, PATCH, DELETE) that carries an ``Origin`` (or, without one,
``Sec-Fetch-Site: cross-site``) must come from this server's own host or from an origin listed in
``SPOOL_ALLOWED_ORIGINS``; anything else is answered 403 with a JSON error. Clients that are not
browsers send no Origin and are not affected.

DNS rebinding gets around that check (a page's own name made to point at 127.0.0.1 is "same
origin"), so an open Spool (no API keys, ``SPOOL_ALLOW_ANONYMOUS`` unset: it listens on loopback
only) also answers only requests whose ``Host`` is a loopback name or address, or the host of an
origin in ``SPOOL_ALLOWED_ORIGINS``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from flask import Flask, request

from service.exceptions import ServiceError

#: Methods that change state.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CrossOriginError(ServiceError):
    """A browser request from another site."""

    code = "cross_origin_refused"
    http_status = 403


def _netloc(origin: str) -> str | None:
    """``host[:port]`` of an origin, lower-cased; None for ``null`` or junk."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()


def origin_allowed(origin: str, host: str, allowed: Iterable[str]) -> bool:
    """True when ``origin`` is this host (any scheme: a TLS proxy may sit in front) or listed."""
    netloc = _netloc(origin)
    if netloc is None:
        return False
    if netloc == host.lower():
        return True
    return any(origin.strip().rstrip("/").lower() == entry.strip().rstrip("/").lower() for entry in allowed)


def is_loopback_host(host: str) -> bool:
    """True for a Host header naming this machine: localhost, 127.x.x.x or [::1], any port."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name in ("localhost", "localhost.") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def init_app(app: Flask, allowed_origins: Iterable[str], *, loopback_only: bool = False) -> None:
    """Refuse state-changing requests from other sites (403); with ``loopback_only``, foreign Hosts too."""
    allowed = tuple(allowed_origins)
    allowed_hosts = {netloc for netloc in (_netloc(entry) for entry in allowed) if netloc}

    @app.before_request
    def _check_origin() -> None:
        if loopback_only and not is_loopback_host(request.host) and request.host.lower() not in allowed_hosts:
            raise CrossOriginError(
                f"Host {request.host[:200]!r} refused: this Spool has no API keys, so it answers only "
                "requests to localhost. Add the origin to SPOOL_ALLOWED_ORIGINS, or set SPOOL_API_KEYS.",
                host=request.host[:200],
            )
        if request.method not in UNSAFE_METHODS:
            return
        origin = request.headers.get("Origin")
        if origin is None:
            if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
                raise CrossOriginError(
                    "Cross-site request refused: a page on another site may not change anything here."
                )
            return
        if not origin_allowed(origin, request.host, allowed):
            raise CrossOriginError(
                f"Cross-site request refused: Origin {origin[:200]!r} is not this server. "
                "If that page may use this Spool, add its origin to SPOOL_ALLOWED_ORIGINS.",
                origin=origin[:200],
            )
