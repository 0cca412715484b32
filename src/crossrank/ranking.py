"""The small set of frozen value types that carry results through crossrank."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from crossrank.signals import QuerySignals

__all__ = ["Hit", "RankedHit", "RankedList", "Ranking", "ScoredPairs", "rank_order"]


class RankedHit(Protocol):
    """What every result hit has: a doc id and a score (higher is better)."""

    @property
    def doc_id(self) -> str: ...

    @property
    def score(self) -> float: ...


class RankedList(Protocol):
    """What every result list has: its query's id and its hits, best first.

    :class:`Ranking` (reranking) and :class:`~crossrank.pipeline.SearchResult` (search) are both
    ranked lists, so one writer (:func:`crossrank.io.write_trec_run`) and one evaluation read
    either; a hit's rank is its position in ``hits`` plus one.
    """

    @property
    def query_id(self) -> str | None: ...

    @property
    def hits(self) -> Sequence[RankedHit]: ...


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked document: the base of every hit crossrank returns.

    A reranking's hits are plain :class:`Hit` values; a search's are
    :class:`~crossrank.pipeline.SearchHit`, a :class:`Hit` that also says what each stage made of
    the document. Both count ``rank`` from 1 and ``index`` from 0.

    Attributes:
        doc_id: the record's ``id`` (or ``_id``), or the input position as a string for plain texts.
        score: the relevance score; higher means more relevant.
        index: position of the document in the list that was ranked (the caller's input, or the
            first stage's candidates), from 0.
        text: the scored text, when the caller asked for it.
        document: the caller's original record, carried through untouched (``None`` for plain strings).
        truncated: whether the pair was cut to the model's ``max_length``.
        rank: the hit's place in its ranking, 1 = best.
    """

    doc_id: str
    score: float
    index: int
    text: str | None = None
    document: Mapping[str, Any] | None = None
    truncated: bool = False
    rank: int = 1

    def to_dict(self, *, with_document: bool = True) -> dict[str, Any]:
        """Return the hit as JSON-ready values (``text`` only when it was kept)."""
        out: dict[str, Any] = {
            "doc_id": self.doc_id,
            "rank": self.rank,
            "score": self.score,
            "index": self.index,
            "truncated": self.truncated,
        }
        if self.text is not None:
            out["text"] = self.text
        if with_document and self.document is not None:
            out["document"] = dict(self.document)
        return out


@dataclass(frozen=True, slots=True)
class Ranking:
    """Documents ranked for one query, best first, with ties kept in input order.

    The base of every result list crossrank returns; a search's is
    :class:`~crossrank.pipeline.SearchResult`, a :class:`Ranking` with the query and the stages' report.

    Attributes:
        hits: the ranked hits; doc ids are unique.
        query_id: the query's id, when it has one.
        num_truncated: how many of the scored pairs were cut to ``max_length``.
        signals: what the reranking says about itself without labels (agreement with the input
            order, the model's confidence, input health; see :class:`~crossrank.signals.QuerySignals`),
            or ``None`` when nothing was reranked.
    """

    hits: tuple[Hit, ...]
    query_id: str | None = None
    num_truncated: int = 0
    signals: QuerySignals | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.hits)

    def doc_ids(self) -> list[str]:
        """Return the doc ids in rank order."""
        return [h.doc_id for h in self.hits]

    def to_dict(self, *, with_documents: bool = True) -> dict[str, Any]:
        """Return the ranking as JSON-ready values."""
        return {
            "query_id": self.query_id,
            "num_truncated": self.num_truncated,
            "hits": [h.to_dict(with_document=with_documents) for h in self.hits],
        }


@dataclass(frozen=True, slots=True)
class ScoredPairs:
    """Scores of a list of pairs, with what happened to each pair on the way.

    Attributes:
        scores: float32, shape ``(n,)`` for one-logit models or ``(n, num_labels)``, input order.
        truncated: bool, shape ``(n,)``: the pair was cut to ``max_length``.
        num_tokens: int32, shape ``(n,)``: tokens the model read for the pair (for windows, all windows).
    """

    scores: npt.NDArray[np.float32]
    truncated: npt.NDArray[np.bool_]
    num_tokens: npt.NDArray[np.int32] = field(repr=False)

    @property
    def num_truncated(self) -> int:
        """Return how many pairs were truncated."""
        return int(self.truncated.sum())


def rank_order(
    keys: npt.ArrayLike, k: int | None = None, *, groups: npt.ArrayLike | None = None
) -> npt.NDArray[np.intp]:
    """Return the positions of the best ``k`` keys (all when ``None``), best first, ties in input order.

    This is crossrank's one ranking rule: the library, the HTTP service and batch reranking all
    order by it, so a document's rank never depends on which of them ranked it. With ``groups``
    (one query id or code per key), each group is ranked on its own and keeps its best ``k``;
    groups come in the order of their first key.

    Example:
        >>> rank_order([0.2, 0.9, 0.2, 0.5], k=3).tolist()
        [1, 3, 0]
        >>> rank_order([0.2, 0.9, 0.7, 0.5], k=1, groups=["b", "a", "b", "a"]).tolist()
        [2, 1]
    """
    neg = -np.asarray(keys, dtype=np.float64)
    if groups is None:
        order: npt.NDArray[np.intp] = np.argsort(neg, kind="stable")
        return order if k is None else order[:k]
    _, first, code = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    n = neg.size
    order = np.lexsort((np.arange(n), neg, first[code.reshape(-1)])).astype(np.intp)
    if k is None:
        return order
    sorted_groups = code.reshape(-1)[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    top: npt.NDArray[np.intp] = order[rank < k]
    return top
