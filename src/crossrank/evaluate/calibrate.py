"""Score calibration: map a cross-encoder's raw logit to a probability of relevance.

A cross-encoder's sigmoid output ranks well but is not a probability: on TREC DL a score of
0.9 does not mean nine in ten such passages are relevant. Platt scaling (a logistic fit on the
logit) or isotonic regression (a monotone step fit) learned on judged pairs turns scores into
probabilities, so a threshold means something. Both maps are non-decreasing in the logit, so
rankings never change; :class:`~crossrank.CrossEncoder` orders by the uncalibrated score and
reports the calibrated one (isotonic maps create ties).

Example:
    >>> import numpy as np
    >>> cal = fit_calibration(np.array([-3.0, -1.0, 0.5, 2.0, 4.0]), np.array([0, 0, 1, 0, 1]))
    >>> cal.method, bool(cal.a > 0)
    ('platt', True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from crossrank._text import plural
from crossrank.errors import ConfigError, InputError, MissingDependencyError
from crossrank.rerank.calibration import (
    CALIBRATION_FILE,
    Calibration,
    Method,
    default_calibration_path,
    model_fingerprint,
    remove_default_calibration,
)

if TYPE_CHECKING:
    from crossrank.rerank.cross_encoder import CrossEncoder

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "CalibrationCheck",
    "CalibrationResult",
    "LabelledPairs",
    "Method",
    "calibrate_encoder",
    "default_calibration_path",
    "expected_calibration_error",
    "fit_calibration",
    "labelled_pairs",
    "model_fingerprint",
    "reliability_curve",
    "remove_default_calibration",
]

_METHODS: tuple[str, ...] = get_args(Method)
# Platt's logistic fit is on one feature with thousands of pairs: almost no regularisation, so
# the map follows the data, but finite so a perfectly separated sample still gives a finite slope.
_PLATT_C = 1e4


def fit_calibration(logits: ArrayLike, labels: ArrayLike, method: Method = "platt") -> Calibration:
    """Return a calibration fitted on raw logits and binary relevance labels.

    Args:
        logits: raw (pre-sigmoid) scores of a one-logit model, shape ``(n,)`` or ``(n, 1)``.
        labels: 1 for relevant, 0 for not, shape ``(n,)``.
        method: ``"platt"`` (logistic fit, two parameters, smooth) or ``"isotonic"`` (monotone
            step fit; needs more data, can express any monotone shape).

    Returns:
        The fitted :class:`Calibration` (``model`` and ``fingerprint`` left empty).

    Raises:
        ConfigError: ``method`` is not ``"platt"`` or ``"isotonic"``.
        InputError: the inputs are empty, differ in length, hold NaN, labels are not 0/1 or
            hold one class only, or the scores decrease with relevance (Platt slope <= 0).
    """
    if method not in _METHODS:
        raise ConfigError(f"method must be one of {_METHODS} (got {method!r})")
    z = _as_1d(logits, "logits")
    y = _as_labels(labels, z.size)
    if not np.isfinite(z).all():
        raise InputError(f"logits hold {int((~np.isfinite(z)).sum())} NaN or infinite values; drop those pairs")
    positives = int(y.sum())
    if positives in (0, y.size):
        only = "relevant" if positives else "non-relevant"
        raise InputError(
            f"labels are all {only} ({plural(y.size, 'pair')}); calibration needs both classes: use more queries, a "
            "deeper run, or another relevance grade threshold"
        )
    spread = float(z.std())
    if spread == 0.0:
        raise InputError(f"all {z.size} logits are equal ({z[0]:.6g}); there is nothing to calibrate")
    fitted_on = {"pairs": int(y.size), "positives": positives}
    if method == "platt":
        linear_model = _sklearn("linear_model")
        center = float(z.mean())
        # fit on the standardised logit so lbfgs converges quickly whatever the model's logit scale
        lr = linear_model.LogisticRegression(C=_PLATT_C).fit(((z - center) / spread).reshape(-1, 1), y)
        slope = float(lr.coef_[0, 0]) / spread
        intercept = float(lr.intercept_[0]) - slope * center
        if slope <= 0:
            raise InputError(
                f"the scores do not increase with relevance on these labels (fitted slope a={slope:.4g}); check "
                "that labels and logits are in the same order and that the model fits the data"
            )
        return Calibration("platt", a=slope, b=intercept, fitted_on=fitted_on)
    isotonic = _sklearn("isotonic")
    iso = isotonic.IsotonicRegression(out_of_bounds="clip", increasing=True, y_min=0.0, y_max=1.0).fit(z, y)
    return Calibration(
        "isotonic",
        x=tuple(float(v) for v in iso.X_thresholds_),
        y=tuple(float(v) for v in iso.y_thresholds_),
        fitted_on=fitted_on,
    )


# ------------------------------------------------------------------ measures


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, *, bins: int = 10) -> float:
    """Return the expected calibration error: the count-weighted mean gap between confidence and accuracy.

    Probabilities are put in ``bins`` equal-width bins over [0, 1] (1.0 goes in the last); in each
    bin the gap is ``|mean probability - fraction relevant|``, weighted by the bin's share of pairs.

    Raises:
        InputError: empty or different-length inputs, probabilities outside [0, 1] or NaN,
            labels not 0/1, or ``bins`` < 1.
    """
    curve = reliability_curve(probs, labels, bins=bins)
    total = sum(b["count"] for b in curve)
    return float(sum(b["count"] * abs(b["mean_predicted"] - b["fraction_positive"]) for b in curve) / total)


def reliability_curve(probs: ArrayLike, labels: ArrayLike, *, bins: int = 10) -> list[dict[str, float]]:
    """Return, for each non-empty equal-width bin of [0, 1], the mean probability and the fraction relevant.

    Each entry has ``low`` and ``high`` (the bin's edges), ``mean_predicted``,
    ``fraction_positive`` and ``count`` (pairs in the bin); bins with no pairs are left out.

    Raises:
        InputError: empty or different-length inputs, probabilities outside [0, 1] or NaN,
            labels not 0/1, or ``bins`` < 1.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise InputError(f"bins must be an int >= 1 (got {bins!r})")
    p = _as_1d(probs, "probs")
    y = _as_labels(labels, p.size)
    if not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0:
        bad = p[~(np.isfinite(p) & (p >= 0.0) & (p <= 1.0))][0]
        raise InputError(
            f"probs must be probabilities in [0, 1] (got {float(bad):g}); "
            "apply a sigmoid or a calibration to raw logits first"
        )
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=bins)
    return [
        {
            "low": i / bins,
            "high": (i + 1) / bins,
            "mean_predicted": float(sum_p[i] / counts[i]),
            "fraction_positive": float(sum_y[i] / counts[i]),
            "count": int(counts[i]),
        }
        for i in range(bins)
        if counts[i]
    ]


# ------------------------------------------------------------------ labelled data


@dataclass(frozen=True, slots=True)
class LabelledPairs:
    """Judged (query, document) pairs taken from a first-stage run, with binary labels.

    Attributes:
        query_ids: the query of each pair.
        doc_ids: the document of each pair.
        queries: query texts, one per pair.
        documents: document texts (title and text joined as the cross-encoder joins them).
        labels: int8, shape ``(n,)``: 1 when the grade is >= ``rel``, else 0.
        skipped_unjudged: candidates in the top ``depth`` with no judgment.
        skipped_missing_text: judged candidates whose document is not in the corpus.
        skipped_queries: run queries with no judgments or no text.
        source: where the pairs come from (data, run, split, depth, rel).
    """

    query_ids: tuple[str, ...]
    doc_ids: tuple[str, ...]
    queries: tuple[str, ...]
    documents: tuple[str, ...]
    labels: npt.NDArray[np.int8]
    skipped_unjudged: int = 0
    skipped_missing_text: int = 0
    skipped_queries: int = 0
    source: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def pairs(self) -> list[tuple[str, str]]:
        """Return the ``(query, document)`` pairs, in order."""
        return list(zip(self.queries, self.documents, strict=True))

    def summary(self) -> dict[str, Any]:
        """Return counts and provenance as a JSON-ready dict."""
        return {
            **dict(self.source),
            "pairs": len(self),
            "positives": int(self.labels.sum()),
            "queries": len(set(self.query_ids)),
            "skipped_unjudged": self.skipped_unjudged,
            "skipped_missing_text": self.skipped_missing_text,
            "skipped_queries": self.skipped_queries,
        }


def labelled_pairs(
    data_dir: str | os.PathLike[str],
    run_path: str | os.PathLike[str],
    *,
    depth: int,
    rel: int,
    split: str = "test",
) -> LabelledPairs:
    """Return the judged pairs among each judged query's top ``depth`` candidates of a run.

    Args:
        data_dir: a folder with ``corpus.jsonl``, ``queries.jsonl`` and judgments in
            ``qrels/<split>.tsv`` (BEIR) or ``qrels.tsv`` (see :func:`crossrank.io.beir_qrels_path`).
        run_path: a first-stage TREC run over that corpus.
        depth: candidates per query to look at (the depth the model will rerank).
        rel: the grade from which a document counts as relevant (TREC DL: 2).
        split: the qrels split (a folder with a single ``qrels.tsv`` has no splits).

    Raises:
        InputError: a file is missing or malformed, ``depth`` or ``rel`` < 1, or no judged
            candidate with text is found.
    """
    from crossrank.documents import record_text
    from crossrank.io import beir_qrels_path, read_qrels, read_run_candidates

    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InputError(f"depth must be an int >= 1 (got {depth!r})")
    if isinstance(rel, bool) or not isinstance(rel, int) or rel < 1:
        raise InputError(f"rel must be an int >= 1, the lowest relevant grade (got {rel!r}); TREC DL uses 2")
    folder = Path(data_dir)
    qrels_file = beir_qrels_path(folder, split)
    qrels = read_qrels(qrels_file)
    run = read_run_candidates(
        Path(run_path), folder / "queries.jsonl", folder / "corpus.jsonl", depth=depth, skip_missing=True
    )
    texts = dict(zip(run.query_ids, run.queries, strict=True))
    records = {(q, r["id"]): r for q, recs in zip(run.query_ids, run.documents, strict=True) for r in recs}
    no_text = set(run.missing_queries)
    qids: list[str] = []
    dids: list[str] = []
    labels: list[int] = []
    unjudged = missing = skipped_q = 0
    for qid, cands in run.ranked.items():
        judged = qrels.get(qid)
        if not judged or qid in no_text:
            skipped_q += 1
            continue
        for doc_id in cands:
            grade = judged.get(doc_id)
            if grade is None:
                unjudged += 1
            elif (qid, doc_id) not in records:
                missing += 1
            else:
                qids.append(qid)
                dids.append(doc_id)
                labels.append(int(grade >= rel))
    if not labels:
        raise InputError(
            f"no judged candidate with text in the top {depth} of {run_path} for the queries judged in {qrels_file} "
            f"({unjudged} unjudged, {missing} without text, {plural(skipped_q, 'run query', 'run queries')} "
            "unjudged); check that the run "
            "and the qrels use the same query and document ids"
        )
    return LabelledPairs(
        query_ids=tuple(qids),
        doc_ids=tuple(dids),
        queries=tuple(texts[q] for q in qids),
        documents=tuple(record_text(records[q, d]) for q, d in zip(qids, dids, strict=True)),
        labels=np.asarray(labels, dtype=np.int8),
        skipped_unjudged=unjudged,
        skipped_missing_text=missing,
        skipped_queries=skipped_q,
        source={"data": str(folder), "run": str(run_path), "split": split, "depth": depth, "rel": rel},
    )


# ------------------------------------------------------------------ fitting a model


@dataclass(frozen=True, slots=True)
class CalibrationCheck:
    """Expected calibration error of one set of pairs, before and after calibration.

    Attributes:
        pairs: judged pairs measured.
        positives: relevant pairs among them.
        ece_before: ECE of the model's sigmoid probabilities.
        ece_after: ECE of the calibrated probabilities.
    """

    pairs: int
    positives: int
    ece_before: float
    ece_after: float


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    """A fitted calibration and how it changed the expected calibration error.

    Attributes:
        calibration: the fitted mapping, stamped with the model's name and fingerprint.
        fit: ECE on the fitting pairs (in-sample, so optimistic).
        heldout: ECE on held-out pairs, when given.
        bins: bins of the ECE.
    """

    calibration: Calibration
    fit: CalibrationCheck
    heldout: CalibrationCheck | None
    bins: int

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        from dataclasses import asdict

        return {
            "calibration": self.calibration.to_dict(),
            "bins": self.bins,
            "fit": asdict(self.fit),
            "heldout": asdict(self.heldout) if self.heldout is not None else None,
        }


def calibrate_encoder(
    encoder: CrossEncoder,
    fit: LabelledPairs,
    *,
    method: Method = "platt",
    heldout: LabelledPairs | None = None,
    bins: int = 10,
) -> CalibrationResult:
    """Return a calibration of ``encoder`` fitted on ``fit``, with ECE before and after.

    "Before" is the model's plain sigmoid of its logit, whatever calibration it already has.
    The result is not saved: call ``result.calibration.save(default_calibration_path(encoder.files))``.

    Raises:
        ConfigError: the model has more than one logit, or ``method`` is unknown.
        InputError: see :func:`fit_calibration`.
    """
    if encoder.files is None:
        raise ConfigError(
            f"calibration is saved against a model's files, and {encoder.name!r} is a scorer passed in; "
            "load the model by name or path"
        )
    if encoder.num_labels != 1:
        raise ConfigError(
            f"calibration needs a one-logit relevance model; {encoder.name!r} has {encoder.num_labels} labels "
            f"{list(encoder.labels)}"
        )
    fit_logits = encoder.score(fit.pairs(), activation="none")
    cal = fit_calibration(fit_logits, fit.labels, method=method)
    cal = replace(
        cal,
        model=encoder.name,
        fingerprint=model_fingerprint(encoder.files),
        fitted_on={
            **dict(fit.source),
            **dict(cal.fitted_on),
            "backend": encoder.backend_name,
            "max_length": encoder.config.max_length,
        },
    )

    def check(logits: npt.NDArray[np.float32], labels: npt.NDArray[np.int8]) -> CalibrationCheck:
        plain = 0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))
        return CalibrationCheck(
            pairs=int(labels.size),
            positives=int(labels.sum()),
            ece_before=expected_calibration_error(plain, labels, bins=bins),
            ece_after=expected_calibration_error(cal.apply(logits), labels, bins=bins),
        )

    held = None
    if heldout is not None:
        held = check(encoder.score(heldout.pairs(), activation="none"), heldout.labels)
    return CalibrationResult(calibration=cal, fit=check(fit_logits, fit.labels), heldout=held, bins=bins)


# ------------------------------------------------------------------ helpers


def _as_1d(values: ArrayLike, name: str) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be numbers (got {type(values).__name__}: {err})") from err
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"{name} must be one number per pair, shape (n,) (got shape {arr.shape})")
    if arr.size == 0:
        raise InputError(f"{name} is empty; pass at least one judged pair")
    return arr


def _as_labels(labels: ArrayLike, n: int) -> npt.NDArray[np.int8]:
    y = _as_1d(labels, "labels")
    if y.size != n:
        raise InputError(f"got {y.size} labels for {n} scores; pass one label per pair")
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise InputError(
            f"labels must be 0 or 1 (got {float(y[bad][0]):g}); "
            "binarise graded judgments first, e.g. grade >= 2 for TREC DL"
        )
    return y.astype(np.int8)


def _sklearn(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError as err:
        raise MissingDependencyError(
            'calibration needs scikit-learn, which is not installed: pip install "crossrank[eval]"'
        ) from err
