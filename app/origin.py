"""Cross-site request refusal: a web page elsewhere must not drive a Spool it can reach.

Browsers send multipart and form POSTs to any address without a CORS preflight, so a page on
another site could submit books or cancel jobs on a Spool listening on a user's machine. Every
state-changing request (POST, PUT, PATCH, DELETE) that carries an ``Origin`` (or, without one,
``Sec-Fetch-Site: cross-site``) must come from this server's own host or from an origin listed in
``SPOOL_ALLOWED_ORIGINS``; anything else is answered 403 with a JSON error. Clients that are not
browsers send no Origin and are not affected.
"""

from __future__ import annotations

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


def init_app(app: Flask, allowed_origins: Iterable[str]) -> None:
    """Refuse state-changing requests from other sites (403)."""
    allowed = tuple(allowed_origins)

    @app.before_request
    def _check_origin() -> None:
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
