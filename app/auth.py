"""API keys: when ``SPOOL_API_KEYS`` is set, every /v1 request names its owner by key.

A key is sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Each key
maps to an owner name (``key:name`` pairs, or a hash of the key); jobs are stored
under that owner, and an owner never sees another's jobs (they answer 404, as if
they did not exist). Without configured keys every request is the ``public`` owner.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from flask import Flask, g, request

from service.exceptions import AuthenticationError

#: Owner of every job when no API keys are configured.
PUBLIC_OWNER = "public"

#: Path prefix of the routes that require a key.
PROTECTED_PREFIX = "/v1/"


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """Extract the API key from ``Authorization: Bearer`` or ``X-API-Key`` (None when neither is sent)."""
    auth = headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("X-API-Key", "").strip()
    return key or None


def owner_for(key: str | None, api_keys: Mapping[str, str]) -> str:
    """Return the owner name for a presented key, or raise AuthenticationError."""
    if not api_keys:
        return PUBLIC_OWNER
    if key is None:
        raise AuthenticationError(
            "An API key is required: send 'Authorization: Bearer YOUR_KEY' or 'X-API-Key: YOUR_KEY'."
        )
    owner = None
    # Compare against every key in constant time, so timing does not reveal a matching prefix.
    for candidate, name in api_keys.items():
        if hmac.compare_digest(candidate.encode(), key.encode()):
            owner = name
    if owner is None:
        raise AuthenticationError("The API key is not valid: check it, or ask the operator for one.")
    return owner


def current_owner() -> str:
    """Owner of the current request (set by the auth hook)."""
    return g.get("owner", PUBLIC_OWNER)


def init_app(app: Flask, api_keys: Mapping[str, str]) -> None:
    """Require a key on every /v1 request when keys are configured; record the owner in ``g.owner``."""

    @app.before_request
    def _authenticate() -> None:
        if not request.path.startswith(PROTECTED_PREFIX) or request.method == "OPTIONS":
            g.owner = PUBLIC_OWNER if not api_keys else None
            return
        g.owner = owner_for(key_from_headers(request.headers), api_keys)
