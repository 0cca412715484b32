"""Settings of the HTTP service: limits, backpressure, batching, timeouts, CORS, allowed hosts; and API keys."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crossrank.errors import ConfigError

__all__ = ["LOOPBACK_HOSTS", "ApiKeys", "ServeConfig", "bound_hosts", "is_wildcard_bind"]

#: the Host names every server answers to, whatever it is bound to (with any port)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# a DNS name, or one with a leading `*.` for all its subdomains
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """How ``crossrank serve`` batches, limits and protects requests.

    Attributes:
        max_documents: most documents (or pairs) in one request; more is rejected.
        max_document_chars: most characters in one document or query; longer is rejected (the
            model's own token limit still truncates, and says so, below this).
        max_body_bytes: largest request body; larger gets 413 before it is read.
        queue_size: most accepted requests waiting or running; beyond it a request gets 429 at once.
        max_wait_ms: how long the batcher waits for more requests to merge after the first one
            arrives; 0 merges only what is already queued.
        max_batch_pairs: most pairs merged from several requests into one model call (a request
            bigger than this runs alone).
        batching: merge concurrent requests; ``False`` runs them one at a time (a baseline).
        timeout_s: a request not answered in this many seconds gets 504.
        auto_truncate: what TEI's ``truncate`` means when a request leaves it out: cut long
            documents (reported in headers) or refuse them with 413.
        max_search_k: most results ``/v1/search`` returns per query.
        max_search_depth: most candidates ``/v1/search`` reranks per query.
        cors_origins: origins allowed to call from a browser; empty turns CORS off.
        allowed_hosts: ``Host`` names answered besides the loopback names and the address a
            connection arrived on (entries are names, ``*.example.com`` for its subdomains, IP
            addresses, or ``*`` for any Host); any other Host gets 421, which keeps DNS-rebinding
            pages in a browser away from the API.
        header_timeout_s: a connection that has not sent a request's complete headers this many
            seconds after it opened (or after its previous response) is closed.
        body_timeout_s: a request whose body has not fully arrived this many seconds after its
            headers gets 408 and its connection is closed.
        docs: serve the OpenAPI explorer at ``/docs`` (from the locally installed Swagger UI).
    """

    max_documents: int = 1000
    max_document_chars: int = 100_000
    max_body_bytes: int = 16 * 1024 * 1024
    queue_size: int = 64
    max_wait_ms: float = 5.0
    max_batch_pairs: int = 512
    batching: bool = True
    timeout_s: float = 30.0
    auto_truncate: bool = True
    max_search_k: int = 100
    max_search_depth: int = 1000
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    docs: bool = True

    def __post_init__(self) -> None:
        for name in ("max_documents", "max_document_chars", "max_body_bytes", "queue_size", "max_batch_pairs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1 (got {value!r})")
        for name in ("max_search_k", "max_search_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1 (got {value!r})")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"max_wait_ms must be within [0, 1000] (got {self.max_wait_ms})")
        for name in ("timeout_s", "header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a number of seconds > 0 (got {value!r})")
        if isinstance(self.cors_origins, str):
            raise ConfigError(f"cors_origins must be a tuple of origins (got the str {self.cors_origins!r})")
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ConfigError(
                    f"cors origin must be '*' or scheme://host[:port] with no path (got {origin!r}), "
                    "e.g. https://app.example.com"
                )
        if isinstance(self.allowed_hosts, str):
            raise ConfigError(f"allowed_hosts must be a tuple of host names (got the str {self.allowed_hosts!r})")
        for host in self.allowed_hosts:
            _check_allowed_host(host)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict (round-trips through :meth:`from_dict`)."""
        out = asdict(self)
        out["cors_origins"] = list(self.cors_origins)
        out["allowed_hosts"] = list(self.allowed_hosts)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServeConfig:
        """Return the config described by ``data``, rejecting unknown keys.

        Raises:
            ConfigError: a key is unknown or a value is not allowed.
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown serve settings {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        values = dict(data)
        for name in ("cors_origins", "allowed_hosts"):
            if name in values and not isinstance(values[name], str):
                values[name] = tuple(values[name])
        return cls(**values)


def _check_allowed_host(host: object) -> None:
    """Raise :class:`ConfigError` unless ``host`` is ``*``, a name, ``*.domain`` or an IP address."""
    if isinstance(host, str):
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if host == "*" or _HOST_NAME.fullmatch(host.lower().rstrip(".")):
            return
        try:
            ipaddress.ip_address(bare)
            return
        except ValueError:
            pass
    raise ConfigError(
        f"allowed host must be '*', a host name, '*.domain' or an IP address, without scheme, port or path "
        f"(got {host!r}), e.g. rerank.example.com"
    )


def bound_hosts(host: str) -> tuple[str, ...]:
    """Return the ``Host`` names to answer, besides the loopback ones, for a server bound to ``host``.

    A name bound to is answered under that name. An IP address needs nothing: every connection
    is answered under the address it arrived on. A wildcard bind (``0.0.0.0``, ``::``) adds this
    machine's host name (no DNS lookup); clients that use other names need ``allowed_hosts``.

    Example:
        >>> bound_hosts("127.0.0.1"), bound_hosts("rerank.internal")
        ((), ('rerank.internal',))
    """
    if host in _WILDCARD_BINDS:
        name = socket.gethostname()
        try:
            _check_allowed_host(name)
        except ConfigError:  # not a name a client could send (never seen in practice): nothing to add
            return ()
        return (name,)
    try:
        ipaddress.ip_address(host.strip("[]"))
        return ()
    except ValueError:
        return (host,)


def is_wildcard_bind(host: str) -> bool:
    """Return whether binding ``host`` listens on every address of the machine."""
    return host in _WILDCARD_BINDS


class ApiKeys:
    """The API keys a server accepts as ``Authorization: Bearer KEY``, held only as digests.

    A presented key is hashed and compared with every stored digest by
    :func:`hmac.compare_digest`, so neither its length nor which key matched shows in the timing.

    Example:
        >>> keys = ApiKeys(["s3cret-key-1"])
        >>> keys.check("Bearer s3cret-key-1"), keys.check("Bearer nope"), keys.check(None)
        (True, False, False)
    """

    __slots__ = ("_digests",)

    def __init__(self, keys: list[str] | tuple[str, ...]) -> None:
        cleaned = [k.strip() for k in keys if k.strip()]
        if not cleaned:
            raise ConfigError("no API keys given; pass at least one non-empty key or turn authentication off")
        bad = [i for i, k in enumerate(cleaned) if len(k) < 8 or any(c.isspace() for c in k)]
        if bad:
            # the key itself is never put in a message
            raise ConfigError(
                f"API key number {bad[0] + 1} is shorter than 8 characters or contains whitespace; "
                "use long random keys, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        self._digests = tuple(hashlib.sha256(k.encode()).digest() for k in cleaned)

    def __repr__(self) -> str:
        return f"ApiKeys(<{len(self._digests)} keys>)"

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def from_env(cls, name: str) -> ApiKeys:
        """Return the keys in environment variable ``name`` (separated by commas or whitespace).

        Raises:
            ConfigError: the variable is unset or holds no key.
        """
        value = os.environ.get(name)
        if value is None or not value.strip():
            raise ConfigError(f"environment variable {name!r} is unset or empty; put one or more API keys in it")
        return cls(re.split(r"[,\s]+", value))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ApiKeys:
        """Return the keys in a file, one per line; blank lines and ``#`` comments are skipped.

        Raises:
            ConfigError: the file cannot be read or holds no key.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read API key file {os.fspath(path)!r} ({type(err).__name__})") from err
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise ConfigError(f"API key file {os.fspath(path)!r} holds no keys; write one key per line")
        return cls(keys)

    def check(self, authorization: str | None) -> bool:
        """Return whether an ``Authorization`` header value carries one of the keys."""
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()
        found = False
        for digest in self._digests:  # no early exit: every key is compared
            found |= hmac.compare_digest(given, digest)
        return found
