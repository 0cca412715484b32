"""The HTTP service: Cohere v1/v2, Jina and TEI rerank endpoints, raw scores and search over an index.

Handlers are thin: check limits, hand the work to the :class:`~crossrank.serve.batcher.Batcher`,
await it with a timeout, and write the answer in the called API's shape.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from crossrank.drift import Profile
from crossrank.errors import ConfigError, InputError
from crossrank.pipeline import Pipeline, check_depth
from crossrank.ranking import rank_order
from crossrank.rerank.config import Activation
from crossrank.rerank.cross_encoder import CrossEncoder
from crossrank.retrieve.index import Index
from crossrank.retrieve.protocols import DocumentStore, FirstStage
from crossrank.serve.batcher import Batcher, PairsResult, PairsWork, SearchOutcome, SearchWork
from crossrank.serve.config import ApiKeys, ServeConfig
from crossrank.serve.errors import (
    ApiError,
    Dialect,
    ErrorKind,
    dialect_of,
    error_body,
    error_responses,
    error_status,
    validation_message,
)
from crossrank.serve.judge import GRADES, JudgeSession
from crossrank.serve.metrics import CONTENT_TYPE, Metrics
from crossrank.serve.middleware import STATS_KEY, GuardMiddleware, HostMiddleware, ObserveMiddleware
from crossrank.serve.model import ServedModel
from crossrank.serve.monitor import Monitor, pairs_signals
from crossrank.serve.requestlog import RequestLog
from crossrank.serve.schemas import (
    CohereV1Response,
    CohereV2Response,
    JudgeDocumentOut,
    JudgePoolRequest,
    JudgePoolResponse,
    JudgeQueryOut,
    JudgeQueryRequest,
    JudgeStateResponse,
    JudgmentRequest,
    ModelsResponse,
    MonitorResponse,
    RerankRequest,
    RerankV2Request,
    ScoreRequest,
    ScoreResponse,
    SearchRequest,
    SearchResponse,
    Status,
    TeiRank,
    TeiRerankRequest,
    VllmScoreRequest,
    VllmScoreResponse,
    WeaviateRankRequest,
    WeaviateRankResponse,
)
from crossrank.settings import SearchSettings
from crossrank.signals import QuerySignals

__all__ = ["create_app"]

log = logging.getLogger("crossrank.serve")

#: the playground page's HTML, CSS and JS, shipped in the package
STATIC_DIR = Path(__file__).with_name("static")
# the page loads nothing from elsewhere and calls only this server
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# the explorer likewise; Swagger UI sets style attributes, so inline styles are allowed (scripts are not)
_DOCS_HEADERS = {
    **_PAGE_HEADERS,
    "Content-Security-Policy": _PAGE_HEADERS["Content-Security-Policy"].replace(
        "style-src 'self'", "style-src 'self' 'unsafe-inline'"
    ),
}

_RERANK_ERRORS: Sequence[ErrorKind] = (
    "invalid",
    "malformed",
    "empty",
    "too_large",
    "body_too_large",
    "body_timeout",
    "misdirected",
    "unauthorized",
    "overloaded",
    "timeout",
    "unavailable",
)


@dataclass(slots=True)
class _State:
    served: ServedModel
    config: ServeConfig
    metrics: Metrics
    batcher: Batcher
    monitor: Monitor
    request_log: RequestLog | None = None

    def log_pairs(
        self, endpoint: str, query: str, texts: Sequence[str], scores: Sequence[float], order: Sequence[int],
        result: PairsResult, signals: QuerySignals,
    ) -> None:  # fmt: skip
        """Hand a rerank request's record to the request log, when it is on and samples this one."""
        rl = self.request_log
        if rl is None or not rl.wants():
            return
        rl.offer(
            {
                "time": time.time(),
                "endpoint": endpoint,
                "query": rl.text(query),
                "documents": [rl.text(t) for t in texts],
                "first_stage": list(range(len(texts))),  # the order the caller sent
                "reranked": [int(i) for i in order],
                "scores": [float(x) for x in scores],
                "truncated": [bool(t) for t in result.truncated],
                "timings_ms": {
                    "queue": round(result.timing.queue_ms, 3),
                    "tokenize": round(result.timing.tokenize_ms, 3),
                    "inference": round(result.timing.inference_ms, 3),
                },
                "signals": signals.to_dict(),
            }
        )


def create_app(
    model: CrossEncoder | str | os.PathLike[str] = "default",
    *,
    index: Index | str | os.PathLike[str] | None = None,
    first_stage: FirstStage | None = None,
    store: DocumentStore | None = None,
    config: ServeConfig | None = None,
    api_keys: ApiKeys | None = None,
    batcher: Callable[[ServedModel, ServeConfig, Metrics], Batcher] = Batcher,
    profile: Profile | str | os.PathLike[str] | None = None,
    settings: SearchSettings | str | os.PathLike[str] | None = None,
    judge: JudgeSession | None = None,
    request_log: RequestLog | None = None,
) -> FastAPI:
    """Return the FastAPI app that serves ``model`` (and a search pipeline over ``index``).

    The model (a :class:`CrossEncoder`, or a name or path to load one) is loaded once, here.
    The app starts its batcher on startup and drains it on shutdown; run it with uvicorn.

    Args:
        model: the cross-encoder, or what to load it from.
        index: an index (or its folder) for ``POST /v1/search``; ``None`` serves no search.
        first_stage: instead of an index, any first stage for ``POST /v1/search`` (see
            :class:`~crossrank.retrieve.protocols.FirstStage`).
        store: where ``first_stage``'s documents' texts come from; by default the first stage itself
            (see :class:`~crossrank.pipeline.Pipeline`).
        config: limits, batching, timeouts and CORS; see :class:`ServeConfig`.
        api_keys: keys accepted as ``Authorization: Bearer``; ``None`` turns authentication off.
        batcher: what merges concurrent requests into model calls: the built-in :class:`Batcher`
            (a worker thread), or another with its interface, such as the Ray Serve one of
            :mod:`crossrank.scale.serving`.
        profile: a reference profile of the signals (``crossrank monitor profile``), or its file:
            ``GET /v1/monitor``, the ``crossrank_drift`` metric and a log line say when recent
            queries drift from it.
        settings: what ``POST /v1/search`` does when a request leaves ``depth`` or ``rerank`` out,
            and the blend weight (a file ``crossrank tune`` wrote, or
            :class:`~crossrank.settings.SearchSettings`).
        request_log: a sampled request log (:class:`~crossrank.serve.requestlog.RequestLog`), off
            when ``None``; closed (its queue written) when the app shuts down.
        judge: a judging session (:class:`~crossrank.serve.judge.JudgeSession`): the page at
            ``/judge`` and ``/v1/judge/*`` pool both stages' results blind and write the grades
            to its qrels file. Needs ``index`` or ``first_stage``.

    Raises:
        ModelNotFoundError: the model cannot be found.
        ConfigError: a setting is not allowed.

    Example:
        >>> app = create_app(CrossEncoder("default"))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8080)  # doctest: +SKIP
    """
    config = config or ServeConfig()
    reranker = model if isinstance(model, CrossEncoder) else CrossEncoder(model)
    if index is not None and first_stage is not None:
        raise ConfigError("serve an index or another first stage, not both (got index= and first_stage=)")
    pipeline = None
    if index is not None:
        opened = index if isinstance(index, Index) else Index.open(index)
        pipeline = Pipeline(opened, reranker=reranker, settings=settings)
    elif first_stage is not None:
        pipeline = Pipeline(first_stage, reranker=reranker, store=store, settings=settings)
    served = ServedModel(reranker, pipeline)
    served.warm_up()
    metrics = Metrics()
    reference = Profile.load(profile) if isinstance(profile, (str, os.PathLike)) else profile
    monitor = Monitor(metrics.registry, reference)
    state = _State(served, config, metrics, batcher(served, config, metrics), monitor, request_log)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.batcher.start()
        log.info(
            "serving %s (max_length=%d, activation=%s); queue %d, max wait %g ms, merge up to %d pairs",
            served.name,
            served.max_length,
            served.activation,
            config.queue_size,
            config.max_wait_ms,
            config.max_batch_pairs,
        )
        yield
        # uvicorn has already waited for in-flight requests; finish anything still queued
        await asyncio.to_thread(state.batcher.close, config.timeout_s)
        log.info("batcher drained and stopped")
        if request_log is not None:
            await asyncio.to_thread(request_log.close)

    app = FastAPI(
        title="crossrank",
        summary="Cross-encoder reranking with Cohere, Jina and TEI compatible endpoints.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN; ours serves it from the package
        redoc_url=None,
    )
    app.state.crossrank = state
    _add_routes(app, state)
    _add_judge(app, state, judge)
    _add_playground(app)
    if config.docs:
        _add_explorer(app)
    _add_error_handlers(app)
    routes = frozenset(getattr(r, "path", "") for r in app.routes)
    app.add_middleware(
        GuardMiddleware,
        keys=api_keys,
        max_body_bytes=config.max_body_bytes,
        body_timeout_s=config.body_timeout_s,
    )
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After", "X-Crossrank-Truncated", "X-Crossrank-Activation"],
        )
    app.add_middleware(HostMiddleware, allowed=config.allowed_hosts)
    app.add_middleware(ObserveMiddleware, metrics=metrics, routes=routes)
    return app


def _version() -> str:
    from crossrank._version import __version__

    return __version__


# ---------------------------------------------------------------------- routes


def _add_routes(app: FastAPI, state: _State) -> None:
    served, cfg = state.served, state.config

    @app.post(
        "/v1/rerank",
        response_model=CohereV1Response,
        responses=error_responses("cohere_v1", _RERANK_ERRORS),
        tags=["rerank"],
        summary="Rerank documents (Cohere v1 and Jina shape)",
    )
    async def rerank_v1(body: RerankRequest, request: Request) -> Response:
        texts = _object_texts(body.documents, body.rank_fields)
        return await _cohere(
            state,
            request,
            body.query,
            texts,
            body.documents,
            body.top_n,
            None,
            body.return_documents,
            body.raw_scores,
            version="1",
            instruction=body.instruction,
        )

    @app.post(
        "/v2/rerank",
        response_model=CohereV2Response,
        responses=error_responses("cohere_v2", _RERANK_ERRORS),
        tags=["rerank"],
        summary="Rerank documents (Cohere v2 shape)",
    )
    async def rerank_v2(body: RerankV2Request, request: Request) -> Response:
        texts = _object_texts(body.documents, body.rank_fields)
        return await _cohere(
            state,
            request,
            body.query,
            texts,
            body.documents,
            body.top_n,
            body.max_tokens_per_doc,
            body.return_documents,
            body.raw_scores,
            version="2",
            instruction=body.instruction,
        )

    @app.post(
        "/rerank",
        response_model=list[TeiRank],
        responses=error_responses("tei", _RERANK_ERRORS),
        tags=["rerank"],
        summary="Rerank texts (text-embeddings-inference shape)",
    )
    async def rerank_tei(body: TeiRerankRequest, request: Request) -> Response:
        if body.truncation_direction.lower() != "right":
            raise ApiError(
                "invalid",
                "truncation_direction 'left' is not supported: crossrank keeps the query and cuts the end "
                "of the document; send 'right' or leave it out",
            )
        if not body.texts:
            raise ApiError("empty", "`texts` cannot be empty")
        _check_texts(cfg, body.query, body.texts, "texts")
        _check_instruction(served, body.instruction)
        act = served.output_activation(body.raw_scores)
        result = await _score(
            state, request, [body.query] * len(body.texts), body.texts, act, instruction=body.instruction
        )
        truncate = cfg.auto_truncate if body.truncate is None else body.truncate
        cut = np.flatnonzero(result.truncated).tolist()
        if cut and not truncate:
            raise ApiError(
                "too_large",
                f"`inputs` must have less than {served.max_length} tokens: texts {_preview_ids(cut)} are longer "
                "with the query; send truncate=true to cut them (the query is kept, the text cut)",
            )
        scores, order = _rank(served, result, act, None)
        signals = pairs_signals(served, body.query, body.texts, result, act)
        state.monitor.observe(signals)
        state.log_pairs(request.url.path, body.query, body.texts, scores, order, result, signals)
        ranks = []
        for i in order:
            item: dict[str, Any] = {"index": i, "score": scores[i]}
            if body.return_text:
                item["text"] = body.texts[i]
            ranks.append(item)
        return JSONResponse(ranks, headers=_headers(act, result))

    # ---- Weaviate's reranker-transformers module (RERANKER_INFERENCE_API=http://HOST:PORT/weaviate)

    @app.post(
        "/weaviate/rerank",
        response_model=WeaviateRankResponse,
        response_model_exclude_none=True,
        responses=error_responses("weaviate", _RERANK_ERRORS),
        tags=["integrations"],
        summary="Score documents (Weaviate reranker-transformers module shape)",
    )
    async def rerank_weaviate(body: WeaviateRankRequest, request: Request) -> Response:
        if body.documents is None and body.property is None:
            raise ApiError("invalid", "send `documents` (the texts to score) or `property` (one text)")
        texts = body.documents if body.documents is not None else [str(body.property)]
        if not texts:
            return JSONResponse({"query": body.query, "scores": []})
        _check_texts(cfg, body.query, texts, "documents")
        act = served.output_activation(False)
        result = await _score(state, request, [body.query] * len(texts), texts, act)
        scores, _ = _rank(served, result, act, None)
        if body.documents is None:
            content: dict[str, Any] = {"query": body.query, "property": body.property, "score": scores[0]}
        else:
            pairs = zip(texts, scores, strict=True)
            content = {"query": body.query, "scores": [{"document": t, "score": s} for t, s in pairs]}
        return JSONResponse(content, headers=_headers(act, result))

    @app.get(
        "/weaviate/meta",
        responses=error_responses("weaviate", ["misdirected"]),
        tags=["integrations"],
        summary="The served model (Weaviate module shape)",
    )
    async def meta_weaviate() -> dict[str, Any]:
        return {"model": {"name": served.name, "max_length": served.max_length, "labels": list(served.labels)}}

    async def weaviate_ready() -> Response:
        if not state.batcher.running:
            raise ApiError("unavailable", "not ready: the server is starting or shutting down")
        return Response(status_code=204)

    for path in ("/weaviate/.well-known/ready", "/weaviate/.well-known/live"):
        app.add_api_route(path, weaviate_ready, methods=["GET", "HEAD"], tags=["integrations"], include_in_schema=False)

    # ---- vLLM's score API, at /score (and under /vllm/ for clients that add /v1/score to a base URL)

    async def score_vllm(body: VllmScoreRequest, request: Request) -> Response:
        firsts = body.text_1 if body.text_1 is not None else body.queries
        seconds = body.text_2 if body.text_2 is not None else body.documents
        if firsts is None or seconds is None:
            raise ApiError("invalid", "send `text_1` and `text_2` (or `queries` and `documents`)")
        firsts = [firsts] if isinstance(firsts, str) else firsts
        seconds = [seconds] if isinstance(seconds, str) else seconds
        if not firsts or not seconds:
            raise ApiError("empty", "`text_1` and `text_2` cannot be empty")
        if len(firsts) == 1:
            firsts = firsts * len(seconds)
        if len(firsts) != len(seconds):
            raise ApiError(
                "invalid",
                f"`text_1` has {len(firsts)} texts and `text_2` {len(seconds)}: send one text_1, or as many as text_2",
            )
        if len(seconds) > cfg.max_documents:
            raise ApiError("too_large", f"{len(seconds)} pairs is more than the limit of {cfg.max_documents}")
        for i, (q, d) in enumerate(zip(firsts, seconds, strict=True)):
            _check_text(cfg, q, f"text_1[{i}]")
            _check_text(cfg, d, f"text_2[{i}]")
        act = served.output_activation(False)
        cut = body.truncate_prompt_tokens
        max_doc_tokens = cut if cut is not None and cut < served.max_length else None
        result = await _score(state, request, firsts, seconds, act, max_doc_tokens=max_doc_tokens)
        scores, _ = _rank(served, result, act, None)
        tokens = int(result.num_tokens.sum())
        content = {
            "id": f"score-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": served.name,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }
        return JSONResponse(content, headers=_headers(act, result))

    for path in ("/score", "/vllm/score", "/vllm/v1/score"):
        app.add_api_route(
            path,
            score_vllm,
            methods=["POST"],
            response_model=VllmScoreResponse,
            responses=error_responses("vllm", _RERANK_ERRORS),
            tags=["integrations"],
            summary="Score pairs (vLLM score API shape)",
            include_in_schema=path == "/score",
        )

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        responses=error_responses("crossrank", _RERANK_ERRORS),
        tags=["rerank"],
        summary="Score (query, document) pairs, in input order",
    )
    async def score(body: ScoreRequest, request: Request) -> Response:
        if not body.pairs:
            raise ApiError("empty", "`pairs` cannot be empty; send [[query, document], ...]")
        if len(body.pairs) > cfg.max_documents:
            raise ApiError("too_large", f"{len(body.pairs)} pairs is more than the limit of {cfg.max_documents}")
        for i, (q, d) in enumerate(body.pairs):
            _check_text(cfg, q, f"pairs[{i}][0]")
            _check_text(cfg, d, f"pairs[{i}][1]")
        act = served.output_activation(body.raw_scores)
        result = await _score(state, request, [p[0] for p in body.pairs], [p[1] for p in body.pairs], act)
        tokens = int(result.num_tokens.sum())
        content = {
            "model": served.name,
            "activation": act,
            "scores": result.scores[act].tolist(),
            "labels": list(served.labels),
            "truncated": result.truncated.tolist(),
            "num_tokens": result.num_tokens.tolist(),
            "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
        }
        return JSONResponse(content, headers=_headers(act, result))

    @app.post(
        "/v1/search",
        response_model=SearchResponse,
        responses=error_responses("crossrank", [*_RERANK_ERRORS, "not_found"]),
        tags=["search"],
        summary="Retrieve from the served index and rerank the top `depth`",
    )
    async def search(body: SearchRequest, request: Request) -> Response:
        if served.pipeline is None:
            raise ApiError("not_found", "no index is served; start the server with --index DIR")
        _check_text(cfg, body.query, "query")
        tuned = served.pipeline.settings  # what the request leaves out
        depth = tuned.depth if body.depth is None else body.depth
        rerank = tuned.rerank if body.rerank is None else body.rerank
        if body.k > cfg.max_search_k or depth > cfg.max_search_depth:
            raise ApiError(
                "too_large",
                f"k={body.k}, depth={depth} is over the limits k <= {cfg.max_search_k}, "
                f"depth <= {cfg.max_search_depth}",
            )
        if rerank:
            try:
                check_depth(body.k, depth)  # the rule the library and the CLI apply
            except InputError as err:
                raise ApiError("invalid", str(err)) from err
        work = SearchWork(body.query, body.k, depth, body.retriever, rerank)
        outcome = await _await(state, request, work)
        assert isinstance(outcome, SearchOutcome)
        result = outcome.result
        if result.reranked:
            served.record_speed(result.depth, result.timings_ms.get("rerank", 0.0) / 1000)
        if result.signals is not None:
            state.monitor.observe(result.signals)
        rl = state.request_log
        if rl is not None and rl.wants():
            by_first = sorted(result.hits, key=lambda h: h.first_stage_rank)
            rl.offer(
                {
                    "time": time.time(),
                    "endpoint": "/v1/search",
                    "query": rl.text(body.query),
                    "retriever": result.retriever,
                    "depth": result.depth,
                    "candidates": [h.doc_id for h in by_first],
                    "first_stage": [h.doc_id for h in by_first],
                    "first_stage_scores": [h.first_stage_score for h in by_first],
                    "reranked": [h.doc_id for h in result.hits],
                    "scores": [h.score for h in result.hits],
                    "truncated": [h.truncated for h in result.hits],
                    "timings_ms": dict(result.timings_ms),
                    "signals": result.signals.to_dict() if result.signals is not None else None,
                }
            )
        num_truncated = sum(h.truncated for h in result.hits)
        request.scope[STATS_KEY] = {
            "k": body.k,
            "depth": result.depth,
            "truncated": num_truncated,
            "queue_ms": round(outcome.timing.queue_ms, 1),
            "batch": f"{outcome.timing.batch_pairs}/{outcome.timing.batch_requests}",
        }
        content = {"model": served.name, **result.to_dict(with_documents=body.return_documents)}
        content.pop("query_id", None)
        content["num_truncated"] = num_truncated
        headers = {"x-crossrank-truncated": str(num_truncated), "x-crossrank-activation": served.activation}
        return JSONResponse(content, headers=headers)

    @app.get(
        "/v1/models",
        response_model=ModelsResponse,
        responses=error_responses("crossrank", ["misdirected"]),
        tags=["service"],
        summary="The served model",
    )
    async def models() -> dict[str, Any]:
        card = {"id": served.name, "object": "model", "created": 0, "owned_by": "crossrank", **served.describe()}
        search = served.describe_index()
        if search is not None:
            search.update(max_k=cfg.max_search_k, max_depth=cfg.max_search_depth)
        card["search"] = search
        cohere = {"name": served.name, "endpoints": ["rerank"], "context_length": served.max_length}
        return {"object": "list", "data": [card], "models": [cohere]}

    @app.get(
        "/v1/monitor",
        response_model=MonitorResponse,
        responses=error_responses("crossrank", ["misdirected"]),
        tags=["service"],
        summary="Label-free signals of recent rerankings, and drift from the reference profile",
    )
    async def monitor() -> dict[str, Any]:
        return state.monitor.summary()

    @app.get("/health", response_model=Status, response_model_exclude_none=True, tags=["service"], summary="Alive")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        response_model=Status,
        responses=error_responses("crossrank", ["unavailable"]),
        tags=["service"],
        summary="Model loaded and taking requests",
    )
    async def ready() -> dict[str, Any]:
        if not state.batcher.running:
            raise ApiError("unavailable", "not ready: the server is starting or shutting down")
        return {"status": "ready", "model": served.name}

    # load balancers and uptime checkers probe with HEAD as often as with GET (kept out of the schema,
    # where a second method on the same function would repeat its operation id)
    for path, probe in (("/health", health), ("/ready", ready)):
        app.add_api_route(path, probe, methods=["HEAD"], response_model=Status, include_in_schema=False)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE.split(";")[0]: {}}, "description": "Prometheus metrics"},
            **error_responses("crossrank", ["misdirected"]),
        },
        tags=["service"],
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)


def _add_judge(app: FastAPI, state: _State, judge: JudgeSession | None) -> None:
    """The judging API under ``/v1/judge`` (404 unless the server judges) and its page at ``/judge``."""
    served = state.served
    if judge is not None and served.pipeline is None:
        raise ConfigError("judging pools the results of a search: serve an index (--index) to judge")
    missing = "this server does not judge; start it with --index DIR --judge QRELS_FILE"

    def session() -> JudgeSession:
        if judge is None:
            raise ApiError("not_found", missing)
        return judge

    def _out(q: dict[str, Any]) -> JudgeQueryOut:
        return JudgeQueryOut(**q)

    @app.get(
        "/v1/judge",
        response_model=JudgeStateResponse,
        tags=["judge"],
        responses=error_responses("crossrank", ["not_found", "misdirected", "unauthorized"]),
        summary="The judging session",
    )
    async def judge_state() -> JudgeStateResponse:
        s = session()
        return JudgeStateResponse(
            judge=s.judge,
            pool_depth=s.depth,
            qrels=s.path.name,
            grades={str(k): v for k, v in GRADES.items()},
            queries=[_out(q) for q in s.queries()],
        )

    @app.post(
        "/v1/judge/queries",
        response_model=JudgeQueryOut,
        tags=["judge"],
        responses=error_responses("crossrank", [*_RERANK_ERRORS, "not_found"]),
        summary="Add a query to judge",
    )
    async def judge_add(body: JudgeQueryRequest) -> JudgeQueryOut:
        s = session()
        _check_text(state.config, body.query, "query")
        try:
            qid = s.add_query(body.query)
        except InputError as err:
            raise ApiError("invalid", str(err)) from err
        return _out(next(q for q in s.queries() if q["id"] == qid))

    @app.post(
        "/v1/judge/pool",
        response_model=JudgePoolResponse,
        tags=["judge"],
        responses=error_responses("crossrank", [*_RERANK_ERRORS, "not_found"]),
        summary="Both stages' top results for a query, pooled and shuffled",
    )
    async def judge_pool(body: JudgePoolRequest, request: Request) -> JudgePoolResponse:
        s = session()
        try:
            text = s.needs_pool(body.query_id)
        except InputError as err:
            raise ApiError("not_found", str(err)) from err
        pipeline = served.pipeline
        assert pipeline is not None
        if text is not None:  # both stages, through the batcher like any search
            depth = max(s.depth, pipeline.settings.depth)
            first = await _await(state, request, SearchWork(text, s.depth, s.depth, None, False))
            reranked = await _await(state, request, SearchWork(text, s.depth, depth, None, True))
            assert isinstance(first, SearchOutcome) and isinstance(reranked, SearchOutcome)
            s.set_pool(body.query_id, [h.doc_id for h in first.result.hits], [h.doc_id for h in reranked.result.hits])
        pool = s.pool(body.query_id)
        records = pipeline.store.get([d for d, _ in pool])
        docs = []
        for (doc_id, grade), rec in zip(pool, records, strict=True):
            rec = rec or {}
            docs.append(
                JudgeDocumentOut(
                    id=doc_id, title=str(rec.get("title") or ""), text=str(rec.get("text") or ""), grade=grade
                )
            )
        query = next(q for q in s.queries() if q["id"] == body.query_id)
        return JudgePoolResponse(query=_out(query), documents=docs)

    @app.post(
        "/v1/judge/judgment",
        response_model=JudgeQueryOut,
        tags=["judge"],
        responses=error_responses("crossrank", [*_RERANK_ERRORS, "not_found"]),
        summary="Grade one pooled document (written to the qrels file at once)",
    )
    async def judge_one(body: JudgmentRequest) -> JudgeQueryOut:
        s = session()
        try:
            return _out(s.judge_document(body.query_id, body.doc_id, body.grade))
        except InputError as err:
            raise ApiError("invalid", str(err)) from err
        except ConfigError as err:  # the disk refused: the grade is not kept, and the page says so
            raise ApiError("internal", str(err)) from err

    @app.api_route("/judge", methods=["GET", "HEAD"], include_in_schema=False)
    async def judge_page() -> Response:
        return FileResponse(STATIC_DIR / "judge.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


def _add_playground(app: FastAPI) -> None:
    """Serve the playground at ``/``, the monitor page at ``/monitor`` and their assets under ``/static``,
    outside the OpenAPI description."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def playground() -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    @app.api_route("/monitor", methods=["GET", "HEAD"], include_in_schema=False)
    async def monitor_page() -> Response:
        return FileResponse(STATIC_DIR / "monitor.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _add_explorer(app: FastAPI) -> None:
    """Serve the OpenAPI explorer at ``/docs``: Swagger UI from the installed ``fastapi-offline``, no CDN."""
    try:
        import fastapi_offline
    except ImportError:  # installed without the serve extra's explorer: no /docs (the API is unchanged)
        log.info("no OpenAPI explorer at /docs: pip install fastapi-offline (part of crossrank[serve])")
        return
    # only its copy of Swagger UI's files is used (its FastAPI factory would load them without a CSP)
    assets = Path(fastapi_offline.__file__).with_name("static")

    @app.get("/docs", include_in_schema=False)
    async def explorer() -> Response:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html; charset=utf-8", headers=_DOCS_HEADERS)

    @app.get("/docs/swagger-ui.css", include_in_schema=False)
    async def explorer_css() -> Response:
        return FileResponse(assets / "swagger-ui.css", media_type="text/css; charset=utf-8")

    @app.get("/docs/swagger-ui-bundle.js", include_in_schema=False)
    async def explorer_js() -> Response:
        return FileResponse(assets / "swagger-ui-bundle.js", media_type="text/javascript; charset=utf-8")


# ---------------------------------------------------------------------- handlers' helpers


async def _await(state: _State, request: Request, work: PairsWork | SearchWork) -> Any:
    """Queue ``work`` and return its result, turning every failure into an :class:`ApiError`.

    When the request times out or its client leaves first, its future is cancelled, which frees
    its place in the queue at once and keeps the rest of its work from running.
    """
    future = state.batcher.submit(work)  # raises QueueFullError / ShuttingDownError: answered at once
    result = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait(
            (result, gone), timeout=state.config.timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
        # nothing when answered; else the batcher frees its place now and drops the work
        future.cancel()
        result.cancel()
    try:
        if result not in done:
            if gone in done:
                raise _ClientGone
            raise TimeoutError
        return result.result()
    except TimeoutError:
        state.metrics.rejected.labels("timeout").inc()
        raise ApiError(
            "timeout",
            f"the request did not finish within {state.config.timeout_s:g} s; retry later or send fewer documents",
        ) from None
    except (ApiError, _ClientGone):
        raise
    except (InputError, ConfigError) as err:
        raise ApiError("invalid", str(err)) from err
    except Exception as err:
        log.error("scoring failed: %s", type(err).__name__)
        raise ApiError("internal", "scoring failed; see the server log") from err


class _ClientGone(Exception):
    """The client closed the connection before its answer (logged and counted as status 499)."""


async def _client_gone(request: Request) -> None:
    """Return when the client has closed the connection (its body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that answers with empty body messages is polled, not spun on


async def _score(
    state: _State,
    request: Request,
    queries: list[str],
    documents: list[str],
    act: Activation,
    *,
    max_doc_tokens: int | None = None,
    instruction: str | None = None,
) -> PairsResult:
    served = state.served
    acts = tuple(dict.fromkeys((act, served.order_activation(act))))
    work = PairsWork(queries, documents, acts, max_doc_tokens, instruction)
    result = await _await(state, request, work)
    assert isinstance(result, PairsResult)
    t = result.timing
    served.record_speed(t.batch_pairs, t.inference_ms / 1000)
    request.scope[STATS_KEY] = {
        "pairs": len(queries),
        "tokens": int(result.num_tokens.sum()),
        "truncated": int(result.truncated.sum()),
        "queue_ms": round(t.queue_ms, 1),
        "tokenize_ms": round(t.tokenize_ms, 1),
        "inference_ms": round(t.inference_ms, 1),
        "batch": f"{t.batch_pairs}/{t.batch_requests}",
    }
    return result


async def _cohere(
    state: _State,
    request: Request,
    query: str,
    texts: list[str],
    documents: Sequence[str | dict[str, Any]],
    top_n: int | None,
    max_tokens_per_doc: int | None,
    return_documents: bool,
    raw_scores: bool,
    *,
    version: str,
    instruction: str | None = None,
) -> Response:
    served, cfg = state.served, state.config
    if not texts:
        raise ApiError("empty", "`documents` cannot be empty; send at least one document")
    _check_texts(cfg, query, texts, "documents")
    _check_instruction(served, instruction)
    act = served.output_activation(raw_scores)
    # a cut shorter than the model's own limit is made before scoring; longer ones change nothing
    max_doc_tokens = (
        max_tokens_per_doc if max_tokens_per_doc is not None and max_tokens_per_doc < served.max_length else None
    )
    result = await _score(
        state, request, [query] * len(texts), texts, act, max_doc_tokens=max_doc_tokens, instruction=instruction
    )
    scores, order = _rank(served, result, act, top_n)
    signals = pairs_signals(served, query, texts, result, act)
    state.monitor.observe(signals)
    state.log_pairs(request.url.path, query, texts, scores, order, result, signals)
    results = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if return_documents:
            doc = documents[i]
            item["document"] = {"text": doc} if isinstance(doc, str) else doc
        results.append(item)
    tokens = int(result.num_tokens.sum())
    cut = np.flatnonzero(result.truncated).tolist()
    warnings = []
    if cut:
        limit = f"max_tokens_per_doc={max_doc_tokens}" if max_doc_tokens else f"max_length={served.max_length}"
        warnings.append(
            f"{len(cut)} of {len(texts)} documents were cut to fit ({limit} tokens; the query is kept whole): "
            f"indices {_preview_ids(cut)}"
        )
    t = result.timing
    meta = {
        "api_version": {"version": version},
        "billed_units": {"search_units": math.ceil(len(texts) / 100)},
        "tokens": {"input_tokens": tokens},
        "warnings": warnings,
        "crossrank": {
            "activation": act,
            "scores": "probability" if served.is_probability(act) else "logit",
            "max_length": served.max_length,
            "truncated": cut,
            "queue_ms": round(t.queue_ms, 3),
            "tokenize_ms": round(t.tokenize_ms, 3),
            "inference_ms": round(t.inference_ms, 3),
            "batch_pairs": t.batch_pairs,
            "batch_requests": t.batch_requests,
        },
    }
    content: dict[str, Any] = {"id": str(uuid.uuid4())}
    if version == "1":
        content["model"] = served.name
    content["results"] = results
    content["meta"] = meta
    if version == "1":
        content["usage"] = {"total_tokens": tokens, "prompt_tokens": tokens}
    return JSONResponse(content, headers=_headers(act, result))


def _rank(
    served: ServedModel, result: PairsResult, act: Activation, top_n: int | None
) -> tuple[list[float], list[int]]:
    """Return the scores (input order) and the order of the best ``top_n``, as ``CrossEncoder.rerank``."""
    try:
        column = served.relevance_column()
    except ConfigError as err:
        raise ApiError("invalid", str(err)) from err
    scores = result.scores[act]
    keys = result.scores[served.order_activation(act)]
    if column is not None:
        scores, keys = scores[:, column], keys[:, column]
    order = rank_order(keys, top_n)
    return scores.tolist(), order.tolist()


def _object_texts(documents: Sequence[str | dict[str, Any]], rank_fields: list[str] | None) -> list[str]:
    """Return the text ranked for each document: a string, or its ``rank_fields`` joined by spaces."""
    fields = ["text"] if rank_fields is None else rank_fields
    if not fields:  # the schema refuses it too; an empty list never means `text`
        raise ApiError("invalid", "rank_fields is empty; name at least one field, e.g. ['text'], or leave it out")
    texts = []
    for i, doc in enumerate(documents):
        if isinstance(doc, str):
            texts.append(doc)
            continue
        values = []
        for name in fields:
            value = doc.get(name)
            if not isinstance(value, str):
                got = "missing" if value is None else f"a {type(value).__name__}"
                raise ApiError(
                    "invalid",
                    f"documents[{i}] field {name!r} must be a string (got {got}); objects need a 'text' field, "
                    "or name the fields to rank in rank_fields",
                )
            values.append(value)
        texts.append(" ".join(v for v in values if v.strip()))
    return texts


def _check_text(cfg: ServeConfig, text: str, where: str) -> None:
    if not text.strip():
        raise ApiError("invalid", f"{where} is empty; send non-blank text")
    if len(text) > cfg.max_document_chars:
        raise ApiError(
            "too_large", f"{where} has {len(text)} characters, more than the limit of {cfg.max_document_chars}"
        )


def _check_texts(cfg: ServeConfig, query: str, texts: Sequence[str], field: str) -> None:
    _check_text(cfg, query, "query")
    if len(texts) > cfg.max_documents:
        raise ApiError("too_large", f"{len(texts)} {field} is more than the limit of {cfg.max_documents} per request")
    for i, text in enumerate(texts):
        _check_text(cfg, text, f"{field}[{i}]")


def _check_instruction(served: Any, instruction: str | None) -> None:
    """Refuse an instruction the served model has no place for, or an empty one, before it is queued."""
    if instruction is None:
        return
    if not instruction.strip():
        raise ApiError("invalid", "`instruction` is empty; leave it out to use the model's own")
    if not served.takes_instruction:
        raise ApiError(
            "invalid",
            f"`instruction` is not taken by {served.name!r}: its prompt has no place for one; leave it out "
            "(instructions are for rerankers such as Qwen3-Reranker and mxbai-rerank-v2)",
        )


def _preview_ids(ids: list[int]) -> str:
    return str(ids) if len(ids) <= 20 else str(ids[:20])[:-1] + ", ...]"


def _headers(act: Activation, result: PairsResult) -> dict[str, str]:
    t = result.timing
    return {
        "x-crossrank-activation": act,
        "x-crossrank-truncated": str(int(result.truncated.sum())),
        "x-compute-tokens": str(int(result.num_tokens.sum())),
        "x-queue-time": str(round(t.queue_ms)),
        "x-tokenization-time": str(round(t.tokenize_ms)),
        "x-inference-time": str(round(t.inference_ms)),
    }


# ---------------------------------------------------------------------- errors


def _error(dialect: Dialect, kind: ErrorKind, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(dialect, kind, message), status_code=error_status(dialect, kind), headers=headers)


_STATUS_KINDS: dict[int, ErrorKind] = {
    400: "invalid",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "body_too_large",
    421: "misdirected",
    422: "invalid",
    429: "overloaded",
    503: "unavailable",
    504: "timeout",
}


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return _error(dialect_of(request.url.path), exc.kind, exc.message, headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _error(dialect_of(request.url.path), "invalid", validation_message(exc.errors()))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = _STATUS_KINDS.get(exc.status_code, "internal" if exc.status_code >= 500 else "invalid")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return _error(dialect_of(request.url.path), kind, message, dict(exc.headers or {}))

    async def client_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it: the status is for the log and the metrics

    app.add_exception_handler(_ClientGone, client_gone)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
