"""Is the cross-encoder helping on this data, where does it hurt, and what does each depth cost?

:func:`diagnose` reranks a first stage's candidates with a cross-encoder and measures, from one
scoring pass per depth, everything a team needs to debug a reranker:

- per-query wins, ties and losses against the first stage, with a paired t-test, a randomization
  test and a 95% confidence interval on the mean difference;
- the recall ceiling: the share of relevant documents the first stage put inside each depth;
- a depth sweep: quality and measured rerank latency at depths 10, 20, 50, 100, 200... as far as
  the candidates go, and the knee (the smallest depth within a tolerance of the best quality);
- failure cases: the queries reranking hurt most, with the relevant documents it demoted and the
  non-relevant ones it promoted, and their texts;
- truncated pairs and duplicate documents;
- score distributions of relevant and non-relevant documents, and a reliability curve.

:mod:`crossrank.evaluate.report` renders the result as JSON, Markdown and one HTML file.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrank._text import plural
from crossrank.documents import record_text
from crossrank.errors import ConfigError, InputError
from crossrank.evaluate.metrics import RunCheck, evaluate
from crossrank.evaluate.significance import paired_comparison

if TYPE_CHECKING:
    from crossrank.rerank.cross_encoder import CrossEncoder

__all__ = ["Diagnostics", "DiagnosticsConfig", "diagnose"]

log = logging.getLogger(__name__)

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class DiagnosticsConfig:
    """What :func:`diagnose` measures.

    Attributes:
        depth: candidates reranked for the main comparison (capped at what the first stage returned).
        depths: depths of the sweep; those beyond the candidates are dropped and the deepest
            available depth is always added.
        measures: ir-measures names; the first is the one failures, the knee and plots use.
        rel: grade from which a document counts as relevant for binary measures, recall, failure
            cases and calibration (TREC DL: 2).
        tolerance: the knee is the smallest depth whose main measure is within this much
            (absolute) of the best depth's.
        failures: how many of the worst-hurt queries to show.
        examples: relevant documents demoted and non-relevant ones promoted shown per failure.
        alpha: significance level for the marks.
        bins: bins of the score histograms and of the reliability curve.
    """

    depth: int = 100
    depths: tuple[int, ...] = (10, 20, 50, 100, 200, 500, 1000)
    measures: str = "nDCG@10 RR@10 R@100 AP"
    rel: int = 1
    tolerance: float = 0.005
    failures: int = 5
    examples: int = 3
    alpha: float = 0.05
    bins: int = 10

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"depth must be >= 1 (got {self.depth})")
        if not self.depths or min(self.depths) < 1:
            raise ConfigError(f"depths must be positive (got {self.depths})")
        if self.tolerance < 0:
            raise ConfigError(f"tolerance must be >= 0 (got {self.tolerance})")
        if self.rel < 1:
            raise ConfigError(f"rel must be >= 1 (got {self.rel}); grades below it count as non-relevant")


@dataclass(frozen=True, slots=True)
class DocMove:
    """A document whose rank reranking changed.

    Attributes:
        doc_id: the document.
        grade: its judgment, ``None`` when unjudged.
        first_rank: rank in the first stage (1-based).
        reranked_rank: rank after reranking (1-based).
        score: the cross-encoder's score.
        truncated: whether the pair was cut to the model's ``max_length``.
        text: the document's text.
    """

    doc_id: str
    grade: int | None
    first_rank: int
    reranked_rank: int
    score: float
    truncated: bool
    text: str


@dataclass(frozen=True, slots=True)
class FailureCase:
    """A query reranking made worse.

    Attributes:
        query_id: the query.
        query: its text.
        first_stage: the main measure on the first stage.
        reranked: the main measure after reranking.
        relevant_in_candidates: relevant documents among the reranked candidates.
        demoted: relevant documents that fell, worst first.
        promoted: non-relevant or unjudged documents that rose into the top 10.
    """

    query_id: str
    query: str
    first_stage: float
    reranked: float
    relevant_in_candidates: int
    demoted: list[DocMove]
    promoted: list[DocMove]


@dataclass(slots=True)
class Diagnostics:
    """Everything :func:`diagnose` measured; see the module docstring. ``to_dict`` is JSON-ready."""

    title: str
    model: str
    activation: str
    first_stage: str
    config: DiagnosticsConfig
    queries: int
    depth: int
    measures: list[str]
    aggregate: dict[str, dict[str, float]]
    comparison: dict[str, dict[str, Any]]
    per_query: dict[str, dict[str, float]]
    depth_sweep: list[dict[str, Any]]
    knee: int
    recall: list[dict[str, Any]]
    failures: list[FailureCase]
    truncation: dict[str, Any]
    duplicates: dict[str, Any]
    scores: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    command: str = ""

    @property
    def main(self) -> str:
        """Return the measure failures, the knee and the plots use."""
        return self.measures[0]

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready values."""
        return asdict(self)


def diagnose(
    reranker: CrossEncoder,
    qrels: Mapping[str, Mapping[str, int]],
    queries: Mapping[str, str],
    corpus: Mapping[str, Mapping[str, Any]],
    run: Mapping[str, Sequence[tuple[str, float]]],
    *,
    config: DiagnosticsConfig | None = None,
    title: str = "",
    first_stage: str = "first stage",
    run_check: RunCheck | None = None,
    progress: Callable[[int], None] | None = None,
) -> Diagnostics:
    """Return the diagnostics of reranking ``run`` with ``reranker``, against ``qrels``.

    Each judged query of the run is reranked once per depth of the sweep, one query per call as a
    service would, and timed; quality at a depth reranks the top ``depth`` candidates and keeps the
    first stage's order below them.

    Args:
        reranker: the cross-encoder (a score cache would make latencies meaningless: pass one without).
        qrels: ``{query_id: {doc_id: grade}}``.
        queries: ``{query_id: text}``.
        corpus: ``{doc_id: {"title"?, "text"}}``.
        run: the first stage, ``{query_id: [(doc_id, score), ...]}`` best first.
        config: what to measure.
        title: the report's title.
        first_stage: the first stage's name.
        run_check: what reading the run found (duplicates), reported as is.
        progress: called with the number of pairs scored after each call.

    Raises:
        InputError: no judged query of the run has a text, or no candidate has a text.
    """
    cfg = config or DiagnosticsConfig()
    notes: list[str] = []
    if reranker.cache is not None:
        notes.append("the reranker has a score cache: latencies include cache hits")
    judged = [q for q in sorted(run) if q in qrels]
    no_text = [q for q in judged if not queries.get(q)]
    if no_text:
        notes.append(
            f"{plural(len(no_text), 'judged query')} of the run {'has' if len(no_text) == 1 else 'have'} no text "
            f"and {'is' if len(no_text) == 1 else 'are'} left out ({', '.join(no_text[:3])})"
        )
    qids = [q for q in judged if queries.get(q)]
    unjudged = [q for q in run if q not in qrels]
    if unjudged:
        one = len(unjudged) == 1
        notes.append(
            f"{plural(len(unjudged), 'query')} of the run {'has' if one else 'have'} no judgments and "
            f"{'is' if one else 'are'} left out"
        )
    missing_run = [q for q in qrels if q not in run and any(g >= cfg.rel for g in qrels[q].values())]
    if missing_run:
        one = len(missing_run) == 1
        notes.append(
            f"{plural(len(missing_run), 'judged query')} {'has' if one else 'have'} no candidates in the run and "
            f"{'is' if one else 'are'} left out"
        )
    if not qids:
        raise InputError(
            "no query of the run has both judgments and a text; do the query ids of the run, "
            "the queries and the qrels match?"
        )

    # candidates with texts; those without cannot be scored and are counted
    cands: dict[str, list[str]] = {}
    missing_docs = 0
    for q in qids:
        ids = [d for d, _ in run[q]]
        have = [d for d in ids if d in corpus]
        missing_docs += sum(1 for d in ids[: cfg.depth] if d not in corpus)
        cands[q] = have
    if missing_docs:
        one = missing_docs == 1
        notes.append(
            f"{plural(missing_docs, 'candidate')} {'has' if one else 'have'} no text in the corpus and "
            f"{'was' if one else 'were'} dropped before reranking"
        )
    longest = max(len(c) for c in cands.values())
    if longest == 0:
        raise InputError("no candidate of the run has a text in the corpus; do the document ids match?")
    depth = min(cfg.depth, longest)
    if depth < cfg.depth:
        notes.append(f"the candidate lists end at {longest}: depth {cfg.depth} was lowered to {depth}")
    sweep_depths = sorted({d for d in cfg.depths if d < longest} | {longest} | {depth})

    # rerank every query at every depth, timed per call
    rankings: dict[int, dict[str, list[str]]] = {}
    latencies: dict[int, list[float]] = {}
    scores: dict[str, dict[str, float]] = {}
    truncated: dict[str, dict[str, bool]] = {}
    warm = qids[0]
    reranker.rerank(queries[warm], [_record(corpus, d) for d in cands[warm][:10]])  # warm-up, untimed
    for d in sweep_depths:
        rankings[d], latencies[d] = {}, []
        for q in qids:
            docs = [_record(corpus, doc) for doc in cands[q][:d]]
            if not docs:
                continue
            t0 = time.perf_counter()
            ranking = reranker.rerank(queries[q], docs)
            latencies[d].append((time.perf_counter() - t0) * 1000.0)
            rankings[d][q] = [h.doc_id for h in ranking.hits]
            if d == sweep_depths[-1]:
                scores[q] = {h.doc_id: h.score for h in ranking.hits}
                truncated[q] = {h.doc_id: h.truncated for h in ranking.hits}
            if progress is not None:
                progress(len(docs))

    first_run = {q: _rank_scores([d for d, _ in run[q]]) for q in qids}
    runs: dict[str, dict[str, dict[str, float]]] = {first_stage: first_run}
    for d in sweep_depths:
        runs[f"rerank@{d}"] = {q: _rank_scores(_rerank_then_rest(rankings[d].get(q, []), run[q])) for q in qids}
    qrels_used = {q: dict(qrels[q]) for q in qids}
    result = evaluate(qrels_used, runs, cfg.measures, rel=cfg.rel)
    main = result.measures[0]
    main_run = f"rerank@{depth}"

    comparison = {}
    for m in result.measures:
        base = result.per_query[first_stage][m]
        new = result.per_query[main_run][m]
        common = sorted(set(base) & set(new))
        if len(common) >= 2:
            cmp = paired_comparison([base[q] for q in common], [new[q] for q in common])
            comparison[m] = {**cmp.to_dict(), "significant": cmp.significant(cfg.alpha)}
    per_query = {
        q: {
            "first_stage": result.per_query[first_stage][main][q],
            "reranked": result.per_query[main_run][main][q],
            "delta": result.per_query[main_run][main][q] - result.per_query[first_stage][main][q],
        }
        for q in result.per_query[first_stage][main]
        if q in result.per_query[main_run][main]
    }

    sweep: list[dict[str, Any]] = []
    for d in sweep_depths:
        lat = np.asarray(latencies[d])
        pairs = sum(min(d, len(cands[q])) for q in qids)
        sweep.append(
            {
                "depth": d,
                "measures": result.aggregate[f"rerank@{d}"],
                "latency_ms_p50": float(np.percentile(lat, 50)),
                "latency_ms_p95": float(np.percentile(lat, 95)),
                "latency_ms_mean": float(lat.mean()),
                "pairs_per_s": float(pairs / (lat.sum() / 1000.0)) if lat.sum() > 0 else 0.0,
            }
        )
    best = max(p["measures"][main] for p in sweep)
    knee = min(p["depth"] for p in sweep if p["measures"][main] >= best - cfg.tolerance)

    recall = _recall_ceiling(qrels_used, run, qids, sweep_depths, cfg.rel)
    failures = _failures(per_query, qids, queries, corpus, qrels_used, run, rankings[depth], scores, truncated, cfg)
    trunc = _truncation(truncated, qrels_used, cfg.rel, reranker)
    dups = _duplicates(cands, corpus, depth, run_check)
    score_stats = _score_stats(scores, qrels_used, cfg)
    if not score_stats.get("reliability"):
        notes.append("scores are not probabilities in [0, 1]: no reliability curve")
    return Diagnostics(
        title=title or f"{reranker.name} over {first_stage}",
        model=reranker.name,
        activation=str(reranker.activation),
        first_stage=first_stage,
        config=cfg,
        queries=len(qids),
        depth=depth,
        measures=result.measures,
        aggregate={first_stage: result.aggregate[first_stage], main_run: result.aggregate[main_run]},
        comparison=comparison,
        per_query=per_query,
        depth_sweep=sweep,
        knee=knee,
        recall=recall,
        failures=failures,
        truncation=trunc,
        duplicates=dups,
        scores=score_stats,
        notes=notes,
    )


# ---------------------------------------------------------------- pieces


def _record(corpus: Mapping[str, Mapping[str, Any]], doc_id: str) -> dict[str, Any]:
    rec = corpus[doc_id]
    return {"id": doc_id, "title": rec.get("title") or "", "text": rec.get("text") or ""}


def _doc_text(corpus: Mapping[str, Mapping[str, Any]], doc_id: str) -> str:
    rec = corpus.get(doc_id)
    if rec is None:
        return ""
    return record_text(rec)


def _rerank_then_rest(reranked: Sequence[str], first: Sequence[tuple[str, float]]) -> list[str]:
    """Return the reranked ids, then the first stage's other candidates in their order."""
    seen = set(reranked)
    return [*reranked, *(d for d, _ in first if d not in seen)]


def _rank_scores(ids: Sequence[str]) -> dict[str, float]:
    """Return scores that reproduce the order of ``ids`` for trec_eval (which sorts by score)."""
    n = len(ids)
    out: dict[str, float] = {}
    for i, d in enumerate(ids):
        out.setdefault(d, float(n - i))
    return out


def _recall_ceiling(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Sequence[tuple[str, float]]],
    qids: Sequence[str],
    depths: Sequence[int],
    rel: int,
) -> list[dict[str, Any]]:
    out = []
    relevant = {q: {d for d, g in qrels[q].items() if g >= rel} for q in qids}
    with_rel = [q for q in qids if relevant[q]]
    for d in depths:
        found = [len(relevant[q] & {x for x, _ in run[q][:d]}) / len(relevant[q]) for q in with_rel]
        none = sum(1 for q in with_rel if not relevant[q] & {x for x, _ in run[q][:d]})
        out.append(
            {
                "depth": d,
                "recall": float(np.mean(found)) if found else 0.0,
                "queries_without_relevant": none,
                "queries": len(with_rel),
            }
        )
    return out


def _failures(
    per_query: Mapping[str, Mapping[str, float]],
    qids: Sequence[str],
    queries: Mapping[str, str],
    corpus: Mapping[str, Mapping[str, Any]],
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Sequence[tuple[str, float]]],
    reranked: Mapping[str, Sequence[str]],
    scores: Mapping[str, Mapping[str, float]],
    truncated: Mapping[str, Mapping[str, bool]],
    cfg: DiagnosticsConfig,
) -> list[FailureCase]:
    worst = sorted((v["delta"], q) for q, v in per_query.items() if v["delta"] < 0)[: cfg.failures]
    out = []
    for _, q in worst:
        first_rank = {d: i + 1 for i, (d, _) in enumerate(run[q])}
        new_rank = {d: i + 1 for i, d in enumerate(reranked.get(q, []))}
        grades = qrels[q]

        def move(
            d: str,
            q: str = q,
            grades: Mapping[str, int] = grades,
            first_rank: dict[str, int] = first_rank,
            new_rank: dict[str, int] = new_rank,
        ) -> DocMove:
            return DocMove(
                doc_id=d,
                grade=grades.get(d),
                first_rank=first_rank[d],
                reranked_rank=new_rank[d],
                score=float(scores.get(q, {}).get(d, float("nan"))),
                truncated=bool(truncated.get(q, {}).get(d, False)),
                text=_doc_text(corpus, d),
            )

        demoted = sorted(
            (d for d in new_rank if grades.get(d, 0) >= cfg.rel and new_rank[d] > first_rank[d]),
            key=lambda d: (-grades[d], first_rank[d] - new_rank[d]),
        )
        promoted = sorted(
            (d for d in new_rank if grades.get(d, 0) < cfg.rel and new_rank[d] <= 10 and new_rank[d] < first_rank[d]),
            key=lambda d: new_rank[d],
        )
        out.append(
            FailureCase(
                query_id=q,
                query=queries[q],
                first_stage=per_query[q]["first_stage"],
                reranked=per_query[q]["reranked"],
                relevant_in_candidates=sum(1 for d in new_rank if grades.get(d, 0) >= cfg.rel),
                demoted=[move(d) for d in demoted[: cfg.examples]],
                promoted=[move(d) for d in promoted[: cfg.examples]],
            )
        )
    return out


def _truncation(
    truncated: Mapping[str, Mapping[str, bool]],
    qrels: Mapping[str, Mapping[str, int]],
    rel: int,
    reranker: CrossEncoder,
) -> dict[str, Any]:
    flags = [(q, d, t) for q, docs in truncated.items() for d, t in docs.items()]
    n = len(flags)
    cut = sum(1 for _, _, t in flags if t)
    rel_pairs = [(q, d, t) for q, d, t in flags if qrels[q].get(d, 0) >= rel]
    return {
        "max_length": reranker.config.max_length,
        "pairs": n,
        "truncated": cut,
        "share": cut / n if n else 0.0,
        "queries_affected": len({q for q, _, t in flags if t}),
        "relevant_pairs": len(rel_pairs),
        "relevant_truncated": sum(1 for _, _, t in rel_pairs if t),
    }


def _duplicates(
    cands: Mapping[str, Sequence[str]],
    corpus: Mapping[str, Mapping[str, Any]],
    depth: int,
    run_check: RunCheck | None,
) -> dict[str, Any]:
    groups = 0
    extra = 0
    examples: list[dict[str, Any]] = []
    for q, ids in cands.items():
        by_text: dict[str, list[str]] = defaultdict(list)
        for d in ids[:depth]:
            by_text[_SPACE.sub(" ", _doc_text(corpus, d)).strip().lower()].append(d)
        for text, same in by_text.items():
            if len(same) > 1:
                groups += 1
                extra += len(same) - 1
                if len(examples) < 5:
                    examples.append({"query_id": q, "doc_ids": same, "text": text[:200]})
    return {
        "run_entries_repeated": run_check.duplicates if run_check else 0,
        "identical_text_groups": groups,
        "identical_text_extra_copies": extra,
        "examples": examples,
    }


def _score_stats(
    scores: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], cfg: DiagnosticsConfig
) -> dict[str, Any]:
    from crossrank.evaluate.calibrate import expected_calibration_error, reliability_curve

    groups: dict[str, list[float]] = {"relevant": [], "non-relevant": [], "unjudged": []}
    for q, docs in scores.items():
        for d, s in docs.items():
            g = qrels[q].get(d)
            key = "unjudged" if g is None else ("relevant" if g >= cfg.rel else "non-relevant")
            groups[key].append(s)
    allv = np.asarray([s for v in groups.values() for s in v], dtype=np.float64)
    lo, hi = float(allv.min()), float(allv.max())
    probs = lo >= 0.0 and hi <= 1.0
    edges = np.linspace(0.0, 1.0, 21) if probs else np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
    out: dict[str, Any] = {
        "edges": edges.tolist(),
        "histograms": {k: np.histogram(np.asarray(v), bins=edges)[0].tolist() for k, v in groups.items()},
        "counts": {k: len(v) for k, v in groups.items()},
        "means": {k: float(np.mean(v)) if v else None for k, v in groups.items()},
        "reliability": [],
        "ece": None,
    }
    if probs:
        judged_p = np.asarray(groups["relevant"] + groups["non-relevant"], dtype=np.float64)
        labels = np.asarray([1] * len(groups["relevant"]) + [0] * len(groups["non-relevant"]))
        if judged_p.size and 0 < labels.sum() < labels.size:
            out["reliability"] = reliability_curve(judged_p, labels, bins=cfg.bins)
            out["ece"] = expected_calibration_error(judged_p, labels, bins=cfg.bins)
    return out
