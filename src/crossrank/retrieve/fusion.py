"""Merging two first-stage lists: reciprocal rank fusion and normalised score interpolation.

The math is written once, over keys: an index fuses its own lists by slot (:class:`Candidates`),
and :class:`~crossrank.retrieve.retrievers.Hybrid` fuses any two first stages by document id
(:class:`~crossrank.retrieve.protocols.Retrieved`). Ties go to the smaller key: index position
for slots, the id's string order for ids, so runs are stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank.retrieve.protocols import Retrieved

__all__ = ["Candidates", "fuse_interpolate", "fuse_interpolate_ids", "fuse_rrf", "fuse_rrf_ids", "minmax"]


@dataclass(frozen=True, slots=True)
class Candidates:
    """One query's first-stage candidates inside an index, best first.

    Attributes:
        slots: int64 positions of the documents in the index.
        scores: float32 first-stage scores (BM25, dot product, or fused).
    """

    slots: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.slots.size)


def _top(
    keys: npt.NDArray[Any], scores: npt.NDArray[np.float64], k: int
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
    order = np.lexsort((keys, -scores))[:k]  # best first; ties by key, so runs are stable
    return keys[order], scores[order].astype(np.float32)


def _rrf(a: npt.NDArray[Any], b: npt.NDArray[Any], rrf_k: int) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    keys = np.concatenate([a, b])
    contrib = np.concatenate(
        [
            1.0 / (rrf_k + np.arange(1, a.size + 1, dtype=np.float64)),
            1.0 / (rrf_k + np.arange(1, b.size + 1, dtype=np.float64)),
        ]
    )
    uniq, inverse = np.unique(keys, return_inverse=True)
    fused = np.bincount(inverse.ravel(), weights=contrib, minlength=uniq.size).astype(np.float64)
    return uniq, fused


def _interpolated(
    sparse: npt.NDArray[np.float32], dense: npt.NDArray[np.float32], dense_weight: float
) -> npt.NDArray[np.float64]:
    return dense_weight * minmax(dense) + (1.0 - dense_weight) * minmax(sparse)


def fuse_rrf(a: Candidates, b: Candidates, *, k: int, rrf_k: int = 60) -> Candidates:
    """Return the top ``k`` of reciprocal rank fusion: ``sum 1 / (rrf_k + rank)`` over the lists.

    Cormack, Clarke and Buettcher (SIGIR 2009); ranks start at 1; a document missing from a list
    gets nothing from it.
    """
    uniq, fused = _rrf(a.slots, b.slots, rrf_k)
    slots, scores = _top(uniq.astype(np.int64), fused, k)
    return Candidates(slots, scores)


def fuse_rrf_ids(a: Retrieved, b: Retrieved, *, k: int, rrf_k: int = 60) -> Retrieved:
    """Return the top ``k`` of reciprocal rank fusion of two first stages' lists, by id; see :func:`fuse_rrf`."""
    uniq, fused = _rrf(_ids(a.doc_ids), _ids(b.doc_ids), rrf_k)
    ids, scores = _top(uniq, fused, k)
    return Retrieved(tuple(str(i) for i in ids), scores)


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
    out, scores = _top(slots, _interpolated(sparse, dense, dense_weight), k)
    return Candidates(out, scores)


def fuse_interpolate_ids(
    doc_ids: npt.NDArray[np.object_] | tuple[str, ...],
    first: npt.NDArray[np.float32],
    second: npt.NDArray[np.float32],
    *,
    k: int,
    second_weight: float = 0.5,
) -> Retrieved:
    """Return the top ``k`` of ``second_weight * minmax(second) + (1 - second_weight) * minmax(first)``, by id.

    The same formula as :func:`fuse_interpolate`, over the union of two first stages' lists.
    """
    ids, scores = _top(_ids(doc_ids), _interpolated(first, second, second_weight), k)
    return Retrieved(tuple(str(i) for i in ids), scores)


def _ids(doc_ids: Any) -> npt.NDArray[np.object_]:
    """Return ids as an object array: numpy's fixed-width strings would drop trailing NUL characters."""
    out = np.empty(len(doc_ids), dtype=object)
    out[:] = list(doc_ids)
    return out
