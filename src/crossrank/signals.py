"""Label-free signals of one reranking: agreement with the first stage, confidence, and input health.

Every reranking crossrank does (:meth:`~crossrank.CrossEncoder.rerank`,
:meth:`~crossrank.Pipeline.search`, ``crossrank serve``) computes a :class:`QuerySignals` from
what it already has: the candidates in first-stage order, the cross-encoder's scores for them,
which pairs were truncated, the candidates' texts and the query. Nothing here needs a label, so
the signals can be watched in production (``GET /v1/monitor``), saved as a reference profile
(:mod:`crossrank.drift`) and judged (``crossrank monitor verdict``).

The computation is a handful of numpy calls per query (no loop over candidates); at depth 100 it
costs tens of microseconds, next to the tens of milliseconds of the model call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank.errors import InputError

__all__ = [
    "CALIBRATED_THRESHOLD",
    "DEFAULT_K",
    "RBO_P",
    "SHORT_CHARS",
    "SIGNAL_NAMES",
    "QuerySignals",
    "kendall_tau",
    "query_signals",
    "query_signals_many",
    "rank_biased_overlap",
]

#: the top of the two orders compared by the agreement signals
DEFAULT_K = 10
#: rank-biased overlap's persistence: 0.9 puts about 86% of the weight on the first 10 ranks
RBO_P = 0.9
#: a calibrated probability at or above this counts a candidate as relevant (more likely than not)
CALIBRATED_THRESHOLD = 0.5
#: a candidate whose text, stripped, has fewer characters than this counts as empty or very short
SHORT_CHARS = 20


@dataclass(frozen=True, slots=True)
class QuerySignals:
    """What one reranking says about itself, without labels.

    The first-stage order is the order the candidates were given in (for
    :meth:`~crossrank.CrossEncoder.rerank`, the caller's input order).

    Attributes:
        kendall_tau: Kendall's tau between the first-stage and the reranked positions of the
            reranked top ``k``, in [-1, 1]; 1 = the same order (1.0 with fewer than 2 candidates).
        rbo: extrapolated rank-biased overlap (``p = 0.9``) of the two top ``k`` lists, in [0, 1].
        top_changed: the reranked first result is not the first stage's.
        displacement: mean absolute difference between a reranked top-``k`` document's new rank and
            its first-stage rank, in ranks.
        top_score: the best score.
        margin: best score minus the second best (0 with one candidate).
        score_std: standard deviation of all the candidates' scores.
        score_iqr: interquartile range of all the candidates' scores.
        above_threshold: share of candidates whose calibrated probability is at least 0.5, or
            ``None`` when the scores are not calibrated.
        truncated_share: share of pairs cut to the model's ``max_length``.
        duplicates: candidates whose text repeats an earlier candidate's.
        short_share: share of candidates whose text has fewer than :data:`SHORT_CHARS` characters.
        query_words: the query's length in whitespace-separated words.
        depth: candidates reranked.
    """

    kendall_tau: float
    rbo: float
    top_changed: bool
    displacement: float
    top_score: float
    margin: float
    score_std: float
    score_iqr: float
    above_threshold: float | None
    truncated_share: float
    duplicates: int
    short_share: float
    query_words: int
    depth: int

    def to_dict(self) -> dict[str, Any]:
        """Return the signals as JSON-ready values (``top_changed`` a bool, counts ints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuerySignals:
        """Return the signals :meth:`to_dict` wrote.

        Raises:
            InputError: a field is missing.
        """
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise InputError(f"query signals lack {missing}; expected the fields of QuerySignals.to_dict()")
        return cls(**{f.name: data[f.name] for f in fields(cls)})


#: the signals' names, in :class:`QuerySignals` order
SIGNAL_NAMES: tuple[str, ...] = tuple(f.name for f in fields(QuerySignals))


def kendall_tau(order: npt.ArrayLike, k: int = DEFAULT_K) -> float:
    """Return Kendall's tau between first-stage and reranked positions of the reranked top ``k``.

    ``order`` holds first-stage positions (0 = the first stage's best), best reranked first. The
    positions are distinct, so there are no ties and tau-a is tau-b.

    Example:
        >>> kendall_tau([0, 1, 2]), kendall_tau([2, 1, 0])
        (1.0, -1.0)
    """
    top = np.asarray(order, dtype=np.int64)[:k]
    n = top.size
    if n < 2:
        return 1.0
    s = np.sign(top[None, :] - top[:, None])  # concordant pairs: later reranked rank, later first-stage rank
    upper = np.triu(s, 1).sum()
    return float(upper / (n * (n - 1) / 2))


def rank_biased_overlap(order: npt.ArrayLike, k: int = DEFAULT_K, p: float = RBO_P) -> float:
    """Return the extrapolated rank-biased overlap (Webber et al., 2010) of the two top ``k`` lists.

    The first stage's list is positions ``0, 1, ...``; the reranked one is ``order``. At depth
    ``d`` the overlap ``X_d`` counts reranked documents in the first ``d`` whose first-stage
    position is below ``d``: a document at reranked rank ``j`` and first-stage position ``f``
    counts from depth ``max(j, f) + 1`` on.

    Example:
        >>> round(rank_biased_overlap([0, 1, 2, 3]), 6)
        1.0
    """
    top = np.asarray(order, dtype=np.int64)[:k]
    depth = top.size
    if depth == 0:
        return 1.0
    ranks = np.arange(depth)
    enters = np.maximum(ranks, top)
    overlap = np.cumsum(np.bincount(enters[enters < depth], minlength=depth))
    agree = overlap / (ranks + 1)
    weights = np.power(p, ranks + 1)
    value = agree[-1] * p**depth + (1 - p) / p * float(agree @ weights)
    return float(min(max(value, 0.0), 1.0))


def query_signals(
    scores: npt.ArrayLike,
    *,
    query: str,
    texts: Sequence[str],
    truncated: npt.ArrayLike | None = None,
    order: npt.ArrayLike | None = None,
    threshold: float | None = None,
    k: int = DEFAULT_K,
) -> QuerySignals:
    """Return the signals of one reranking.

    Args:
        scores: the cross-encoder's score of each candidate, ``(n,)``, in first-stage order.
        query: the query text.
        texts: each candidate's scored text, first-stage order.
        truncated: bool ``(n,)``: the pair was cut (``None``: none was).
        order: the reranked order as first-stage positions, best first; by default the scores'
            order (:func:`~crossrank.ranking.rank_order`: ties keep first-stage order).
        threshold: the score at and above which a candidate counts as relevant, for calibrated
            probabilities (0.5); ``None`` leaves :attr:`QuerySignals.above_threshold` out.
        k: the top compared by the agreement signals.

    Raises:
        InputError: the lengths differ, or there are no candidates.

    Example:
        >>> s = query_signals([0.9, 0.5, 0.1], query="a cat", texts=["a", "b", "c"])
        >>> s.kendall_tau, s.top_changed, s.duplicates
        (1.0, False, 0)
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = s.size
    if n == 0:
        raise InputError("query_signals needs at least one candidate (got 0 scores)")
    if len(texts) != n:
        raise InputError(f"got {n} scores but {len(texts)} texts; pass one text per candidate")
    cut = np.zeros(n, dtype=bool) if truncated is None else np.asarray(truncated, dtype=bool).reshape(-1)
    if cut.size != n:
        raise InputError(f"got {n} scores but {cut.size} truncation flags")
    pos = np.argsort(-s, kind="stable") if order is None else np.asarray(order, dtype=np.int64).reshape(-1)
    top = pos[:k]
    ascending = np.sort(s)
    q1, q3 = np.interp([0.25 * (n - 1), 0.75 * (n - 1)], np.arange(n), ascending)  # numpy's "linear" quantiles
    # map and set run in C: no Python step per candidate
    lengths = np.fromiter(map(len, map(str.strip, texts)), dtype=np.int64, count=n)
    return QuerySignals(
        kendall_tau=kendall_tau(top, k),
        rbo=rank_biased_overlap(top, k),
        top_changed=bool(pos[0] != 0),
        displacement=float(np.abs(top - np.arange(top.size)).mean()),
        top_score=float(ascending[-1]),
        margin=float(ascending[-1] - ascending[-2]) if n > 1 else 0.0,
        score_std=float(s.std()),
        score_iqr=float(q3 - q1),
        above_threshold=None if threshold is None else float((s >= threshold).mean()),
        truncated_share=float(cut.mean()),
        duplicates=n - len(set(texts)),
        short_share=float((lengths < SHORT_CHARS).mean()),
        query_words=len(query.split()),
        depth=int(n),
    )


def query_signals_many(
    scores: Sequence[npt.ArrayLike],
    *,
    queries: Sequence[str],
    texts: Sequence[Sequence[str]],
    truncated: Sequence[npt.ArrayLike] | None = None,
    threshold: float | None = None,
    k: int = DEFAULT_K,
) -> list[QuerySignals]:
    """Return :func:`query_signals` for each query of a batch (candidates in first-stage order).

    Raises:
        InputError: the batch's lists differ in length, or as :func:`query_signals`.
    """
    if not len(scores) == len(queries) == len(texts) or (truncated is not None and len(truncated) != len(queries)):
        raise InputError(
            f"got {len(scores)} score lists, {len(queries)} queries and {len(texts)} text lists; pass one per query"
        )
    return [
        query_signals(
            s,
            query=q,
            texts=t,
            truncated=None if truncated is None else truncated[i],
            threshold=threshold,
            k=k,
        )
        for i, (s, q, t) in enumerate(zip(scores, queries, texts, strict=True))
    ]
