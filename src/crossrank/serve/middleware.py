"""ASGI middleware: metrics and size-and-timing logs around every request; API keys and body limits.

Both are plain ASGI (no response buffering), so a rejected request costs no body read.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from crossrank.serve.config import ApiKeys
from crossrank.serve.errors import ErrorKind, dialect_of, error_body, error_status
from crossrank.serve.metrics import Metrics

__all__ = ["STATS_KEY", "GuardMiddleware", "ObserveMiddleware", "send_error"]

log = logging.getLogger("crossrank.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: scope key where handlers leave sizes and timings for the request log line
STATS_KEY = "crossrank.stats"

# paths anyone may call: liveness and readiness probes, and the playground page with its assets
# (the page holds no data; the API calls it makes carry the key the user types in)
_OPEN_PATHS = frozenset({"/health", "/ready", "/"})
# where the playground's CSS and JS are mounted
_ASSETS = "/static"


async def send_error(
    send: Send, path: str, kind: ErrorKind, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send an error response in the dialect of ``path``."""
    dialect = dialect_of(path)
    body = json.dumps(error_body(dialect, kind, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error_status(dialect, kind),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ObserveMiddleware:
    """Count and time every request by route and status; log one line of sizes and timings.

    Nothing a client sent is logged beyond sizes: the route is the matched template (``other``
    for unknown paths), never the raw path or query string. An exception that escapes a handler
    becomes a 500 in the route's error shape, logged by its type only.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        route = path if path in self.routes else _mount_of(path, self.routes)
        status = 500
        started = False
        sent = 0
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def observing_send(message: Message) -> None:
            nonlocal status, started, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, observing_send)
        except Exception as err:
            log.error("%s %s failed: %s", scope.get("method"), route, type(err).__name__)
            log.debug("traceback", exc_info=True)
            if not started:
                await send_error(observing_send, path, "internal", "internal error; see the server log")
        finally:
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            stats = scope.get(STATS_KEY) or {}
            extra = "".join(f" {k}={v}" for k, v in stats.items())
            log.info(
                "%s %s %d in=%dB out=%dB %.1fms%s",
                scope.get("method"),
                route,
                status,
                received,
                sent,
                seconds * 1000,
                extra,
            )


class GuardMiddleware:
    """Refuse requests without a valid API key (401) and bodies over the limit (413)."""

    def __init__(self, app: ASGIApp, *, keys: ApiKeys | None, max_body_bytes: int) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = scope.get("headers", [])
        if self.keys is not None and not _is_open(path):
            auth = next((v for k, v in headers if k == b"authorization"), None)
            if not self.keys.check(auth.decode("latin-1") if auth is not None else None):
                await send_error(
                    send,
                    path,
                    "unauthorized",
                    "missing or invalid API key; send `Authorization: Bearer <key>`",
                    [(b"www-authenticate", b'Bearer realm="crossrank"')],
                )
                return
        length = next((v for k, v in headers if k == b"content-length"), None)
        limit = self.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            await send_error(send, path, "body_too_large", _too_large(limit))
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # a chunked body with no Content-Length
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


def _mount_of(path: str, routes: frozenset[str]) -> str:
    """Return the route a path without its own route is counted under: ``/static`` for assets, else ``other``."""
    return _ASSETS if path.startswith(_ASSETS + "/") and _ASSETS in routes else "other"


def _is_open(path: str) -> bool:
    """Return whether ``path`` may be called without a key (no ``..`` segments: defence in depth)."""
    return path in _OPEN_PATHS or (path.startswith(_ASSETS + "/") and "/.." not in path)


def _too_large(limit: int) -> str:
    return f"request body is larger than the server's limit of {limit} bytes; send fewer or shorter documents"
