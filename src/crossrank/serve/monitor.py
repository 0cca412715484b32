"""The server's monitor: each reranking's label-free signals, in rolling windows and Prometheus metrics.

Every ``/v1/rerank``, ``/v2/rerank``, ``/rerank`` and ``/v1/search`` request that reranks adds one
query's :class:`~crossrank.signals.QuerySignals`. ``GET /v1/monitor`` summarises the last
:data:`WINDOWS` queries and, with a reference profile loaded (``crossrank serve --profile``), how
far the most recent window drifted from it (:func:`crossrank.drift.drift`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from crossrank.drift import DRIFT_SIGNALS, INPUT_SIGNALS, MIN_QUERIES, DriftReport, Profile, drift, signal_values
from crossrank.ranking import rank_order
from crossrank.rerank.config import Activation
from crossrank.serve.batcher import PairsResult
from crossrank.serve.model import ServedModel
from crossrank.signals import CALIBRATED_THRESHOLD, QuerySignals, query_signals

__all__ = ["DRIFT_WINDOW", "WINDOWS", "Monitor", "pairs_signals"]

log = logging.getLogger("crossrank.serve")

#: the rolling windows ``GET /v1/monitor`` summarises, in queries
WINDOWS: tuple[int, ...] = (100, 1000)
#: the window judged for drift: the most recent 100 queries (fewer until 100 have come, judged
#: from :data:`~crossrank.drift.MIN_QUERIES` on)
DRIFT_WINDOW = 100
#: rerankings kept for the plots over time (``series`` in ``GET /v1/monitor``)
SERIES = 300
#: the signals those plots show
SERIES_SIGNALS = ("kendall_tau", "top_score", "margin", "score_std", "truncated_share")
# the signals summarised per window (the others are in the profile and the metrics)
_SUMMARY = (*DRIFT_SIGNALS, *INPUT_SIGNALS, "top_changed", "duplicates", "short_share", "above_threshold")
_UNIT = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_SIGNED = (-1.0, -0.6, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0)
_RANKS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
_WORDS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
#: signal -> (help text, histogram buckets); scores are probabilities in [0, 1]
_HISTOGRAMS: dict[str, tuple[str, Sequence[float]]] = {
    "kendall_tau": ("Kendall tau between first-stage and reranked order of the top 10.", _SIGNED),
    "rbo": ("Rank-biased overlap (p=0.9) of the first-stage and reranked top 10.", _UNIT),
    "displacement": ("Mean absolute rank change of the reranked top 10.", _RANKS),
    "top_score": ("Best score of a reranking (probability).", _UNIT),
    "margin": ("Best score minus the second best.", _UNIT),
    "score_std": ("Standard deviation of a reranking's scores.", (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)),
    "truncated_share": ("Share of a reranking's pairs cut to max_length.", _UNIT),
    "short_share": ("Share of a reranking's candidates that are empty or very short.", _UNIT),
    "query_words": ("Query length in words.", _WORDS),
}


def pairs_signals(
    served: ServedModel, query: str, texts: Sequence[str], result: PairsResult, act: Activation
) -> QuerySignals:
    """Return the signals of one rerank request's scores, on the probability scale.

    Raw-logit requests are read through the sigmoid, so requests that asked for logits and those
    that did not land in the same windows; the order is the one the request was answered in.
    """
    column = served.relevance_column()
    shown, keys = result.scores[act], result.scores[served.order_activation(act)]
    if column is not None:
        shown, keys = shown[:, column], keys[:, column]
    probability = shown if served.is_probability(act) else 0.5 * (1.0 + np.tanh(0.5 * shown.astype(np.float64)))
    threshold = CALIBRATED_THRESHOLD if act == "calibrated" else None
    return query_signals(
        probability, query=query, texts=texts, truncated=result.truncated, order=rank_order(keys), threshold=threshold
    )


class Monitor:
    """Keeps the last queries' signals, exports them as metrics, and watches drift from a profile.

    Args:
        registry: the server's Prometheus registry.
        profile: the reference profile, or ``None`` (no drift).
    """

    def __init__(self, registry: CollectorRegistry, profile: Profile | None = None) -> None:
        self.profile = profile
        self._recent: deque[QuerySignals] = deque(maxlen=max(WINDOWS))
        self._times: deque[float] = deque(maxlen=SERIES)
        self._lock = threading.Lock()
        self._total = 0
        self._drifted = False
        self._report: DriftReport | None = None
        r = registry
        self.queries = Counter("crossrank_monitor_queries", "Rerankings whose signals were recorded.", registry=r)
        self.top_changed = Counter(
            "crossrank_monitor_top_changed", "Rerankings whose first result is not the first stage's.", registry=r
        )
        self.duplicates = Counter(
            "crossrank_monitor_duplicate_candidates", "Candidates whose text repeats another's.", registry=r
        )
        self.histograms = {
            name: Histogram(f"crossrank_signal_{name}", text, buckets=buckets, registry=r)
            for name, (text, buckets) in _HISTOGRAMS.items()
        }
        self.drift_flag = Gauge(
            "crossrank_drift", "1 when the last window of queries drifted from the reference profile.", registry=r
        )
        self.drift_psi = Gauge(
            "crossrank_drift_psi", "PSI of the last window against the reference profile.", ["signal"], registry=r
        )

    def observe(self, signals: QuerySignals) -> None:
        """Record one reranking's signals; update the metrics and, with a profile, the drift flag."""
        for name, hist in self.histograms.items():
            hist.observe(float(getattr(signals, name)))
        self.queries.inc()
        if signals.top_changed:
            self.top_changed.inc()
        if signals.duplicates:
            self.duplicates.inc(signals.duplicates)
        with self._lock:
            self._recent.append(signals)
            self._times.append(time.time())
            self._total += 1
            if self.profile is None:
                return
            report = drift(self.profile, list(self._recent)[-DRIFT_WINDOW:])
            self._report = report
            was, self._drifted = self._drifted, report.drifted
        for name, d in report.signals.items():
            self.drift_psi.labels(name).set(d.psi)
        self.drift_flag.set(1.0 if report.drifted else 0.0)
        if report.drifted and not was:
            log.warning(
                "drift: the last %d queries moved from the reference profile on %s (PSI > 0.25 and KS p < 0.01)",
                report.num_queries,
                ", ".join(report.drifted_signals),
            )
        elif was and not report.drifted:
            log.info("drift cleared: the last %d queries match the reference profile again", report.num_queries)

    @property
    def drifted(self) -> bool:
        """Return whether the last window drifted from the profile."""
        return self._drifted

    def summary(self) -> dict[str, Any]:
        """Return what ``GET /v1/monitor`` answers: totals, per-window statistics and drift."""
        with self._lock:
            recent = list(self._recent)
            times = list(self._times)
            total, drifted = self._total, self._drifted
        windows = {}
        for size in WINDOWS:
            window = recent[-size:]
            entry: dict[str, Any] = {"size": size, "count": len(window), "signals": _stats(window)}
            if self.profile is not None:
                entry["drift"] = drift(self.profile, window).to_dict()
            windows[f"last_{size}"] = entry
        profile = None
        if self.profile is not None:
            p = self.profile
            profile = {"model": p.model, "source": p.source, "num_queries": p.num_queries, "depth": p.depth}
        return {
            "total": total,
            "drift": drifted,
            "drift_window": DRIFT_WINDOW,
            "min_queries": MIN_QUERIES,
            "profile": profile,
            "windows": windows,
            "series": _series(recent[-len(times) :] if times else [], times),
        }


def _series(recent: Sequence[QuerySignals], times: Sequence[float]) -> dict[str, list[float]]:
    """The last :data:`SERIES` rerankings' signals in time order, for plots over time."""
    out: dict[str, list[float]] = {"time": [round(t, 3) for t in times]}
    for name in SERIES_SIGNALS:
        out[name] = [round(float(getattr(s, name)), 6) for s in recent]
    return out


def _stats(window: Sequence[QuerySignals]) -> dict[str, dict[str, float]]:
    out = {}
    for name in _SUMMARY:
        values = signal_values(window, name)
        if values.size == 0:
            continue
        p10, p50, p90 = np.percentile(values, [10.0, 50.0, 90.0])
        out[name] = {
            "mean": round(float(values.mean()), 6),
            "p10": round(float(p10), 6),
            "p50": round(float(p50), 6),
            "p90": round(float(p90), 6),
        }
    return out
