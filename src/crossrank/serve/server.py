"""How uvicorn runs the app: its settings, and an HTTP/1.1 connection with a deadline for request headers.

uvicorn times out idle keep-alive connections only: a client that opens a connection and sends
nothing, or trickles a request's headers a byte at a time, holds it open forever, and a few
hundred of those exhaust the server (slowloris). An ASGI middleware cannot see such a connection
(the app is called once the headers are complete), so the deadline lives in the protocol, a
subclass of uvicorn's own. The body's deadline is in :class:`~crossrank.serve.middleware.GuardMiddleware`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from fastapi import FastAPI

from crossrank.serve.config import ServeConfig

__all__ = ["header_deadline_protocol", "uvicorn_config"]

log = logging.getLogger("crossrank.serve")

#: seconds an idle keep-alive connection is kept between requests (uvicorn's own default)
KEEP_ALIVE_S = 5


def header_deadline_protocol(seconds: float, base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """Return uvicorn's HTTP protocol class, closing connections that send no complete headers in time.

    The deadline starts when a connection opens and again when a response ends on a kept-alive
    connection; it stops when a request's headers are complete (the body has its own deadline,
    in the app). A connection past it, with no request in progress, is closed.

    Args:
        seconds: the deadline, in seconds.
        base: uvicorn's protocol class to extend (``H11Protocol`` or ``HttpToolsProtocol``);
            default: the one uvicorn picks itself (httptools when installed).
    """
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    parent: Any = base  # uvicorn's classes share these attributes without a common typed base

    class HeaderDeadlineProtocol(parent):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None
        _partial = False  # part of a request arrived since the deadline was armed

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._header_timer is not None:
                if self._in_request():
                    self._disarm_header_deadline()
                else:
                    self._partial = True

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self._in_request():
                self._arm_header_deadline()  # the next request's headers are due in time too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def _in_request(self) -> bool:
            """Return whether a request's headers have arrived and its response is not finished."""
            cycle = self.cycle
            return cycle is not None and not cycle.response_complete

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._partial = False
            self._header_timer = self.loop.call_later(seconds, self._header_deadline_passed)

        def _disarm_header_deadline(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline_passed(self) -> None:
            self._header_timer = None
            if self._in_request() or self.transport.is_closing():
                return
            # a trickled request is worth a line; an idle connection (a browser's spare one) is not
            level = logging.INFO if self._partial else logging.DEBUG
            log.log(level, "closed a connection that sent no complete request headers within %g s", seconds)
            self.transport.close()

    HeaderDeadlineProtocol.__qualname__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadlineProtocol


def uvicorn_config(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8080, **overrides: Any) -> uvicorn.Config:
    """Return the uvicorn settings ``crossrank serve`` runs an app from :func:`create_app` with.

    The header deadline (``header_timeout_s`` of the app's :class:`ServeConfig`), keep-alive
    connections closed after 5 idle seconds, no ``Server`` header, no WebSocket stack, no
    access log (the app logs one line per request) and a graceful shutdown that lets in-flight
    requests finish within their timeout.

    Args:
        app: the app, as :func:`create_app` returned it.
        host: address to bind.
        port: port to bind.
        overrides: any other :class:`uvicorn.Config` argument, which wins.

    Example:
        >>> server = uvicorn.Server(uvicorn_config(create_app("default"), port=8080))  # doctest: +SKIP
        >>> server.run()  # doctest: +SKIP
    """
    config: ServeConfig = app.state.crossrank.config
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": header_deadline_protocol(config.header_timeout_s),
        "timeout_keep_alive": KEEP_ALIVE_S,
        "log_config": None,  # logs go through the caller's logging: no request lines from uvicorn
        "access_log": False,
        "ws": "none",  # no WebSocket routes: do not load a WebSocket stack
        "server_header": False,
        # on SIGTERM, in-flight requests finish (each within its timeout) before the process exits
        "timeout_graceful_shutdown": int(config.timeout_s) + 5,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)
