"""Safe defaults for exposure: no open (keyless) Spool on an address other machines can reach.

``spool serve`` and the gunicorn config (the container's entry) call :func:`check_bind` before
listening: with no ``SPOOL_API_KEYS``, only loopback addresses (and Unix sockets) are allowed,
unless the operator sets ``SPOOL_ALLOW_ANONYMOUS=1`` on purpose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from config.settings import Settings


class ExposureError(RuntimeError):
    """Spool was asked to listen on a reachable address with no API keys; the message says what to set."""


def is_loopback_bind(address: str) -> bool:
    """True for a bind that only this machine can reach: loopback addresses, localhost, Unix sockets."""
    address = address.strip()
    if address.startswith(("unix:", "fd://")):
        return True
    host = address
    if address.startswith("["):
        host = address[1:].split("]", 1)[0]
    elif address.count(":") == 1:
        host = address.split(":", 1)[0]
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name: it may resolve to anything, so it counts as reachable
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check_bind(addresses: Iterable[str], settings: Settings) -> None:
    """Raise ExposureError when a non-loopback address would serve without API keys (and no opt-in)."""
    if settings.auth_enabled or settings.allow_anonymous:
        return
    exposed = [a for a in addresses if not is_loopback_bind(a)]
    if exposed:
        raise ExposureError(
            f"Refusing to listen on {', '.join(exposed)} with no API keys: anyone who can reach it could "
            "submit, list, download and cancel every job. Set SPOOL_API_KEYS (key:name,...), listen on "
            "127.0.0.1, or set SPOOL_ALLOW_ANONYMOUS=1 to serve without keys on purpose."
        )
