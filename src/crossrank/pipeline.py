"""The two-stage pipeline: a first stage finds candidates, the cross-encoder reorders the top of them.

The first stage is any :class:`~crossrank.retrieve.protocols.FirstStage` (ids and scores) and the
texts come from any :class:`~crossrank.retrieve.protocols.DocumentStore`; an :class:`Index` is both.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from crossrank.errors import ConfigError, InputError
from crossrank.ranking import Hit, Ranking
from crossrank.rerank.cross_encoder import CrossEncoder
from crossrank.retrieve.fusion import minmax
from crossrank.retrieve.index import Index, Retriever
from crossrank.retrieve.protocols import DocumentStore, FirstStage, Retrieved, stage_name
from crossrank.settings import SearchSettings, load_settings

__all__ = ["Blend", "Pipeline", "SearchHit", "SearchResult", "blend_scores", "check_depth"]

Blend = Literal["probability", "minmax"]
_BLENDS = ("probability", "minmax")


def check_depth(k: int, depth: int) -> None:
    """Check that a reranked search looks at no fewer candidates (``depth``) than it returns (``k``).

    The one rule behind the library, ``crossrank search`` and ``POST /v1/search``: a search never
    quietly reranks more (or returns fewer) than asked.

    Raises:
        InputError: ``depth < k``.
    """
    if depth < k:
        raise InputError(f"depth must be >= k (got depth={depth}, k={k}); raise depth or lower k")


def _check_blend(blend: str) -> Blend:
    if blend not in _BLENDS:
        raise InputError(f"blend must be one of {_BLENDS} (got {blend!r})")
    return blend  # type: ignore[return-value]


def blend_scores(
    ce: np.ndarray, first_stage: np.ndarray, weight: float, mode: Blend = "probability", activation: str = "sigmoid"
) -> np.ndarray:
    """Return a query's final scores: ``weight * ce' + (1 - weight) * minmax(first_stage)``.

    ``ce'`` is the cross-encoder's probability as it is (``mode="probability"``; the sigmoid of
    raw logits when ``activation="none"``) or its scores min-max scaled over the query's
    candidates (``"minmax"``). The pipeline orders by these, ties in first-stage order; ``crossrank
    tune`` scores its candidate settings with the same function.
    """
    if mode == "minmax":
        part = minmax(ce)
    elif activation == "none":  # raw logits: the sigmoid is the model's probability
        part = 1.0 / (1.0 + np.exp(-ce.astype(np.float64)))
    else:
        part = np.asarray(np.clip(ce, 0.0, 1.0), dtype=np.float64)
    return np.asarray(weight * part + (1.0 - weight) * minmax(first_stage), dtype=np.float64)


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchHit(Hit):
    """One result of a search: a :class:`~crossrank.ranking.Hit` with what each stage said about it.

    Attributes:
        doc_id: the document's id.
        rank: its final rank (1 = best).
        score: its final score: the cross-encoder's when reranked (blended with the first stage's
            when ``rerank_weight < 1``), else the first stage's.
        index: its position among the first stage's candidates (``first_stage_rank - 1``).
        first_stage_rank: its rank in the first stage (1 = best).
        first_stage_score: its first-stage score (BM25, dot product, or fused).
        rerank_score: the cross-encoder's score, or ``None`` when reranking was off.
        document: the stored record (``id``, ``title``, ``text``, ``metadata``?).
        truncated: the cross-encoder had to cut the document to fit its ``max_length``.
    """

    first_stage_rank: int
    first_stage_score: float
    rerank_score: float | None

    def to_dict(self, *, with_document: bool = True) -> dict[str, Any]:
        """Return the hit as JSON-ready values."""
        out: dict[str, Any] = {
            "doc_id": self.doc_id,
            "rank": self.rank,
            "score": self.score,
            "first_stage_rank": self.first_stage_rank,
            "first_stage_score": self.first_stage_score,
            "rerank_score": self.rerank_score,
            "truncated": self.truncated,
        }
        if with_document and self.document is not None:
            out["document"] = dict(self.document)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult(Ranking):
    """The results of one query: a :class:`~crossrank.ranking.Ranking` of :class:`SearchHit`.

    Attributes:
        query: the query text.
        hits: the top ``k``, best first.
        retriever: the first stage that ran (an index's ``bm25``, ``dense``, ``hybrid``, or another
            first stage's name).
        reranked: whether the cross-encoder reordered the candidates.
        depth: how many first-stage candidates were reranked.
        timings_ms: milliseconds per stage: ``first_stage``, ``fetch`` (reading texts), ``rerank``, ``total``.
            In a batch, each query gets its share of the batch's time.
        query_id: the query's id, when it has one.
        num_truncated: how many reranked candidates were cut to the model's ``max_length``.
    """

    hits: tuple[SearchHit, ...]
    query: str
    retriever: str
    reranked: bool
    depth: int
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self, *, with_documents: bool = True) -> dict[str, Any]:
        """Return the result as JSON-ready values."""
        return {
            "query_id": self.query_id,
            "query": self.query,
            "retriever": self.retriever,
            "reranked": self.reranked,
            "depth": self.depth,
            "timings_ms": self.timings_ms,
            "hits": [h.to_dict(with_document=with_documents) for h in self.hits],
        }


class Pipeline:
    """Retrieve with a first stage, then rerank the top ``depth`` with a cross-encoder.

    Args:
        first_stage: an opened :class:`Index` (or its folder), whose first stages are picked per
            search with ``retriever=``; or any :class:`~crossrank.retrieve.protocols.FirstStage`.
        reranker: a :class:`CrossEncoder`, a model name for one (``"default"``), or ``None`` for
            first-stage results only.
        rerank_weight: the cross-encoder's share of the final score (1.0: the cross-encoder's
            order alone); see :meth:`search_many`.
        blend: how the cross-encoder's scores enter a blend (``rerank_weight < 1``):
            ``"probability"`` (its probability of relevance, as is) or ``"minmax"`` (its scores
            stretched to [0, 1] over each query's candidates); see :meth:`search_many`.
        store: where the candidates' texts come from; by default the index, or the first stage
            itself when it is also a :class:`~crossrank.retrieve.protocols.DocumentStore`.
        settings: a :class:`~crossrank.settings.SearchSettings` or the path of a file ``crossrank
            tune`` wrote: whether to rerank, the depth, the blend weight and mode a search uses when
            it does not say (it replaces ``rerank_weight`` and ``blend``).

    Raises:
        ConfigError: the first stage is neither an index nor a first stage, or no store was given
            for a first stage that is not one.

    Example:
        >>> pipe = Pipeline("my-index", reranker="default")  # doctest: +SKIP
        >>> result = pipe.search("what is a cat", k=10, depth=100)  # doctest: +SKIP
        >>> result.hits[0].doc_id, result.timings_ms  # doctest: +SKIP
        >>> Pipeline(my_first_stage, reranker="default", store=my_store)  # doctest: +SKIP
    """

    def __init__(
        self,
        first_stage: Index | FirstStage | str | os.PathLike[str],
        reranker: CrossEncoder | str | os.PathLike[str] | None = "default",
        *,
        store: DocumentStore | None = None,
        rerank_weight: float = 1.0,
        blend: Blend = "probability",
        settings: SearchSettings | str | os.PathLike[str] | None = None,
    ) -> None:
        if not 0.0 <= rerank_weight <= 1.0:
            raise InputError(f"rerank_weight must be within [0, 1] (got {rerank_weight})")
        _check_blend(blend)
        if isinstance(settings, (str, os.PathLike)):
            settings = load_settings(settings)
        #: the settings searches use when a call does not say (``crossrank tune`` writes them)
        self.settings = settings or SearchSettings(rerank_weight=rerank_weight, blend=blend)
        self.rerank_weight = self.settings.rerank_weight
        self.blend = _check_blend(self.settings.blend)
        if isinstance(first_stage, (str, os.PathLike)):
            first_stage = Index.open(first_stage)
        #: the index searched, or ``None`` when the first stage is another kind
        self.index: Index | None = first_stage if isinstance(first_stage, Index) else None
        if self.index is None and not isinstance(first_stage, FirstStage):
            raise ConfigError(
                "first_stage must be an Index, an index folder, or a FirstStage (an object with "
                f"retrieve(queries, k) returning ids and scores); got {type(first_stage).__name__}"
            )
        self.first_stage: Index | FirstStage = first_stage
        if store is None:
            if self.index is not None:
                store = self.index
            elif isinstance(first_stage, DocumentStore):
                store = first_stage
            else:
                raise ConfigError(
                    f"first stage {stage_name(first_stage)!r} returns ids only; pass store= (a DocumentStore: "
                    "an object with get(ids) returning records) to read the documents' texts"
                )
        self.store: DocumentStore = store
        self.reranker = CrossEncoder(reranker) if isinstance(reranker, (str, os.PathLike)) else reranker

    @property
    def default_retriever(self) -> str:
        """Return the name of the first stage a search runs when it names none."""
        return self.index.default_retriever if self.index is not None else stage_name(self.first_stage)

    def _stage(self, retriever: str | None, fusion: Literal["rrf", "interpolate"] | None) -> tuple[FirstStage, str]:
        """Return the first stage a search runs, and its name."""
        if self.index is not None:
            name = retriever or self.index.default_retriever
            return self.index.first_stage(name, fusion=fusion), name  # type: ignore[arg-type]
        assert isinstance(self.first_stage, FirstStage)
        name = stage_name(self.first_stage)
        if retriever is not None and retriever != name:
            raise ConfigError(
                f"this pipeline's first stage is {name!r}; it cannot run retriever {retriever!r} "
                "(retriever= picks among an index's first stages)"
            )
        if fusion is not None:
            raise ConfigError(f"fusion= picks how an index's hybrid fuses; first stage {name!r} is not an index's")
        return self.first_stage, name

    def search(
        self,
        query: str,
        k: int = 10,
        depth: int | None = None,
        *,
        retriever: Retriever | None = None,
        rerank: bool | None = None,
        query_id: str | None = None,
        fusion: Literal["rrf", "interpolate"] | None = None,
        rerank_weight: float | None = None,
        blend: Blend | None = None,
    ) -> SearchResult:
        """Return the top ``k`` for ``query``: first stage to ``depth``, then the cross-encoder.

        Args:
            query: the query text.
            k: results to return.
            depth: first-stage candidates to rerank, at least ``k`` (unused with ``rerank=False``;
                default: the pipeline's settings, 100 unless ``crossrank tune`` chose another).
            retriever: ``"bm25"``, ``"dense"`` or ``"hybrid"``; by default the index's own.
            rerank: run the cross-encoder; ``False`` returns the first stage's top ``k`` to compare
                (default: the pipeline's settings, True unless ``crossrank tune`` chose otherwise).
            query_id: an id carried on the result.
            fusion: for hybrid retrieval, ``"rrf"`` or ``"interpolate"`` (default: the index's).
            rerank_weight: the cross-encoder's share of the final score; see :meth:`search_many`.
            blend: ``"probability"`` or ``"minmax"`` (default: the pipeline's); see :meth:`search_many`.

        Raises:
            InputError: an empty query, ``k`` or ``depth`` < 1, ``depth < k`` when reranking, or
                ``rerank_weight`` outside [0, 1].
        """
        return self.search_many(
            [query],
            k=k,
            depth=depth,
            retriever=retriever,
            rerank=rerank,
            query_ids=[query_id],
            fusion=fusion,
            rerank_weight=rerank_weight,
            blend=blend,
        )[0]

    def search_many(
        self,
        queries: Sequence[str] | Mapping[str, str],
        k: int = 10,
        depth: int | None = None,
        *,
        retriever: Retriever | None = None,
        rerank: bool | None = None,
        query_ids: Sequence[str | None] | None = None,
        fusion: Literal["rrf", "interpolate"] | None = None,
        rerank_weight: float | None = None,
        blend: Blend | None = None,
    ) -> list[SearchResult]:
        """Search a batch of queries (a list, or ``{query_id: text}``); one result per query, in order.

        The first stage runs once for the batch and the cross-encoder scores all the batch's
        pairs together, so a batch is faster than a loop of :meth:`search`.

        ``rerank_weight`` (default: the pipeline's, 1.0) is the cross-encoder's share of the final
        score: ``w * ce + (1 - w) * minmax(first stage)``, the first stage normalised over the
        query's reranked candidates. 1.0 orders by the cross-encoder alone; lower values keep some
        of the first stage's judgement, which helps out of the cross-encoder's domain. With
        ``blend="probability"`` (the default) ``ce`` is the cross-encoder's probability of
        relevance as it is (sigmoid of raw logits), so a query on which it finds nothing clearly
        relevant keeps about the first stage's order; ``"minmax"`` stretches its scores to [0, 1]
        per query, which lets it reorder even when all its scores are low. On five out-of-domain
        collections probability blending scored higher at every weight (docs/retrieval.md).

        Raises:
            InputError: as :meth:`search`.
        """
        if isinstance(queries, str):
            raise InputError("pass a list of queries (or use search() for one)")
        if isinstance(queries, Mapping):
            query_ids = [str(q) for q in queries]
            texts = [str(t) for t in queries.values()]
        else:
            texts = list(queries)
            query_ids = list(query_ids) if query_ids is not None else [None] * len(texts)
        bad = [i for i, q in enumerate(texts) if not isinstance(q, str) or not q.strip()]
        if bad:
            raise InputError(f"query {bad[0]} is empty or not a string ({texts[bad[0]]!r}); pass non-empty text")
        depth = self.settings.depth if depth is None else depth
        rerank = self.settings.rerank if rerank is None else rerank
        if k < 1 or depth < 1:
            raise InputError(f"k and depth must be >= 1 (got k={k}, depth={depth})")
        weight = self.rerank_weight if rerank_weight is None else float(rerank_weight)
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"rerank_weight must be within [0, 1] (got {weight})")
        mode = self.blend if blend is None else _check_blend(blend)
        do_rerank = rerank and self.reranker is not None
        if do_rerank:
            check_depth(k, depth)
        pool = depth if do_rerank else k
        stage, stage_ran = self._stage(retriever, fusion)
        n = max(len(texts), 1)

        t0 = time.perf_counter()
        found = stage.retrieve(texts, pool)
        t1 = time.perf_counter()
        cands, records = [], []
        for c in found:
            cand, recs = self._fetch(c, depth if do_rerank else k)
            cands.append(cand)
            records.append(recs)
        t2 = time.perf_counter()
        rerank_ms = 0.0
        results = []
        if do_rerank:
            assert self.reranker is not None
            rankings = self.reranker.rerank_many(texts, records, k=None)
            rerank_ms = (time.perf_counter() - t2) * 1000
        for qi, (text, cand) in enumerate(zip(texts, cands, strict=True)):
            recs = records[qi]
            hits: list[SearchHit] = []
            order: list[tuple[int, float | None, bool, float]]
            if do_rerank:
                ce_hits = rankings[qi].hits
                order = [(h.index, h.score, h.truncated, h.score) for h in ce_hits]
                if weight < 1.0 and ce_hits:
                    idx = np.array([h.index for h in ce_hits])
                    ce = np.array([h.score for h in ce_hits], dtype=np.float32)
                    activation = self.reranker.activation if self.reranker is not None else "sigmoid"
                    final = blend_scores(ce, cand.scores[idx], weight, mode, activation)
                    by = np.lexsort((idx, -final))  # ties: first-stage order
                    order = [(int(idx[j]), float(ce[j]), ce_hits[j].truncated, float(final[j])) for j in by]
            else:
                order = [(i, None, False, float(cand.scores[i])) for i in range(len(recs))]
            for rank, (i, ce_score, trunc, final_score) in enumerate(order[:k], start=1):
                fs = float(cand.scores[i])
                hits.append(
                    SearchHit(
                        doc_id=recs[i]["id"],
                        rank=rank,
                        index=i,
                        score=final_score,
                        first_stage_rank=i + 1,
                        first_stage_score=fs,
                        rerank_score=float(ce_score) if ce_score is not None else None,
                        document=recs[i],
                        truncated=bool(trunc),
                    )
                )
            total = (t2 - t0) * 1000 / n + rerank_ms / n
            timings = {
                "first_stage": round((t1 - t0) * 1000 / n, 3),
                "fetch": round((t2 - t1) * 1000 / n, 3),
                "rerank": round(rerank_ms / n, 3),
                "total": round(total, 3),
            }
            results.append(
                SearchResult(
                    query=text,
                    hits=tuple(hits),
                    retriever=stage_ran,
                    reranked=do_rerank,
                    depth=min(depth, len(cand)) if do_rerank else 0,
                    timings_ms=timings,
                    query_id=query_ids[qi],
                    num_truncated=rankings[qi].num_truncated if do_rerank else 0,
                    signals=rankings[qi].signals if do_rerank else None,
                )
            )
        return results

    def _fetch(self, found: Retrieved, n: int) -> tuple[Retrieved, list[dict[str, Any]]]:
        """Return the first ``n`` candidates whose records the store has, and those records, in order.

        A document the store no longer has (deleted since the first stage ran) is left out.
        """
        ids = list(found.doc_ids[:n])
        got = self.store.get(ids)
        keep = [i for i, rec in enumerate(got) if rec is not None]
        if len(keep) == len(ids):
            return found, [dict(r) for r in got if r is not None]
        return (
            Retrieved(tuple(ids[i] for i in keep), found.scores[keep]),
            [dict(got[i]) for i in keep],  # type: ignore[arg-type]
        )
