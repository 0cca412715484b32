"""Reference profiles of the label-free signals, and drift of a window of queries from one.

A :class:`Profile` keeps each signal's per-query values over a sample of queries someone trusts
(``crossrank monitor profile``). :func:`drift` compares a window of recent queries with it, signal
by signal, with the population stability index (PSI, over bins cut at the reference's deciles)
and the two-sample Kolmogorov-Smirnov statistic. The thresholds are fixed constants here, so the
server (``crossrank serve --profile``), the command line and the tests apply one rule.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank.errors import ConfigError, InputError
from crossrank.signals import QuerySignals

__all__ = [
    "DRIFT_SIGNALS",
    "INPUT_SIGNALS",
    "KS_P_THRESHOLD",
    "MIN_QUERIES",
    "PROFILE_SIGNALS",
    "PSI_BINS",
    "PSI_THRESHOLD",
    "DriftReport",
    "Profile",
    "SignalDrift",
    "drift",
    "ks_2samp",
    "psi",
    "signal_values",
]

_FORMAT = "crossrank-profile"
_VERSION = 1

#: the signals a profile keeps (all the numeric ones; ``top_changed`` as 0/1)
PROFILE_SIGNALS: tuple[str, ...] = (
    "kendall_tau",
    "rbo",
    "top_changed",
    "displacement",
    "top_score",
    "margin",
    "score_std",
    "score_iqr",
    "above_threshold",
    "truncated_share",
    "duplicates",
    "short_share",
    "query_words",
)

#: The signals the drift flag is raised on: what the model does, its scores (confidence) and how it
#: reorders the first stage. A window whose scores and reorderings look like the profile's has not
#: drifted in the sense that matters, whatever its queries look like.
DRIFT_SIGNALS: tuple[str, ...] = (
    "top_score",
    "margin",
    "score_std",
    "score_iqr",
    "kendall_tau",
    "rbo",
    "displacement",
)
#: The traffic's own signals, compared and reported (:attr:`DriftReport.drifted_inputs`) but not
#: raising the flag. Measured: TREC DL 2021's queries are twice as long as DL 2019's (median 10
#: words against 5) and every window of 30 of them differs from a DL 2019 profile in
#: ``query_words`` (PSI 1.2 to 2.2, KS p <= 0.001), though the model scores and reorders them as it
#: does DL 2019's and helps as much. ``duplicates``, ``short_share`` and ``above_threshold`` are
#: left out: they are mostly 0 (or absent), and a distribution with one value has no bins to compare.
INPUT_SIGNALS: tuple[str, ...] = ("query_words", "truncated_share")

#: PSI bins: the reference's deciles. Ten bins is the usual choice in credit scoring, where PSI
#: comes from; fewer hide shape changes, more leave bins nearly empty on a few hundred queries.
PSI_BINS = 10
#: PSI above 0.25 is the conventional "significant shift" (0.1 to 0.25: moderate; under 0.1: none).
#: PSI measures how much the distribution moved, whatever the sample size.
PSI_THRESHOLD = 0.25
#: The KS test's p-value must also be under 0.01: a PSI over a small window is noisy (a window of 30
#: queries puts about three in each decile), so a large PSI counts only when the KS test says the
#: window is unlikely to come from the reference at all. Requiring both keeps a large window from
#: flagging a shift that is significant but tiny (KS alone) and a small one from flagging noise
#: (PSI alone). With seven signals tested, the chance that a window from the reference's own
#: distribution passes both on any signal stays well under 7 x 1%.
KS_P_THRESHOLD = 0.01
#: A window is judged only once it holds this many queries. Measured (default model, BM25 top 20,
#: ``tests/test_monitor.py``): against a profile of the 43 DL 2019 queries, CISI windows pass both
#: tests on ``top_score`` and ``margin`` from their first 5 queries on (KS p < 0.001, PSI > 4),
#: while none of the 14 windows of 30 consecutive DL 2019 queries drifts, though 9 of them have a
#: signal with PSI over 0.25 (up to 1.17): small windows need the KS test. Nor do any of the 24 windows
#: of 30 consecutive DL 2021 queries, against the same DL 2019 profile. 30 is where a decile holds about three queries;
#: the flag comes up at a CISI window's 30th query.
MIN_QUERIES = 30
# a bin the reference or the window leaves empty counts as this share, so PSI stays finite
_EMPTY_SHARE = 1e-4


def signal_values(signals: Sequence[QuerySignals], name: str) -> npt.NDArray[np.float64]:
    """Return one signal's values over ``signals`` as float64 (``None`` values left out).

    Raises:
        InputError: ``name`` is not a profiled signal.
    """
    if name not in PROFILE_SIGNALS:
        raise InputError(f"unknown signal {name!r}; signals: {', '.join(PROFILE_SIGNALS)}")
    values = [getattr(s, name) for s in signals]
    return np.asarray([float(v) for v in values if v is not None], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Profile:
    """The signals' per-query values on a reference sample of queries.

    Attributes:
        values: per signal (:data:`PROFILE_SIGNALS`), its value on each reference query, in
            query order (``above_threshold`` only when the scores were calibrated).
        model: the cross-encoder's name.
        source: what the queries and candidates were (files, index), for the record.
        depth: candidates reranked per query.
        activation: what the scores were (``"sigmoid"``, ``"calibrated"``, ``"none"``...).
        created: seconds since the epoch.
    """

    values: Mapping[str, tuple[float, ...]]
    model: str = ""
    source: str = ""
    depth: int = 0
    activation: str = ""
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.values) - set(PROFILE_SIGNALS))
        if unknown:
            raise ConfigError(f"profile has unknown signals {unknown}; signals: {', '.join(PROFILE_SIGNALS)}")

    @property
    def num_queries(self) -> int:
        """Return how many queries the profile was recorded on."""
        return max((len(v) for v in self.values.values()), default=0)

    @classmethod
    def from_signals(cls, signals: Sequence[QuerySignals], **meta: Any) -> Profile:
        """Return the profile of these queries' signals (``meta``: the other attributes).

        Raises:
            InputError: no signals.
        """
        if not signals:
            raise InputError("a profile needs at least one query's signals (got none)")
        values = {name: tuple(signal_values(signals, name).tolist()) for name in PROFILE_SIGNALS}
        return cls(values={k: v for k, v in values.items() if v}, **meta)

    def array(self, name: str) -> npt.NDArray[np.float64]:
        """Return one signal's reference values (empty when the profile lacks it)."""
        return np.asarray(self.values.get(name, ()), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Return the profile as JSON-ready values."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "model": self.model,
            "source": self.source,
            "depth": self.depth,
            "activation": self.activation,
            "created": self.created,
            "num_queries": self.num_queries,
            "values": {k: list(v) for k, v in self.values.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Return the profile :meth:`to_dict` wrote.

        Raises:
            ConfigError: not a crossrank profile, or a newer version.
        """
        if data.get("format") != _FORMAT:
            raise ConfigError(
                f"not a crossrank profile (format {data.get('format')!r}); write one with `crossrank monitor profile`"
            )
        if int(data.get("version", 0)) > _VERSION:
            raise ConfigError(f"profile version {data.get('version')} is newer than this crossrank reads ({_VERSION})")
        raw = data.get("values")
        if not isinstance(raw, Mapping):
            raise ConfigError("profile has no 'values' mapping of signal -> per-query values")
        return cls(
            values={str(k): tuple(float(x) for x in v) for k, v in raw.items()},
            model=str(data.get("model", "")),
            source=str(data.get("source", "")),
            depth=int(data.get("depth", 0)),
            activation=str(data.get("activation", "")),
            created=float(data.get("created", 0.0)),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile as JSON; return the path."""
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read a profile :meth:`save` wrote.

        Raises:
            ConfigError: the file is missing, not JSON, or not a profile.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ConfigError(
                f"profile {os.fspath(path)!r} not found; write one with `crossrank monitor profile`"
            ) from err
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read profile {os.fspath(path)!r}: {err}") from err
        if not isinstance(data, Mapping):
            raise ConfigError(f"profile {os.fspath(path)!r} is not a JSON object")
        return cls.from_dict(data)


def psi(reference: npt.ArrayLike, sample: npt.ArrayLike, bins: int = PSI_BINS) -> float:
    """Return the population stability index of ``sample`` against ``reference``.

    The bins are cut at the reference's quantiles (``bins`` equal shares; repeated cut points
    merge, so a signal with few distinct values gets fewer bins). An empty bin counts as a share
    of 1e-4. ``sum((s - r) * ln(s / r))`` over the bins: 0 for the same shares.

    Example:
        >>> psi([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        0.0
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    got = np.asarray(sample, dtype=np.float64).reshape(-1)
    if ref.size == 0 or got.size == 0:
        return 0.0
    edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    s = np.bincount(np.searchsorted(edges, got, side="right"), minlength=edges.size + 1) / got.size
    r, s = np.maximum(r, _EMPTY_SHARE), np.maximum(s, _EMPTY_SHARE)
    return float(max(np.sum((s - r) * np.log(s / r)), 0.0))


def ks_2samp(reference: npt.ArrayLike, sample: npt.ArrayLike) -> tuple[float, float]:
    """Return the two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value.

    The statistic is the largest gap between the two empirical distribution functions; the
    p-value is Kolmogorov's limit distribution at ``sqrt(n m / (n + m)) D`` with Stephens'
    small-sample correction (as Numerical Recipes' ``kstwo``), so no scipy is needed. Ties make it
    conservative.

    Example:
        >>> ks_2samp([1, 2, 3], [1, 2, 3])
        (0.0, 1.0)
    """
    a = np.sort(np.asarray(reference, dtype=np.float64).reshape(-1))
    b = np.sort(np.asarray(sample, dtype=np.float64).reshape(-1))
    if a.size == 0 or b.size == 0:
        return 0.0, 1.0
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    en = math.sqrt(a.size * b.size / (a.size + b.size))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 1e-3:
        return d, 1.0
    j = np.arange(1, 101)
    p = 2.0 * float(np.sum((-1.0) ** (j - 1) * np.exp(-2.0 * j**2 * lam**2)))
    return d, min(max(p, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class SignalDrift:
    """How far one signal's window moved from the reference.

    Attributes:
        psi: population stability index.
        ks: two-sample Kolmogorov-Smirnov statistic, in [0, 1].
        p_value: the KS test's p-value.
        drifted: ``psi > PSI_THRESHOLD`` and ``p_value < KS_P_THRESHOLD``.
    """

    psi: float
    ks: float
    p_value: float
    drifted: bool


@dataclass(frozen=True, slots=True)
class DriftReport:
    """A window of queries against a reference profile.

    Attributes:
        num_queries: queries in the window.
        signals: per signal of :data:`DRIFT_SIGNALS` and :data:`INPUT_SIGNALS` the profile has, how
            far it moved.
        drifted: the window holds at least :data:`MIN_QUERIES` queries and a signal of
            :data:`DRIFT_SIGNALS` drifted.
    """

    num_queries: int
    signals: Mapping[str, SignalDrift]
    drifted: bool

    @property
    def drifted_signals(self) -> list[str]:
        """Return the names of the signals of :data:`DRIFT_SIGNALS` that drifted."""
        return [name for name, d in self.signals.items() if d.drifted and name in DRIFT_SIGNALS]

    @property
    def drifted_inputs(self) -> list[str]:
        """Return the names of the signals of :data:`INPUT_SIGNALS` that drifted (reported, no flag)."""
        return [name for name, d in self.signals.items() if d.drifted and name in INPUT_SIGNALS]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready values."""
        return {
            "num_queries": self.num_queries,
            "drift": self.drifted,
            "drifted_signals": self.drifted_signals,
            "drifted_inputs": self.drifted_inputs,
            "min_queries": MIN_QUERIES,
            "thresholds": {"psi": PSI_THRESHOLD, "ks_p": KS_P_THRESHOLD},
            "signals": {
                name: {"psi": round(d.psi, 6), "ks": round(d.ks, 6), "p_value": d.p_value, "drifted": d.drifted}
                for name, d in self.signals.items()
            },
        }


def drift(profile: Profile, window: Sequence[QuerySignals] | Profile) -> DriftReport:
    """Return how far a window of queries' signals moved from ``profile``, signal by signal.

    A signal drifted when its PSI is over :data:`PSI_THRESHOLD` and its KS p-value under
    :data:`KS_P_THRESHOLD`; the window drifted when it holds at least :data:`MIN_QUERIES` queries
    and any of :data:`DRIFT_SIGNALS` drifted (:data:`INPUT_SIGNALS` are compared and reported too).
    The window is the queries' signals, or a second profile.

    Example:
        >>> report = drift(profile, recent_signals)  # doctest: +SKIP
        >>> report.drifted, report.drifted_signals  # doctest: +SKIP
    """
    out: dict[str, SignalDrift] = {}
    for name in (*DRIFT_SIGNALS, *INPUT_SIGNALS):
        ref = profile.array(name)
        got = window.array(name) if isinstance(window, Profile) else signal_values(window, name)
        if ref.size == 0 or got.size == 0:
            continue
        value = psi(ref, got)
        d, p = ks_2samp(ref, got)
        out[name] = SignalDrift(value, d, p, value > PSI_THRESHOLD and p < KS_P_THRESHOLD)
    n = window.num_queries if isinstance(window, Profile) else len(window)
    flagged = any(d.drifted for name, d in out.items() if name in DRIFT_SIGNALS)
    return DriftReport(n, out, n >= MIN_QUERIES and flagged)
