"""Dense vectors on disk: float32 or int8, memory-mapped; exact search, or HNSW through usearch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from crossrank._deps import require

__all__ = ["VectorDtype", "VectorReader", "VectorWriter", "build_hnsw"]

VectorDtype = Literal["float32", "int8"]

# rows scored per step by exact search: bounds the memory of a search over a big segment
_EXACT_CHUNK = 65536


class VectorWriter:
    """Append vectors to ``vectors.bin`` (and ``scales.bin`` for int8) in ``folder``.

    int8 vectors are scaled per vector (symmetric, ``max |x| -> 127``); the scale is kept so dot
    products come back in the original units.
    """

    def __init__(self, folder: Path, dim: int, dtype: VectorDtype) -> None:
        self.dim, self.dtype, self.count = dim, dtype, 0
        self._vec: BinaryIO = (folder / "vectors.bin").open("wb")
        self._scale: BinaryIO | None = (folder / "scales.bin").open("wb") if dtype == "int8" else None

    def append(self, vectors: npt.NDArray[np.float32]) -> None:
        """Append float32 vectors ``(n, dim)``."""
        if self.dtype == "int8":
            assert self._scale is not None
            scale = np.maximum(np.abs(vectors).max(axis=1), 1e-12) / 127.0
            q = np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8)
            self._vec.write(q.tobytes())
            self._scale.write(scale.astype(np.float32).tobytes())
        else:
            self._vec.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        self.count += int(vectors.shape[0])

    def close(self) -> None:
        """Flush and close the files."""
        for fh in (self._vec, self._scale):
            if fh is not None:
                fh.flush()
                fh.close()


class VectorReader:
    """The vectors of one segment, memory-mapped; exact search, or HNSW when the segment has one.

    Args:
        folder: the segment folder.
        count: rows.
        dim: vector size.
        dtype: ``"float32"`` or ``"int8"``.
        hnsw: whether ``hnsw.usearch`` exists for this segment.
        expansion_search: HNSW search breadth (higher: better recall, slower).
    """

    def __init__(
        self, folder: Path, count: int, dim: int, dtype: VectorDtype, *, hnsw: bool, expansion_search: int = 128
    ) -> None:
        self.count, self.dim, self.dtype = count, dim, dtype
        np_dtype = np.int8 if dtype == "int8" else np.float32
        self.vectors: npt.NDArray[Any] = (
            np.memmap(folder / "vectors.bin", dtype=np_dtype, mode="r", shape=(count, dim))
            if count
            else np.zeros((0, dim), np_dtype)
        )
        self.scales: npt.NDArray[np.float32] | None = None
        if dtype == "int8":
            self.scales = (
                np.memmap(folder / "scales.bin", dtype=np.float32, mode="r", shape=(count,))
                if count
                else np.zeros(0, np.float32)
            )
        self.hnsw: Any = None
        if hnsw:
            usearch = require("usearch.index", feature="HNSW search")
            self.hnsw = usearch.Index.restore(str(folder / "hnsw.usearch"), view=True)
            self.hnsw.expansion_search = expansion_search

    def dot(self, queries: npt.NDArray[np.float32], rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Return ``queries[i] . vector[rows[i, j]]`` for a ``(q, m)`` array of rows."""
        vecs = np.asarray(self.vectors[rows.ravel()], dtype=np.float32).reshape(*rows.shape, self.dim)
        out = np.einsum("qd,qmd->qm", queries, vecs).astype(np.float32)
        if self.scales is not None:
            out *= np.asarray(self.scales[rows.ravel()]).reshape(rows.shape)
        result: npt.NDArray[np.float32] = out
        return result

    def search(
        self, queries: npt.NDArray[np.float32], k: int, live: npt.NDArray[np.bool_], *, exact: bool = False
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Return the rows ``(q, k')`` and dot-product scores of each query's top ``k`` live vectors.

        Rows of deleted vectors never come back. Scores are exact dot products with the stored vectors,
        whether the candidates came from HNSW or from a full scan. ``k'`` may be less than ``k``.
        """
        n_live = int(live.sum())
        k = min(k, n_live)
        nq = queries.shape[0]
        if k <= 0:
            return np.zeros((nq, 0), np.int64), np.zeros((nq, 0), np.float32)
        if self.hnsw is not None and not exact:
            return self._search_hnsw(queries, k, live)
        best_s = np.full((nq, 0), -np.inf, np.float32)
        best_r = np.zeros((nq, 0), np.int64)
        for start in range(0, self.count, _EXACT_CHUNK):
            stop = min(start + _EXACT_CHUNK, self.count)
            block = np.asarray(self.vectors[start:stop], dtype=np.float32)
            s = queries @ block.T
            if self.scales is not None:
                s *= np.asarray(self.scales[start:stop])[None, :]
            s[:, ~live[start:stop]] = -np.inf
            rows = np.broadcast_to(np.arange(start, stop, dtype=np.int64), s.shape)
            best_s = np.concatenate([best_s, s], axis=1)
            best_r = np.concatenate([best_r, rows], axis=1)
            if best_s.shape[1] > k:
                part = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
                best_s = np.take_along_axis(best_s, part, axis=1)
                best_r = np.take_along_axis(best_r, part, axis=1)
        order = np.lexsort((best_r, -best_s), axis=1)
        return np.take_along_axis(best_r, order, axis=1), np.take_along_axis(best_s, order, axis=1)

    def _search_hnsw(
        self, queries: npt.NDArray[np.float32], k: int, live: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        # Ask for as many extra candidates as there are deleted vectors, so k live ones remain.
        want = min(self.count, k + int((~live).sum()))
        matches = self.hnsw.search(queries.astype(np.float32), want)
        keys = np.asarray(matches.keys, dtype=np.int64).reshape(queries.shape[0], -1)
        nq = queries.shape[0]
        rows_out = np.zeros((nq, k), np.int64)
        scores_out = np.full((nq, k), -np.inf, np.float32)
        valid = (keys >= 0) & (keys < self.count)
        safe = np.where(valid, keys, 0)
        ok = valid & live[safe]
        scores = np.where(ok, self.dot(queries, safe), -np.inf)
        order = np.lexsort((safe, -scores), axis=1)[:, :k]
        rows_out[:, : order.shape[1]] = np.take_along_axis(safe, order, axis=1)
        scores_out[:, : order.shape[1]] = np.take_along_axis(scores, order, axis=1)
        return rows_out, scores_out


def build_hnsw(
    reader: VectorReader,
    path: Path,
    *,
    connectivity: int = 16,
    expansion_add: int = 128,
    threads: int = 0,
    chunk: int = 65536,
) -> None:
    """Build an HNSW graph (usearch, inner product) over a segment's vectors and save it to ``path``."""
    usearch = require("usearch.index", feature="HNSW search")
    index = usearch.Index(
        ndim=reader.dim,
        metric="ip",
        dtype="i8" if reader.dtype == "int8" else "f32",
        connectivity=connectivity,
        expansion_add=expansion_add,
    )
    for start in range(0, reader.count, chunk):
        stop = min(start + chunk, reader.count)
        vecs = np.asarray(reader.vectors[start:stop], dtype=np.float32)
        if reader.scales is not None:  # usearch's i8 expects unit-range values; it quantizes itself
            vecs = vecs * np.asarray(reader.scales[start:stop])[:, None]
        index.add(np.arange(start, stop, dtype=np.uint64), vecs, threads=threads)
    index.save(str(path))
