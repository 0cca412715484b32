"""Merging two first-stage lists: reciprocal rank fusion and normalised score interpolation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Candidates", "fuse_interpolate", "fuse_rrf", "minmax"]


@dataclass(frozen=True, slots=True)
class Candidates:
    """One query's first-stage candidates, best first.

    Attributes:
        slots: int64 positions of the documents in the index.
        scores: float32 first-stage scores (BM25, dot product, or fused).
    """

    slots: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.slots.size)


def _ranked(slots: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], k: int) -> Candidates:
    order = np.lexsort((slots, -scores))[:k]  # best first; ties by index position, so runs are stable
    return Candidates(slots[order], scores[order].astype(np.float32))


def fuse_rrf(a: Candidates, b: Candidates, *, k: int, rrf_k: int = 60) -> Candidates:
    """Return the top ``k`` of reciprocal rank fusion: ``sum 1 / (rrf_k + rank)`` over the lists.

    Cormack, Clarke and Buettcher (SIGIR 2009); ranks start at 1; a document missing from a list
    gets nothing from it.
    """
    slots = np.concatenate([a.slots, b.slots])
    contrib = np.concatenate(
        [
            1.0 / (rrf_k + np.arange(1, len(a) + 1, dtype=np.float64)),
            1.0 / (rrf_k + np.arange(1, len(b) + 1, dtype=np.float64)),
        ]
    )
    uniq, inverse = np.unique(slots, return_inverse=True)
    fused = np.bincount(inverse, weights=contrib, minlength=uniq.size).astype(np.float64)
    return _ranked(uniq.astype(np.int64), fused, k)


def minmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Return ``x`` scaled to [0, 1] (all zeros when every value is equal)."""
    x64 = x.astype(np.float64)
    if x64.size == 0:
        return x64
    lo, hi = float(x64.min()), float(x64.max())
    return (x64 - lo) / (hi - lo) if hi > lo else np.zeros_like(x64)


def fuse_interpolate(
    slots: npt.NDArray[np.int64],
    sparse: npt.NDArray[np.float32],
    dense: npt.NDArray[np.float32],
    *,
    k: int,
    dense_weight: float = 0.5,
) -> Candidates:
    """Return the top ``k`` of ``dense_weight * minmax(dense) + (1 - dense_weight) * minmax(sparse)``.

    Both score arrays hold each candidate's real score from that first stage (not only the
    candidates it retrieved itself), normalised over the candidate pool of this query.
    """
    fused = dense_weight * minmax(dense) + (1.0 - dense_weight) * minmax(sparse)
    return _ranked(slots, fused, k)
