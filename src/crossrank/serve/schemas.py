"""Request and response bodies, field by field as each API publishes them.

Requests are validated strictly (no string-to-number coercion) and ignore fields they do not
know, so newer clients that send more fields keep working. crossrank's additions (``raw_scores``
on Cohere/Jina routes; ``meta.crossrank``) are optional and ignored by clients that do not know them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "CohereV1Response",
    "CohereV2Response",
    "ModelsResponse",
    "MonitorResponse",
    "RerankRequest",
    "RerankV2Request",
    "ScoreRequest",
    "ScoreResponse",
    "SearchRequest",
    "SearchResponse",
    "TeiRank",
    "TeiRerankRequest",
    "VllmScoreRequest",
    "VllmScoreResponse",
    "WeaviateRankRequest",
    "WeaviateRankResponse",
    "json_body_problem",
]

_REQUEST = ConfigDict(strict=True, extra="ignore")

# an escaped UTF-16 surrogate, paired or not (then the parsed strings are checked)
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
#: most digits of an integer in a request body (Python's own limit for int(str))
MAX_INT_DIGITS = 4300


class _NotJson(ValueError):
    """A body that Python's parser would take but JSON does not allow, or no reply could hold."""


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"the body holds {name}, which is not JSON; send finite numbers")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(f"the number {text[:32]} is too large for a float; send finite numbers")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _NotJson(f"an integer in the body has more than {MAX_INT_DIGITS} digits")
    return int(text)


def json_body_problem(body: bytes) -> str | None:
    """Return what makes a request body unacceptable as JSON, in one line; ``None`` when it is fine.

    Stricter than :func:`json.loads`, which takes ``NaN``, ``Infinity``, numbers that overflow to
    infinity and lone UTF-16 surrogates (``"\\ud800"``): none is JSON (RFC 8259), and no
    response could echo them, so each is refused here rather than failing later.

    Example:
        >>> json_body_problem(b'{"query": "cat"}') is None, json_body_problem(b'{"x": NaN}')
        (True, 'the body holds NaN, which is not JSON; send finite numbers')
    """
    try:
        text = body.decode(json.detect_encoding(body))
    except (UnicodeDecodeError, LookupError):
        return "the body is not UTF-8 text; send JSON encoded as UTF-8"
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except _NotJson as err:
        return str(err)
    except json.JSONDecodeError as err:
        return f"the body is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
    except RecursionError:
        return "the body nests arrays or objects too deeply"
    if _ESCAPED_SURROGATE.search(text) and _has_lone_surrogate(value):
        return "the body holds a lone UTF-16 surrogate escape (such as \\ud800), which is not text; send valid Unicode"
    return None


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" includes 3.0; strict validation would refuse it
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]
Text = Annotated[str, Field(min_length=1)]

Document = Annotated[
    Text | dict[str, Any],
    Field(description="A text, or an object whose `text` (or `rank_fields`) is ranked."),
]


# ------------------------------------------------------------------ requests


class RerankRequest(BaseModel):
    """``POST /v1/rerank``: Cohere v1 and Jina."""

    model_config = _REQUEST

    model: str | None = Field(None, description="Accepted and ignored: the served model answers.")
    query: Text = Field(description="The search query.")
    documents: list[Document] = Field(description="Texts, or objects with a `text` field.")
    top_n: Int | None = Field(None, ge=1, description="Return the best `top_n`; all when left out.")
    rank_fields: list[str] | None = Field(
        None,
        min_length=1,
        description="For object documents: the fields ranked, joined by spaces in this order (left out: `text`).",
    )
    return_documents: bool = Field(False, description="Return each document with its result.")
    max_chunks_per_doc: Int | None = Field(None, ge=1, description="Accepted and ignored (Cohere v1).")
    raw_scores: bool = Field(False, description="crossrank: return raw logits instead of probabilities.")
    instruction: str | None = Field(
        None,
        description="crossrank extension, optional: the task instruction of a reranker whose prompt takes one "
        "(Qwen3-Reranker, mxbai-rerank-v2); left out, the model's own. Refused (400) by models that take none.",
    )


class RerankV2Request(BaseModel):
    """``POST /v2/rerank``: Cohere v2."""

    model_config = _REQUEST

    model: str | None = Field(None, description="Accepted and ignored: the served model answers.")
    query: Text = Field(description="The search query.")
    documents: list[Document] = Field(description="Texts (objects with `text` are accepted too).")
    top_n: Int | None = Field(None, ge=1, description="Return the best `top_n`; all when left out.")
    max_tokens_per_doc: Int | None = Field(
        None, ge=1, description="Cut each document to this many tokens first (reported as truncation)."
    )
    rank_fields: list[str] | None = Field(None, min_length=1, description="As in v1, for object documents.")
    return_documents: bool = Field(False, description="Return each document with its result.")
    priority: Int | None = Field(None, description="Accepted and ignored.")
    raw_scores: bool = Field(False, description="crossrank: return raw logits instead of probabilities.")
    instruction: str | None = Field(
        None,
        description="crossrank extension, optional: the task instruction of a reranker whose prompt takes one "
        "(Qwen3-Reranker, mxbai-rerank-v2); left out, the model's own. Refused (400) by models that take none.",
    )


class TeiRerankRequest(BaseModel):
    """``POST /rerank``: Hugging Face text-embeddings-inference."""

    model_config = _REQUEST

    query: Text
    texts: list[Text]
    raw_scores: bool = Field(False, description="Raw logits instead of sigmoid probabilities.")
    return_text: bool = False
    truncate: bool | None = Field(
        None, description="Cut documents that do not fit; false refuses them with 413. Default: the server's."
    )
    truncation_direction: Literal["right", "left", "Right", "Left"] = Field(
        "right", description="Only `right` is supported: the query is kept, the end of the document cut."
    )
    instruction: str | None = Field(
        None,
        description="crossrank extension, optional: the task instruction of a reranker whose prompt takes one "
        "(Qwen3-Reranker, mxbai-rerank-v2); left out, the model's own. Refused (400) by models that take none.",
    )


class ScoreRequest(BaseModel):
    """``POST /v1/score``: raw (query, document) pairs."""

    model_config = _REQUEST

    model: str | None = Field(None, description="Accepted and ignored.")
    pairs: list[Annotated[list[Text], Field(min_length=2, max_length=2)]] = Field(
        description="[[query, document], ...]"
    )
    raw_scores: bool = Field(False, description="Raw logits instead of probabilities.")


class SearchRequest(BaseModel):
    """``POST /v1/search``: the full pipeline over the served index."""

    model_config = _REQUEST

    query: Text
    k: Int = Field(10, ge=1, description="Results returned.")
    depth: Int | None = Field(
        None,
        ge=1,
        description="First-stage candidates reranked; at least `k` when reranking. Default: the server's "
        "settings (100 unless it was started with `--settings` from `crossrank tune`).",
    )
    retriever: Literal["bm25", "dense", "hybrid"] | None = Field(None, description="Default: the index's own.")
    rerank: bool | None = Field(
        None,
        description="Rerank with the cross-encoder; false returns the first stage. Default: the server's "
        "settings (true unless `crossrank tune` found that reranking does not help).",
    )
    return_documents: bool = True


# ------------------------------------------------------------------ responses


class ApiVersion(BaseModel):
    """Cohere's API version."""

    version: str


class BilledUnits(BaseModel):
    """Cohere's billed units: one search unit per query with up to 100 documents."""

    search_units: float


class MetaTokens(BaseModel):
    """Tokens the model read."""

    input_tokens: float


class CrossrankMeta(BaseModel):
    """What the scores mean and what was cut."""

    activation: str = Field(description="sigmoid, softmax or calibrated (probabilities), or none (raw logits).")
    scores: Literal["probability", "logit"]
    max_length: int = Field(description="Most tokens of one pair; longer documents are cut.")
    truncated: list[int] = Field(description="Indices of the documents that were cut.")
    queue_ms: float = Field(description="From arrival until the worker took the request up.")
    tokenize_ms: float = Field(
        description="Tokenizing before the model call: checking queries, cutting documents to `max_tokens_per_doc`."
    )
    inference_ms: float = Field(description="The model call this request shared (its tokenization included).")
    batch_pairs: int = Field(description="Pairs in the model call this request shared.")
    batch_requests: int = Field(description="Requests merged into that model call.")


class Meta(BaseModel):
    """Cohere's ``meta``."""

    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: MetaTokens
    warnings: list[str]
    crossrank: CrossrankMeta


class Usage(BaseModel):
    """Jina's ``usage``."""

    total_tokens: int
    prompt_tokens: int


class RerankResult(BaseModel):
    """One ranked document."""

    index: int = Field(description="Position of the document in the request.")
    relevance_score: float
    document: dict[str, Any] | None = Field(None, description="With `return_documents`: `{text}` or the object.")


class CohereV1Response(BaseModel):
    """Cohere v1's rerank response, with Jina's `model` and `usage`."""

    id: str
    model: str
    results: list[RerankResult]
    meta: Meta
    usage: Usage


class CohereV2Response(BaseModel):
    """Cohere v2's rerank response."""

    id: str
    results: list[RerankResult]
    meta: Meta


class TeiRank(BaseModel):
    """One result of TEI's ``/rerank`` (the response is a bare array of these)."""

    index: int
    score: float
    text: str | None = None


class WeaviateRankRequest(BaseModel):
    """``POST /weaviate/rerank``: Weaviate's reranker-transformers module (its ``clients/ranker.go``)."""

    model_config = _REQUEST

    query: Text
    documents: list[Text] | None = Field(
        None, description="The texts to score, in order (Weaviate sends 32 at a time)."
    )
    property: str | None = Field(None, description="One text to score, when `documents` is left out.")


class WeaviateDocumentScore(BaseModel):
    """One document's score, in the order sent."""

    document: str
    score: float


class WeaviateRankResponse(BaseModel):
    """The module's answer: scores in the order the documents were sent (Weaviate sorts them itself)."""

    query: str
    scores: list[WeaviateDocumentScore] | None = None
    property: str | None = None
    score: float | None = None


class VllmScoreRequest(BaseModel):
    """``POST /score``: vLLM's score API (``text_1``/``text_2``, or ``queries``/``documents``)."""

    model_config = _REQUEST

    model: str | None = Field(None, description="Accepted and ignored: the served model answers.")
    text_1: Text | list[Text] | None = Field(None, description="The query, or one query per pair.")
    text_2: Text | list[Text] | None = Field(None, description="The documents (one per pair).")
    queries: Text | list[Text] | None = Field(None, description="Another spelling of `text_1`.")
    documents: Text | list[Text] | None = Field(None, description="Another spelling of `text_2`.")
    truncate_prompt_tokens: Int | None = Field(
        None, ge=1, description="Cut each pair to this many tokens (the document is cut, the query kept)."
    )


class VllmScoreData(BaseModel):
    """One pair's score."""

    index: int
    object: Literal["score"] = "score"
    score: float


class VllmUsage(BaseModel):
    """Tokens read."""

    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class VllmScoreResponse(BaseModel):
    """vLLM's score response: one score per pair, in input order."""

    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[VllmScoreData]
    usage: VllmUsage


class ScoreResponse(BaseModel):
    """Scores of pairs, in input order."""

    model: str
    activation: str
    scores: list[float] | list[list[float]] = Field(description="One per pair; a list per pair for multi-label heads.")
    labels: list[str]
    truncated: list[bool]
    num_tokens: list[int]
    usage: Usage


class SearchHitOut(BaseModel):
    """One search result with what each stage said."""

    doc_id: str
    rank: int
    score: float
    first_stage_rank: int
    first_stage_score: float
    rerank_score: float | None
    truncated: bool
    document: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    """The results of one query."""

    model: str
    query: str
    retriever: str
    reranked: bool
    depth: int
    hits: list[SearchHitOut]
    num_truncated: int
    timings_ms: dict[str, float]


class SearchInfo(BaseModel):
    """The index ``/v1/search`` runs over, and its limits."""

    documents: int | None = Field(description="Documents in the index; null when the first stage does not say.")
    retrievers: list[str] = Field(
        description="First stages the index can run: bm25, dense, hybrid (or the name of the served first stage)."
    )
    default_retriever: str = Field(description="The first stage used when a search names none.")
    max_k: int = Field(description="Most results one search may ask for.")
    max_depth: int = Field(description="Most first-stage candidates one search may rerank.")


class ModelCard(BaseModel):
    """The served model (OpenAI/Jina style list entry)."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "crossrank"
    max_length: int
    activation: str
    scores: Literal["probability", "logit"] = Field(
        "probability", description="Whether scores under `activation` are probabilities or raw logits."
    )
    labels: list[str]
    backend: str
    index: str | None = Field(description="The served index's folder name (not its path); null without one.")
    size_mb: float | None = Field(
        None, description="Megabytes (10^6 bytes) on disk of the files loaded: graph, weights, tokenizer, config."
    )
    pairs_per_s: float | None = Field(
        None, description="Pairs per second measured at load: one batch of 64 pairs of about 100 tokens."
    )
    pairs_per_s_served: float | None = Field(
        None, description="Pairs per second of the model calls of the last 64 requests served; null before any."
    )
    search: SearchInfo | None = Field(None, description="The served index; null when no index is served.")


class CohereModel(BaseModel):
    """The served model (Cohere style list entry)."""

    name: str
    endpoints: list[str]
    context_length: int


class ModelsResponse(BaseModel):
    """``GET /v1/models``: OpenAI/Jina's ``data`` and Cohere's ``models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
    models: list[CohereModel]


class MonitorResponse(BaseModel):
    """``GET /v1/monitor``: the recent rerankings' signals, per rolling window, and drift."""

    total: int = Field(description="Rerankings recorded since the server started.")
    drift: bool = Field(description="The last window drifted from the reference profile.")
    drift_window: int = Field(description="Queries in the window judged for drift.")
    min_queries: int = Field(description="Queries a window needs before it is judged.")
    profile: dict[str, Any] | None = Field(description="The reference profile loaded, or null.")
    windows: dict[str, dict[str, Any]] = Field(
        description="Per window (last_100, last_1000): count, per-signal mean and percentiles, drift."
    )
    series: dict[str, list[float]] = Field(
        description="The last 300 rerankings in time order: `time` (Unix seconds) and a few signals, for plots."
    )


class Status(BaseModel):
    """Liveness or readiness."""

    status: str
    model: str | None = None


# ------------------------------------------------------------------ judging


class JudgeQueryRequest(BaseModel):
    """``POST /v1/judge/queries``: add a typed query to judge."""

    model_config = _REQUEST

    query: Text


class JudgePoolRequest(BaseModel):
    """``POST /v1/judge/pool``: the pooled, shuffled results of both stages for one query."""

    model_config = _REQUEST

    query_id: Text


class JudgmentRequest(BaseModel):
    """``POST /v1/judge/judgment``: one grade, written to the qrels file at once."""

    model_config = _REQUEST

    query_id: Text
    doc_id: Text
    grade: Literal[2, 1, 0, -1] = Field(description="2 relevant, 1 partly relevant, 0 not relevant, -1 skip.")


class JudgeQueryOut(BaseModel):
    """A query to judge and how far its judging is."""

    id: str
    text: str
    judged: int
    total: int | None = Field(description="Documents in its pool; null until the pool is built.")
    done: bool


class JudgeStateResponse(BaseModel):
    """``GET /v1/judge``: the judging session."""

    judge: str
    pool_depth: int
    qrels: str = Field(description="The qrels file's name.")
    grades: dict[str, str]
    queries: list[JudgeQueryOut]


class JudgeDocumentOut(BaseModel):
    """One pooled document, without a word on which stage found it."""

    id: str
    title: str
    text: str
    grade: int | None = Field(description="Its grade so far: 2, 1, 0, -1 (skipped) or null (not judged).")


class JudgePoolResponse(BaseModel):
    """``POST /v1/judge/pool``: a query's pool in the order to show it."""

    query: JudgeQueryOut
    documents: list[JudgeDocumentOut]
