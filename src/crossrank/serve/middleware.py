"""ASGI middleware: metrics and size-and-timing logs; allowed hosts; API keys, body limits and hygiene.

All are plain ASGI (no response buffering). A request refused for its Host or its key costs no
body read; a body is read in full, within a deadline, before any handler sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from crossrank.serve.config import LOOPBACK_HOSTS, ApiKeys
from crossrank.serve.errors import ErrorKind, dialect_of, error_body, error_status
from crossrank.serve.metrics import Metrics
from crossrank.serve.schemas import json_body_problem

__all__ = ["STATS_KEY", "GuardMiddleware", "HostMiddleware", "ObserveMiddleware", "send_error"]

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
# probes answer under any Host: load balancers send the name they know, and the answer holds no data
_PROBES = frozenset({"/health", "/ready"})
#: the status counted and logged for a request whose client hung up before it was answered (nginx's)
CLIENT_CLOSED = 499
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
    becomes a 500 in the route's error shape, logged by its type only. A request whose client
    hung up before any answer is counted and logged with status 499.
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
        hung_up = False

        async def counting_receive() -> Message:
            nonlocal received, hung_up
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            elif message["type"] == "http.disconnect":
                hung_up = True
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
            if not started and hung_up:
                status = CLIENT_CLOSED
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


class HostMiddleware:
    """Answer only requests whose ``Host`` names this server: refuse the others with 421.

    A page on another site can point its own host name at this machine's address (DNS
    rebinding) and then call the API as same-origin; its requests carry that name in ``Host``.
    Answered: the loopback names, the address the connection arrived on, and ``allowed``
    (names, ``*.domain`` for subdomains, IP addresses, or ``*`` for any Host), with any port.
    The probes (``/health``, ``/ready``) answer under any Host. A request without a ``Host``
    (HTTP/1.0; browsers always send one) is answered.
    """

    def __init__(self, app: ASGIApp, *, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.any_host = "*" in allowed
        names = {_normal_host(h) for h in (*LOOPBACK_HOSTS, *allowed) if h != "*"}
        self.names = frozenset(n for n in names if not n.startswith("*."))
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any_host or scope.get("path", "") in _PROBES:
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers", []) if k == b"host"), None)
        if raw is None or self.answers(raw.decode("latin-1"), scope.get("server")):
            await self.app(scope, receive, send)
            return
        shown = raw.decode("latin-1")[:100]
        await send_error(
            send,
            scope.get("path", ""),
            "misdirected",
            f"this server does not answer to Host {shown!r}: a guard against DNS rebinding; "
            "if clients reach it under that name, start it with --allowed-host NAME",
        )

    def answers(self, host: str, server: Any) -> bool:
        """Return whether a ``Host`` header value names this server (``server``: the local address)."""
        name = _host_name(host)
        if name is None:
            return False
        if name in self.names or name.endswith(self.suffixes):
            return True
        local = server[0] if isinstance(server, tuple | list) and server else None
        return isinstance(local, str) and _normal_host(local) == name


def _host_name(host: str) -> str | None:
    """Return the normalized name of a ``Host`` value without its port; ``None`` when it is malformed."""
    host = host.strip()
    if host.startswith("["):  # an IPv6 literal, with or without a port
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, colon, port = host.rpartition(":")
        if not colon:
            name = port
        elif ":" in name or not port.isdigit():  # an IPv6 address must be in brackets
            return None
    name = _normal_host(name)
    return name or None


def _normal_host(name: str) -> str:
    """Return a host name or address in one spelling: lower case, no brackets or final dot, IPv4 unmapped."""
    name = name.strip().strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class GuardMiddleware:
    """Refuse requests without a valid API key (401), bodies over the limit (413), bodies that do
    not arrive within ``body_timeout_s`` (408, and the connection is closed) and JSON bodies that
    are not JSON (400: ``NaN``, ``Infinity``, lone surrogates, syntax errors).

    The body is read in full here and handed on as one message.
    """

    def __init__(self, app: ASGIApp, *, keys: ApiKeys | None, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

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
        body = await self._read_body(path, receive, send)
        if body is None:  # answered already, or the client is gone
            return
        if body and _is_json(headers):
            problem = json_body_problem(body)
            if problem is not None:
                await send_error(send, path, "malformed", f"invalid request body: {problem}")
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for the client to hang up

        await self.app(scope, replay, send)

    async def _read_body(self, path: str, receive: Receive, send: Send) -> bytes | None:
        """Return the whole body; ``None`` once it has answered 408 or 413, or the client hung up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                await send_error(
                    send,
                    path,
                    "body_timeout",
                    f"the request body did not arrive within {self.body_timeout_s:g} s "
                    "(less was sent than Content-Length says, or too slowly); send the whole body at once",
                    [(b"connection", b"close")],
                )
                return None
            if message["type"] != "http.request":  # http.disconnect
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:  # a chunked body with no Content-Length
                await send_error(send, path, "body_too_large", _too_large(self.max_body_bytes))
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """Return whether a body is parsed as JSON: no content type, or a JSON one (as FastAPI decides)."""
    value = next((v for k, v in headers if k == b"content-type"), None)
    if value is None:
        return True
    media = value.split(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _mount_of(path: str, routes: frozenset[str]) -> str:
    """Return the route a path without its own route is counted under: ``/static`` for assets, else ``other``."""
    return _ASSETS if path.startswith(_ASSETS + "/") and _ASSETS in routes else "other"


def _is_open(path: str) -> bool:
    """Return whether ``path`` may be called without a key (no ``..`` segments: defence in depth)."""
    return path in _OPEN_PATHS or (path.startswith(_ASSETS + "/") and "/.." not in path)


def _too_large(limit: int) -> str:
    return f"request body is larger than the server's limit of {limit} bytes; send fewer or shorter documents"
