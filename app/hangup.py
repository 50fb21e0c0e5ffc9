"""Noticing a streaming client that hung up while nothing is being sent to it.

A stream of a queued job writes nothing until the job renders, so a write error cannot tell that
its client left, and the stream would hold its open-stream slot (and a web thread) until the job
renders or the idle timeout. Instead, while a stream waits it looks at its connection's socket
without writing or consuming anything: ``poll`` with no wait, then a one-byte ``MSG_PEEK``. A
socket that reads end-of-file (the client closed it), or reports a hang-up or an error, means
the client is gone. Bytes waiting to be read (a pipelined request) mean nothing: the client is
still there.

The socket comes from the WSGI environ: gunicorn puts it under ``gunicorn.socket`` (every worker
class, gthread included) and werkzeug's server under ``werkzeug.socket``. Behind a reverse proxy
it is the proxy's connection, which nginx closes when its own client leaves (unless
``proxy_ignore_client_abort`` is on). A TLS socket terminated in gunicorn itself is looked at
through a duplicate of its descriptor: end-of-file shows only when the client sent no TLS
close_notify first, so there the SSE keep-alive comments do the work. A server that exposes no
socket gets no probe (:func:`hangup_probe` returns None).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("spool.api.hangup")

#: Environ keys under which WSGI servers expose the client connection's socket.
SOCKET_KEYS: tuple[str, ...] = ("gunicorn.socket", "werkzeug.socket")

#: poll() events that mean the connection is over whatever is buffered.
_GONE_EVENTS = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)


def connection_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """The client connection's socket from a WSGI environ, or None when the server exposes none."""
    for name in SOCKET_KEYS:
        sock = environ.get(name)
        if isinstance(sock, socket.socket):
            return sock
    return None


def _peek_eof(sock: socket.socket) -> bool:
    """True when a readable socket has reached end-of-file (or failed); False when bytes are waiting."""
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
    try:
        if isinstance(sock, ssl.SSLSocket):
            # SSLSocket.recv takes no flags: peek at the TCP bytes through a duplicate descriptor.
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as raw:
                return raw.recv(1, flags) == b""
        return sock.recv(1, flags) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # reset, or the descriptor is already closed


class HangupProbe:
    """Callable: True once the client of this connection has gone (it stays True)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.gone = False

    def __call__(self) -> bool:
        if self.gone:
            return True
        try:
            fd = self.sock.fileno()
            if fd < 0:
                self.gone = True
                return True
            poller = select.poll()
            poller.register(fd, select.POLLIN | _GONE_EVENTS)
            ready = poller.poll(0)
        except (OSError, ValueError):
            self.gone = True
            return True
        for _, events in ready:
            # POLLRDHUP / POLLHUP: the client shut its side. POLLIN alone: EOF or a pipelined request.
            if events & _GONE_EVENTS or (events & select.POLLIN and _peek_eof(self.sock)):
                self.gone = True
        if self.gone:
            log.info("the stream's client hung up")
        return self.gone


def hangup_probe(environ: Mapping[str, Any]) -> Callable[[], bool] | None:
    """A probe for the request's connection (see the module docstring), or None without a socket."""
    sock = connection_socket(environ)
    return HangupProbe(sock) if sock is not None else None


__all__ = ["HangupProbe", "connection_socket", "hangup_probe"]
