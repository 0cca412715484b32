"""Errors of the HTTP service, written in the shape of the API that was called.

Each route speaks a dialect: Cohere (``/v1/rerank`` also carries Jina's ``detail``), TEI, or
crossrank's own. An error has a kind; the dialect decides its status code and its JSON body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from crossrank.errors import CrossrankError

__all__ = [
    "ApiError",
    "Dialect",
    "ErrorKind",
    "QueueFullError",
    "ShuttingDownError",
    "dialect_of",
    "error_body",
    "error_responses",
    "error_status",
    "validation_message",
]

Dialect = Literal["cohere_v1", "cohere_v2", "tei", "weaviate", "vllm", "crossrank"]
ErrorKind = Literal[
    "invalid",
    "malformed",
    "empty",
    "too_large",
    "body_too_large",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "body_timeout",
    "misdirected",
    "overloaded",
    "timeout",
    "unavailable",
    "internal",
]

# kind -> (status for Cohere, Jina and crossrank routes, status for TEI, TEI's error_type)
# TEI's own mapping: empty -> 400, validation -> 413, tokenizer/JSON -> 422, overloaded -> 429; a body
# that is not JSON at all (NaN, a lone surrogate, a syntax error) is 400 there too (its JSON extractor's).
_KINDS: dict[str, tuple[int, int, str]] = {
    "invalid": (400, 422, "validation"),
    "malformed": (400, 400, "validation"),
    "empty": (400, 400, "empty"),
    "too_large": (400, 413, "validation"),
    "body_too_large": (413, 413, "validation"),
    "unauthorized": (401, 401, "unauthorized"),
    "not_found": (404, 404, "not_found"),
    "method_not_allowed": (405, 405, "validation"),
    "body_timeout": (408, 408, "validation"),
    "misdirected": (421, 421, "validation"),
    "overloaded": (429, 429, "overloaded"),
    "timeout": (504, 504, "timeout"),
    "unavailable": (503, 503, "unhealthy"),
    "internal": (500, 500, "backend"),
}


class ApiError(CrossrankError, RuntimeError):
    """A request that gets an error answer: a kind (which decides the status) and a message.

    Attributes:
        kind: what went wrong, e.g. ``"invalid"`` or ``"overloaded"``.
        retry_after: seconds a client should wait before retrying, for ``"overloaded"``.
    """

    def __init__(self, kind: ErrorKind, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.retry_after = retry_after


class QueueFullError(ApiError):
    """The batcher's queue is full; the request was not accepted."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__("overloaded", message, retry_after=retry_after)


class ShuttingDownError(ApiError):
    """The server is draining for shutdown (or not ready) and takes no new work."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


def dialect_of(path: str) -> Dialect:
    """Return the API dialect of a request path."""
    if path == "/rerank":
        return "tei"
    if path == "/v1/rerank":
        return "cohere_v1"
    if path == "/v2/rerank":
        return "cohere_v2"
    if path.startswith("/weaviate/"):
        return "weaviate"
    if path == "/score" or path.startswith("/vllm/"):
        return "vllm"
    return "crossrank"


def error_status(dialect: Dialect, kind: ErrorKind) -> int:
    """Return the HTTP status of an error of ``kind`` in ``dialect``."""
    cohere, tei, _ = _KINDS[kind]
    return tei if dialect == "tei" else cohere


def error_body(dialect: Dialect, kind: ErrorKind, message: str) -> dict[str, Any]:
    """Return the JSON body of an error in the shape of the called API."""
    if dialect == "tei":
        return {"error": message, "error_type": _KINDS[kind][2]}
    if dialect == "cohere_v1":  # Cohere's `message`, and `detail` for Jina clients on the same route
        return {"message": message, "detail": message}
    if dialect == "cohere_v2":
        return {"message": message}
    if dialect == "weaviate":  # the module's client reads `error` from any non-200 answer
        return {"error": message}
    if dialect == "vllm":  # vLLM's (OpenAI's) error object
        status = error_status(dialect, kind)
        return {"error": {"message": message, "type": _VLLM_TYPES.get(status, "BadRequestError"), "param": None,
                          "code": status}}  # fmt: skip
    return {"error": {"type": kind, "message": message}}


_VLLM_TYPES = {
    401: "UnauthorizedError",
    404: "NotFoundError",
    429: "TooManyRequestsError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
    504: "TimeoutError",
}


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """Return one line naming what was wrong with a request body, without echoing its values."""
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid value')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "invalid request: " + "; ".join(parts) + more


# ------------------------------------------------------------------ OpenAPI


class CohereErrorBody(BaseModel):
    """Cohere's error body."""

    message: str


class CohereJinaErrorBody(BaseModel):
    """Cohere's ``message`` with Jina's ``detail`` (the same text)."""

    message: str
    detail: str


class TeiErrorBody(BaseModel):
    """Text-embeddings-inference's error body."""

    error: str
    error_type: str


class WeaviateErrorBody(BaseModel):
    """The Weaviate module's error body."""

    error: str


class VllmErrorDetail(BaseModel):
    """vLLM's error object."""

    message: str
    type: str
    param: str | None = None
    code: int


class VllmErrorBody(BaseModel):
    """vLLM's error body."""

    error: VllmErrorDetail


class CrossrankErrorDetail(BaseModel):
    """What went wrong."""

    type: str
    message: str


class CrossrankErrorBody(BaseModel):
    """crossrank's own error body."""

    error: CrossrankErrorDetail


_MODELS: dict[str, type[BaseModel]] = {
    "cohere_v1": CohereJinaErrorBody,
    "cohere_v2": CohereErrorBody,
    "tei": TeiErrorBody,
    "weaviate": WeaviateErrorBody,
    "vllm": VllmErrorBody,
    "crossrank": CrossrankErrorBody,
}

_DESCRIPTIONS = {
    400: "Invalid request",
    401: "Missing or wrong API key",
    404: "Not found",
    405: "Method not allowed",
    408: "The request body did not arrive in time",
    413: "Request too large",
    421: "The `Host` header names a host this server does not answer to",
    422: "Invalid request",
    429: "Queue full; retry after `Retry-After` seconds",
    500: "Internal error",
    503: "Not ready, or shutting down",
    504: "The request timed out",
}


def error_responses(dialect: Dialect, kinds: Sequence[ErrorKind]) -> dict[int | str, dict[str, Any]]:
    """Return FastAPI ``responses=`` entries documenting the errors a route can answer."""
    out: dict[int | str, dict[str, Any]] = {}
    for kind in kinds:
        status = error_status(dialect, kind)
        out[status] = {"model": _MODELS[dialect], "description": _DESCRIPTIONS.get(status, "Error")}
    return out
