"""Choose whether to rerank, how deep, and the blend weight, from a few judged queries.

A handful of judged queries is little evidence, and a setting picked as the best of many on them
looks better than it is. So ``tune`` does three things:

1. It scores every candidate setting on every judged query: the first stage alone, and the
   cross-encoder on the top ``d`` (``d`` in :data:`DEPTHS`) blended with the first stage at weight
   ``w`` (in :data:`WEIGHTS`; 1.0 is the cross-encoder's order alone), exactly as the pipeline
   ranks (:func:`crossrank.pipeline.blend_scores`).
2. It estimates what *the choice* is worth by repeated k-fold cross-validation: the best rerank
   setting on the other folds is applied to each held-out fold, so each query's figure comes
   from a setting chosen without it.
3. It recommends reranking only when that cross-validated gain over the first stage is positive
   with 95% confidence (one-sided, paired bootstrap over queries); otherwise the first stage
   alone. Among the rerank settings it takes the shallowest depth within 2% of the best gain
   (the knee: depth costs latency), and at that depth the best weight.

Every figure comes with a 95% bootstrap interval over queries. The result is a
:class:`~crossrank.settings.SearchSettings` that ``search``, ``serve`` and the pipeline load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossrank.errors import InputError
from crossrank.pipeline import Blend, blend_scores
from crossrank.settings import SearchSettings

__all__ = [
    "DEPTHS",
    "MIN_QUERIES",
    "WEIGHTS",
    "Candidate",
    "JudgedQuery",
    "TuneReport",
    "candidate_settings",
    "judged_from_index",
    "judged_from_run",
    "ndcg_matrix",
    "tune",
    "tune_matrix",
]

#: the depths tried (those above the candidates' own depth are left out)
DEPTHS = (10, 20, 30, 50, 100)
#: the cross-encoder's shares of the final score tried (1.0: its order alone)
WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
#: fewer judged queries than this give no estimate worth the name
MIN_QUERIES = 10
#: rerank settings within this share of the best gain count as tied: the shallowest is taken
KNEE_SHARE = 0.02
#: and within this much nDCG@10, whatever the gain
KNEE_FLOOR = 0.002


@dataclass(frozen=True)
class Candidate:
    """One setting ``tune`` tries: the first stage alone, or a depth and a blend weight."""

    rerank: bool
    depth: int = 0
    rerank_weight: float = 1.0

    @property
    def label(self) -> str:
        """A short name: ``first stage``, ``rerank@50`` or ``rerank@50 w=0.3``."""
        if not self.rerank:
            return "first stage"
        return f"rerank@{self.depth}" + ("" if self.rerank_weight >= 1.0 else f" w={self.rerank_weight:g}")


def candidate_settings(
    max_depth: int, depths: Sequence[int] = DEPTHS, weights: Sequence[float] = WEIGHTS
) -> list[Candidate]:
    """Return the settings to try: the first stage alone first, then every depth and weight."""
    usable = sorted({d for d in depths if d <= max_depth} | ({max_depth} if max_depth < max(depths) else set()))
    return [Candidate(False)] + [Candidate(True, d, float(w)) for d in usable for w in weights]


@dataclass(frozen=True)
class JudgedQuery:
    """A judged query's first-stage candidates and the cross-encoder's scores of them.

    Attributes:
        query_id: the id the qrels use.
        doc_ids: the first stage's candidates, best first.
        first_stage_scores: their first-stage scores, in that order.
        rerank_scores: the cross-encoder's scores of the same candidates, in that order.
    """

    query_id: str
    doc_ids: Sequence[str]
    first_stage_scores: np.ndarray
    rerank_scores: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.doc_ids)
        if len(self.first_stage_scores) != n or len(self.rerank_scores) != n:
            raise InputError(
                f"query {self.query_id!r}: {n} candidates but {len(self.first_stage_scores)} first-stage "
                f"and {len(self.rerank_scores)} rerank scores; give one of each per candidate"
            )


def _order(q: JudgedQuery, c: Candidate, blend: Blend, activation: str) -> list[str]:
    """The candidates' ids in the order the pipeline would return them under setting ``c``."""
    if not c.rerank:
        return list(q.doc_ids)
    d = min(c.depth, len(q.doc_ids))
    ce = np.asarray(q.rerank_scores[:d], dtype=np.float32)
    if c.rerank_weight >= 1.0:
        final = ce.astype(np.float64)
    else:
        final = blend_scores(ce, np.asarray(q.first_stage_scores[:d]), c.rerank_weight, blend, activation)
    by = np.lexsort((np.arange(d), -final))  # ties: first-stage order, as the pipeline
    return [q.doc_ids[i] for i in by] + list(q.doc_ids[d:])


def ndcg_matrix(
    queries: Sequence[JudgedQuery],
    qrels: Mapping[str, Mapping[str, int]],
    candidates: Sequence[Candidate],
    *,
    blend: Blend = "probability",
    activation: str = "sigmoid",
    k: int = 10,
) -> np.ndarray:
    """Return nDCG@k (trec_eval's, via ir-measures) of each setting on each query: (settings, queries)."""
    import ir_measures
    from ir_measures import nDCG

    measure = nDCG @ k
    qr = [ir_measures.Qrel(q.query_id, d, int(g)) for q in queries for d, g in qrels.get(q.query_id, {}).items()]
    out = np.zeros((len(candidates), len(queries)))
    for ci, c in enumerate(candidates):
        run = [
            ir_measures.ScoredDoc(q.query_id, d, float(-r))
            for q in queries
            for r, d in enumerate(_order(q, c, blend, activation)[: max(k, 1)])
        ]
        got = {m.query_id: float(m.value) for m in ir_measures.iter_calc([measure], qr, run)}
        out[ci] = [got.get(q.query_id, 0.0) for q in queries]
    return out


def _bootstrap_ci(x: np.ndarray, rng: np.random.Generator, n: int = 2000, level: float = 0.95) -> tuple[float, float]:
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    a = (1.0 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def _pick_rerank(means: np.ndarray, candidates: Sequence[Candidate], first_mean: float) -> int:
    """The rerank setting to use given per-setting means: the shallowest depth near the best, then its best weight."""
    idx = [i for i, c in enumerate(candidates) if c.rerank]
    best = max(idx, key=lambda i: means[i])
    slack = max(KNEE_FLOOR, KNEE_SHARE * max(means[best] - first_mean, 0.0))
    for d in sorted({candidates[i].depth for i in idx}):
        at = [i for i in idx if candidates[i].depth == d]
        top = max(at, key=lambda i: means[i])
        if means[top] >= means[best] - slack:
            return top
    return best


@dataclass(frozen=True)
class TuneReport:
    """What ``tune`` chose and the evidence.

    Attributes:
        settings: the chosen settings, with this evidence attached.
        chosen: the chosen candidate's label.
        queries: judged queries used.
        means: each candidate's mean nDCG@10 on them, with a 95% interval: ``{label: (mean, lo, hi)}``.
        first_stage: the first stage's mean nDCG@10 and 95% interval.
        rerank_all: reranking the deepest candidates by the cross-encoder alone: mean and interval.
        cv_gain: the cross-validated gain of choosing a rerank setting over the first stage: mean,
            95% interval, and the one-sided bootstrap p-value that it is not positive.
        estimate: the cross-validated nDCG@10 of the whole procedure, with its interval.
        reason: one line: why this choice.
    """

    settings: SearchSettings
    chosen: str
    queries: int
    means: dict[str, tuple[float, float, float]]
    first_stage: tuple[float, float, float]
    rerank_all: tuple[float, float, float]
    cv_gain: tuple[float, float, float, float]
    estimate: tuple[float, float, float]
    reason: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (the settings file's ``evidence``)."""
        return {
            "chosen": self.chosen,
            "queries": self.queries,
            "reason": self.reason,
            "first_stage_ndcg10": list(self.first_stage),
            "rerank_all_ndcg10": list(self.rerank_all),
            "cv_gain_over_first_stage": {
                "mean": self.cv_gain[0],
                "ci95": [self.cv_gain[1], self.cv_gain[2]],
                "p_not_positive": self.cv_gain[3],
            },
            "cv_estimate_ndcg10": list(self.estimate),
            "candidates": {k: list(v) for k, v in self.means.items()},
            **self.extra,
        }


def tune_matrix(
    matrix: np.ndarray,
    candidates: Sequence[Candidate],
    *,
    folds: int = 5,
    repeats: int = 20,
    seed: int = 0,
    alpha: float = 0.05,
    blend: Blend = "probability",
    model: str = "",
) -> TuneReport:
    """Choose a setting from per-query nDCG@10 ``matrix`` (candidates x queries); see the module.

    Raises:
        InputError: fewer than :data:`MIN_QUERIES` queries, or no first-stage or rerank candidate.
    """
    m = np.asarray(matrix, dtype=np.float64)
    n = m.shape[1]
    if n < MIN_QUERIES:
        raise InputError(f"tune needs at least {MIN_QUERIES} judged queries with candidates (got {n}); judge more")
    first = [i for i, c in enumerate(candidates) if not c.rerank]
    reranks = [i for i, c in enumerate(candidates) if c.rerank]
    if len(first) != 1 or not reranks:
        raise InputError("tune needs the first stage alone and at least one rerank setting among the candidates")
    fs = m[first[0]]
    rng = np.random.default_rng(seed)
    # cross-validated value of "pick the best rerank setting": each query scored by a pick made without it
    oof = np.zeros(n)
    folds = max(2, min(folds, n))
    for _ in range(repeats):
        perm = rng.permutation(n)
        for test in np.array_split(perm, folds):
            train = np.setdiff1d(perm, test)
            pick = _pick_rerank(m[:, train].mean(axis=1), candidates, float(fs[train].mean()))
            oof[test] += m[pick, test]
    oof /= repeats
    gain = oof - fs
    boot = gain[rng.integers(0, n, size=(4000, n))].mean(axis=1)
    p_not_positive = float((boot <= 0).mean())
    glo, ghi = float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))
    means = m.mean(axis=1)
    deepest = max(candidates[i].depth for i in reranks)
    at_deepest = [i for i in reranks if candidates[i].depth == deepest]
    full = max(at_deepest, key=lambda i: candidates[i].rerank_weight)  # the cross-encoder's order alone
    if p_not_positive < alpha:
        pick = _pick_rerank(means, candidates, float(fs.mean()))
        c = candidates[pick]
        settings = SearchSettings(rerank=True, depth=c.depth, rerank_weight=c.rerank_weight, blend=blend, model=model)
        reason = (
            f"reranking gains {gain.mean():+.4f} nDCG@10 over the first stage, cross-validated over {n} judged "
            f"queries (95% interval {glo:+.4f} to {ghi:+.4f}); {c.label} is the shallowest within reach of the best"
        )
        estimate = oof
    else:
        pick = first[0]
        settings = SearchSettings(rerank=False, depth=deepest, blend=blend, model=model)
        reason = (
            f"reranking is not supported by these {n} judged queries: its cross-validated gain over the first "
            f"stage is {gain.mean():+.4f} nDCG@10 (95% interval {glo:+.4f} to {ghi:+.4f}, p = {p_not_positive:.2f} "
            f"that it is not positive); keep the first stage alone"
        )
        estimate = fs

    def summary(x: np.ndarray) -> tuple[float, float, float]:
        lo, hi = _bootstrap_ci(x, rng)
        return float(x.mean()), lo, hi

    report = TuneReport(
        settings=settings,
        chosen=candidates[pick].label,
        queries=n,
        means={c.label: summary(m[i]) for i, c in enumerate(candidates)},
        first_stage=summary(fs),
        rerank_all=summary(m[full]),
        cv_gain=(float(gain.mean()), glo, ghi, p_not_positive),
        estimate=summary(estimate),
        reason=reason,
    )
    evidence = {"method": f"{folds}-fold cross-validation x {repeats}, paired bootstrap", **report.to_dict()}
    object.__setattr__(report, "settings", SearchSettings(**{**_fields(settings), "evidence": evidence}))
    return report


def _fields(s: SearchSettings) -> dict[str, Any]:
    return {"rerank": s.rerank, "depth": s.depth, "rerank_weight": s.rerank_weight, "blend": s.blend, "model": s.model}


def tune(
    queries: Sequence[JudgedQuery],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    blend: Blend = "probability",
    activation: str = "sigmoid",
    depths: Sequence[int] = DEPTHS,
    weights: Sequence[float] = WEIGHTS,
    seed: int = 0,
    model: str = "",
) -> TuneReport:
    """Choose whether to rerank, the depth and the blend weight from judged queries; see the module.

    Only queries with at least one relevant judgment (grade > 0) count: on the others every
    setting scores 0 and they only dilute the evidence.

    Raises:
        InputError: fewer than :data:`MIN_QUERIES` usable judged queries.
    """
    usable = [q for q in queries if any(int(g) > 0 for g in qrels.get(q.query_id, {}).values()) and q.doc_ids]
    if len(usable) < MIN_QUERIES:
        raise InputError(
            f"tune needs at least {MIN_QUERIES} judged queries with a relevant document among the judgments "
            f"(got {len(usable)} of {len(queries)}); judge more queries"
        )
    max_depth = max(len(q.doc_ids) for q in usable)
    candidates = candidate_settings(max_depth, depths, weights)
    m = ndcg_matrix(usable, qrels, candidates, blend=blend, activation=activation)
    return tune_matrix(m, candidates, seed=seed, blend=blend, model=model)


def judged_from_run(
    reranker: Any,
    run: str | Path,
    queries: str | Path,
    corpus: str | Path,
    *,
    depth: int = 100,
    only: Sequence[str] | None = None,
) -> list[JudgedQuery]:
    """Rerank a first-stage TREC run's top ``depth`` and return what :func:`tune` reads.

    ``only``: the query ids to keep (the judged ones); the others are not scored.
    """
    from crossrank.io import read_run_candidates, read_trec_run

    cands = read_run_candidates(run, queries, corpus, depth=depth)
    scores = {q: dict(docs) for q, docs in read_trec_run(run).items()}
    keep = [i for i, q in enumerate(cands.query_ids) if only is None or q in set(only)]
    rankings = reranker.rerank_many([cands.queries[i] for i in keep], [cands.documents[i] for i in keep], k=None)
    out = []
    for i, ranking in zip(keep, rankings, strict=True):
        qid, docs = cands.query_ids[i], cands.documents[i]
        ce = np.zeros(len(docs), dtype=np.float64)
        for h in ranking.hits:
            ce[h.index] = h.score
        ids = [str(d["id"]) for d in docs]
        first = np.array([float(scores[qid][d]) for d in ids])
        out.append(JudgedQuery(qid, ids, first, ce))
    return out


def judged_from_index(
    reranker: Any, index: Any, queries: Mapping[str, str], *, depth: int = 100, retriever: str | None = None
) -> list[JudgedQuery]:
    """Retrieve each query's top ``depth`` from ``index`` (an :class:`~crossrank.retrieve.index.Index`,
    its folder, or any first stage a :class:`~crossrank.pipeline.Pipeline` takes), rerank them all,
    and return what :func:`tune` reads."""
    from crossrank.pipeline import Pipeline

    pipe = Pipeline(index, reranker=reranker)
    results = pipe.search_many(dict(queries), k=depth, depth=depth, retriever=retriever)  # type: ignore[arg-type]
    out = []
    for r in results:
        hits = sorted(r.hits, key=lambda h: h.first_stage_rank)
        out.append(
            JudgedQuery(
                str(r.query_id),
                [h.doc_id for h in hits],
                np.array([h.first_stage_score for h in hits], dtype=np.float64),
                np.array([h.rerank_score or 0.0 for h in hits], dtype=np.float64),
            )
        )
    return out
