"""Watching a reranker without labels: signals over a query set, reference profiles, and the verdict.

``crossrank monitor profile`` and ``crossrank monitor verdict`` are thin over this module:
:func:`run_signals` and :func:`index_signals` rerank a query set and return each query's
:class:`~crossrank.signals.QuerySignals`; :func:`build_profile` keeps them as a
:class:`~crossrank.drift.Profile`; :func:`verdict` turns them into *helping*, *unclear* or *likely
hurting* by a fixed rule.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from crossrank._progress import counting
from crossrank.drift import MIN_QUERIES, DriftReport, Profile, drift
from crossrank.errors import ConfigError, InputError
from crossrank.io import read_beir_queries, read_run_candidates
from crossrank.pipeline import Pipeline
from crossrank.rerank.cross_encoder import CrossEncoder
from crossrank.retrieve.index import Index
from crossrank.signals import QuerySignals

__all__ = [
    "AGREEMENT_HEAVY",
    "CONFIDENT_TOP",
    "SPREAD_HIGH",
    "SPREAD_LOW",
    "Verdict",
    "build_profile",
    "builtin_reference",
    "collect_signals",
    "index_signals",
    "run_signals",
    "verdict",
]

# queries reranked per model call batch: enough to fill the engine, small enough for a steady bar
_CHUNK = 8


def run_signals(
    reranker: CrossEncoder,
    *,
    run: str | os.PathLike[str],
    queries: str | os.PathLike[str],
    corpus: str | os.PathLike[str],
    depth: int = 100,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, QuerySignals]:
    """Return each query's signals, reranking the top ``depth`` of a TREC run (run order = first stage).

    Args:
        reranker: the cross-encoder.
        run: the first stage's TREC run.
        queries: the BEIR queries file.
        corpus: the BEIR corpus file.
        depth: candidates reranked per query.
        limit: only the run's first ``limit`` queries.
        progress: show a progress bar (queries) on stderr.

    Raises:
        InputError: a file cannot be read or the run names ids the files lack.
    """
    cands = read_run_candidates(os.fspath(run), os.fspath(queries), os.fspath(corpus), depth=depth, skip_missing=True)
    n = len(cands.query_ids) if limit is None else min(limit, len(cands.query_ids))
    out: dict[str, QuerySignals] = {}
    with counting(progress, "reranking", n, unit="queries") as advance:
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            rankings = reranker.rerank_many(
                list(cands.queries[start:stop]),
                [list(r) for r in cands.documents[start:stop]],
                k=1,
                query_ids=list(cands.query_ids[start:stop]),
            )
            for qid, ranking in zip(cands.query_ids[start:stop], rankings, strict=True):
                assert ranking.signals is not None  # every reranking carries them
                out[qid] = ranking.signals
            if advance is not None:
                advance(stop - start)
    return out


def index_signals(
    reranker: CrossEncoder,
    *,
    index: Index | str | os.PathLike[str],
    queries: str | os.PathLike[str],
    depth: int = 100,
    retriever: str | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, QuerySignals]:
    """Return each query's signals, searching an index and reranking its top ``depth``.

    Raises:
        InputError: the queries cannot be read.
        ConfigError: the index cannot be opened or has no such retriever.
    """
    texts = read_beir_queries(os.fspath(queries))
    qids = list(texts)[:limit] if limit is not None else list(texts)
    pipe = Pipeline(index if isinstance(index, Index) else Index.open(index), reranker=reranker)
    out: dict[str, QuerySignals] = {}
    with counting(progress, "reranking", len(qids), unit="queries") as advance:
        for start in range(0, len(qids), _CHUNK):
            batch = qids[start : start + _CHUNK]
            results = pipe.search_many(
                {q: texts[q] for q in batch},
                k=1,
                depth=depth,
                retriever=retriever,  # type: ignore[arg-type]
            )
            for qid, result in zip(batch, results, strict=True):
                if result.signals is not None:  # a query the first stage found nothing for has none
                    out[qid] = result.signals
            if advance is not None:
                advance(len(batch))
    return out


def collect_signals(
    reranker: CrossEncoder,
    *,
    queries: str | os.PathLike[str],
    index: str | os.PathLike[str] | None = None,
    run: str | os.PathLike[str] | None = None,
    corpus: str | os.PathLike[str] | None = None,
    depth: int = 100,
    limit: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, QuerySignals], str]:
    """Return each query's signals from an index or from a run over a corpus, and where they came from.

    Raises:
        InputError: neither or both of ``index`` and ``run``, a run without ``corpus``, or
            ``depth`` < 1.
    """
    if depth < 1:
        raise InputError(f"depth must be >= 1 (got {depth})")
    if (index is None) == (run is None):
        raise InputError("give an index (--index DIR) or a run (--run RUN --corpus CORPUS), one of the two")
    if run is not None:
        if corpus is None:
            raise InputError("a run needs the corpus its ids come from (--corpus CORPUS.jsonl)")
        found = run_signals(
            reranker, run=run, queries=queries, corpus=corpus, depth=depth, limit=limit, progress=progress
        )
        source = f"run {os.fspath(run)} over {os.fspath(corpus)}, queries {os.fspath(queries)}"
    else:
        assert index is not None
        found = index_signals(reranker, index=index, queries=queries, depth=depth, limit=limit, progress=progress)
        source = f"index {os.fspath(index)}, queries {os.fspath(queries)}"
    if not found:
        raise InputError(f"no query of {os.fspath(queries)} had candidates to rerank; check the ids and files")
    return found, f"{source}, depth {depth}"


def build_profile(reranker: CrossEncoder, signals: Mapping[str, QuerySignals], *, source: str, depth: int) -> Profile:
    """Return the reference profile of these queries' signals.

    Raises:
        InputError: no query had candidates.
    """
    return Profile.from_signals(
        list(signals.values()), model=reranker.name, source=source, depth=depth, activation=reranker.activation
    )


# ---------------------------------------------------------------------- the verdict

Label = Literal["helping", "unclear", "likely hurting"]

#: The model is confident when the typical query's best candidate has a probability of relevance
#: of at least this: the model believes it found a relevant document (more likely than not).
CONFIDENT_TOP = 0.5
#: The model discriminates when the typical query's scores spread this much (standard deviation of
#: probabilities over the candidates). Scores in [0, 1] that separate a few relevant candidates
#: from many irrelevant ones spread by 0.15 and more; 0.1 is well under that and well over the
#: spread of a model that scores everything alike.
SPREAD_HIGH = 0.1
#: Scores whose typical spread is under this are compressed: the model sees little difference
#: between the candidates, so its order is close to noise.
SPREAD_LOW = 0.05
#: Heavy reordering: the typical query's reranked top 10 overlaps the first stage's by a
#: rank-biased overlap under this (0.1 is about one shared document among the top ten, low down).
AGREEMENT_HEAVY = 0.1


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether reranking looks like it helps, judged without labels.

    Attributes:
        label: ``"helping"``, ``"unclear"`` or ``"likely hurting"``.
        reason: the rule that decided, in words.
        num_queries: queries judged.
        top_score: the median best score over the queries.
        score_std: the median spread of the scores.
        margin: the median margin between the first two.
        rbo: the median rank-biased overlap with the first stage's top 10.
        kendall_tau: the median Kendall tau of the reranked top 10.
        score: a number that grows with the evidence for "helping" (for ranking collections or
            queries): ``top_score + score_std + 0.5 * rbo``.
        reference: the trusted profile's source the queries were compared with (``None``: none).
        drift: that comparison (``None`` when there was none).
    """

    label: Label
    reason: str
    num_queries: int
    top_score: float
    score_std: float
    margin: float
    rbo: float
    kendall_tau: float
    score: float
    reference: str | None = None
    drift: DriftReport | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as JSON-ready values."""
        return {
            "verdict": self.label,
            "reason": self.reason,
            "num_queries": self.num_queries,
            "reference": self.reference,
            "drift": None
            if self.drift is None
            else {
                "drifted": self.drift.drifted,
                "drifted_signals": self.drift.drifted_signals,
            },
            "medians": {
                "top_score": round(self.top_score, 4),
                "score_std": round(self.score_std, 4),
                "margin": round(self.margin, 4),
                "rbo": round(self.rbo, 4),
                "kendall_tau": round(self.kendall_tau, 4),
            },
            "score": round(self.score, 4),
        }


def verdict(
    signals: Sequence[QuerySignals] | Profile,
    *,
    activation: str = "sigmoid",
    reference: Profile | None = None,
) -> Verdict:
    """Return *helping*, *unclear* or *likely hurting* for a collection's (or a window's) signals.

    The rule is fixed and reads the medians over the queries of the model's scores as
    probabilities of relevance, then compares the queries with a trusted reference profile:

    * **likely hurting**: its scores are compressed (median spread < :data:`SPREAD_LOW`) or it is
      not confident (median top score < :data:`CONFIDENT_TOP`), while it reorders heavily (median
      RBO < :data:`AGREEMENT_HEAVY`);
    * **helping**: the model is confident (median top score >= :data:`CONFIDENT_TOP`), it
      discriminates (median score spread >= :data:`SPREAD_HIGH`), it does not throw the first
      stage's order away (median RBO >= :data:`AGREEMENT_HEAVY`), **and** its scores and
      reorderings have not drifted (:func:`crossrank.drift.drift`) from a ``reference`` profile:
      queries on which the reranker was shown, with labels, to help. Confidence alone is not
      evidence: on CISI the default model is as confident and discriminative as on TREC DL, and
      reranking there loses 0.04 nDCG@10 (docs/monitoring.md). Without a reference, or with fewer
      than :data:`~crossrank.drift.MIN_QUERIES` queries to compare, the best it says is *unclear*;
    * **unclear**: anything else.

    Args:
        signals: the queries' signals, or a profile of them.
        activation: what the scores are; the rule needs probabilities (``"sigmoid"``,
            ``"softmax"`` or ``"calibrated"``).
        reference: a profile of queries where reranking was shown to help
            (:func:`builtin_reference` has one for the default model).

    Raises:
        InputError: no queries.
        ConfigError: the scores are raw logits.

    Example:
        >>> verdict(signals, reference=builtin_reference("default")).label  # doctest: +SKIP
        'helping'
    """
    if isinstance(signals, Profile):
        activation = signals.activation or activation
        med = {name: float(np.median(signals.array(name))) if signals.array(name).size else 0.0 for name in _MEDIANS}
        n = signals.num_queries
    else:
        n = len(signals)
        med = {name: float(np.median([getattr(s, name) for s in signals])) if n else 0.0 for name in _MEDIANS}
    if n == 0:
        raise InputError("a verdict needs at least one query's signals (got none)")
    if activation not in ("sigmoid", "softmax", "calibrated"):
        raise ConfigError(
            f"the verdict reads scores as probabilities, but these are {activation!r}; "
            "profile with the model's sigmoid (the default) or a calibration"
        )
    top, spread, rbo = med["top_score"], med["score_std"], med["rbo"]
    confident, discriminative, heavy = top >= CONFIDENT_TOP, spread >= SPREAD_HIGH, rbo < AGREEMENT_HEAVY
    report = drift(reference, signals) if reference is not None else None
    label: Label
    if confident and discriminative and not heavy:
        looks = "confident, discriminative scores and a moderate reordering of the first stage"
        if report is None:
            label, reason = (
                "unclear",
                (
                    f"{looks}, but no reference profile to show these queries are like those where reranking was "
                    "shown to help: profile judged queries with `crossrank monitor profile` and pass --reference"
                ),
            )
        elif n < MIN_QUERIES:
            label, reason = (
                "unclear",
                f"{looks}, but {n} queries are too few to compare with the reference (< {MIN_QUERIES})",
            )
        elif report.drifted:
            label, reason = (
                "unclear",
                (
                    f"{looks}, but {', '.join(report.drifted_signals)} drifted from the reference profile: the "
                    "reranker was shown to help on other queries; judge about 30 of these and run `crossrank tune`"
                ),
            )
        else:
            label, reason = "helping", f"{looks}, like the reference profile's where reranking was shown to help"
    elif (spread < SPREAD_LOW or not confident) and heavy:
        label, reason = "likely hurting", "low-confidence or compressed scores, yet a heavy reordering"
    else:
        parts = [
            "confident" if confident else "not confident",
            "discriminative" if discriminative else ("compressed" if spread < SPREAD_LOW else "moderate spread"),
            "heavy reordering" if heavy else "moderate reordering",
        ]
        label, reason = "unclear", ", ".join(parts)
    return Verdict(
        label=label,
        reason=reason,
        num_queries=n,
        top_score=top,
        score_std=spread,
        margin=med["margin"],
        rbo=rbo,
        kendall_tau=med["kendall_tau"],
        score=top + spread + 0.5 * rbo,
        reference=None if reference is None else (reference.source or "a profile"),
        drift=report,
    )


#: built-in models with a reference profile shipped in crossrank (``crossrank/data/profiles/<file>.json``)
_BUILTIN_REFERENCES = {"ms-marco-MiniLM-L-12-v2": "default"}


def builtin_reference(model: str) -> Profile | None:
    """Return the reference profile shipped for the built-in ``model`` (``None`` for other models).

    The default model's: its signals on the 43 TREC DL 2019 queries (BM25 top 100, where
    reranking lifts nDCG@10 from 0.51 to 0.72), written by ``python bench/monitor_verdict.py
    --write-reference``.
    """
    from importlib import resources

    from crossrank.models.registry import lookup

    builtin = lookup(model)
    name = _BUILTIN_REFERENCES.get(builtin.name) if builtin is not None else None
    if name is None:
        return None
    data = resources.files("crossrank").joinpath("data", "profiles", f"{name}.json")
    return Profile.from_dict(json.loads(data.read_text(encoding="utf-8")))


_MEDIANS = ("top_score", "score_std", "margin", "rbo", "kendall_tau")
