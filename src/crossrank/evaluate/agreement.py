"""How far two scorers agree on the same candidate lists: score shift, rank correlation, nDCG change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Agreement", "agreement", "kendall_tau"]


@dataclass(frozen=True, slots=True)
class Agreement:
    """Agreement of a candidate scorer with a reference on the same per-query lists.

    Attributes:
        queries: how many queries were compared.
        pairs: how many pairs were compared.
        max_abs_diff: largest absolute score difference.
        mean_abs_diff: mean absolute score difference.
        mean_kendall_tau: mean over queries of Kendall's tau-b between the two orders.
        ndcg10_reference: nDCG@10 of the reference (``None`` without judgments).
        ndcg10_candidate: nDCG@10 of the candidate (``None`` without judgments).
    """

    queries: int
    pairs: int
    max_abs_diff: float
    mean_abs_diff: float
    mean_kendall_tau: float
    ndcg10_reference: float | None = None
    ndcg10_candidate: float | None = None

    @property
    def ndcg10_change(self) -> float | None:
        """Return candidate minus reference nDCG@10."""
        if self.ndcg10_reference is None or self.ndcg10_candidate is None:
            return None
        return self.ndcg10_candidate - self.ndcg10_reference

    def to_dict(self) -> dict[str, Any]:
        """Return the figures as a plain dict."""
        return {**asdict(self), "ndcg10_change": self.ndcg10_change}


def kendall_tau(a: npt.NDArray[np.floating[Any]], b: npt.NDArray[np.floating[Any]]) -> float:
    """Return Kendall's tau-b between two score vectors over the same items."""
    from crossrank._deps import require

    stats = require("scipy.stats", feature="Kendall's tau")
    value = stats.kendalltau(a, b).statistic
    return 1.0 if np.isnan(value) else float(value)


def agreement(
    reference: Mapping[str, Mapping[str, float]],
    candidate: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]] | None = None,
) -> Agreement:
    """Return how ``candidate`` agrees with ``reference``: both ``{query_id: {doc_id: score}}``.

    nDCG@10 (trec_eval's ``ndcg_cut.10``) is computed with ir-measures when ``qrels`` is given.
    """
    taus: list[float] = []
    diffs: list[npt.NDArray[np.float64]] = []
    for qid, ref in reference.items():
        docs: Sequence[str] = list(ref)
        r = np.array([ref[d] for d in docs], dtype=np.float64)
        c = np.array([candidate[qid][d] for d in docs], dtype=np.float64)
        diffs.append(np.abs(r - c))
        taus.append(kendall_tau(r, c))
    flat = np.concatenate(diffs) if diffs else np.zeros(0)
    ndcg_ref = ndcg_cand = None
    if qrels is not None:
        qrels = {q: qrels[q] for q in reference if q in qrels}  # judge only the queries compared
        ndcg_ref, ndcg_cand = _ndcg10(reference, qrels), _ndcg10(candidate, qrels)
    return Agreement(
        queries=len(taus),
        pairs=int(flat.size),
        max_abs_diff=float(flat.max()) if flat.size else 0.0,
        mean_abs_diff=float(flat.mean()) if flat.size else 0.0,
        mean_kendall_tau=float(np.mean(taus)) if taus else 1.0,
        ndcg10_reference=ndcg_ref,
        ndcg10_candidate=ndcg_cand,
    )


def _ndcg10(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]) -> float:
    from crossrank._deps import require

    irm = require("ir_measures", feature="nDCG@10")
    measure = irm.parse_measure("nDCG@10")
    qr = [irm.Qrel(q, d, int(g)) for q, docs in qrels.items() for d, g in docs.items()]
    sd = [irm.ScoredDoc(q, d, float(s)) for q, docs in run.items() for d, s in docs.items()]
    return float(irm.calc_aggregate([measure], qr, sd)[measure])
