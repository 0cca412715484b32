"""First stages: BM25 and dense search over an index's segments, and hybrid fusion of any two first stages.

:class:`BM25Retriever` and :class:`DenseRetriever` search an :class:`~crossrank.retrieve.index.Index`
(``index.first_stage("bm25")``); they always search the generation the index object has open, so
documents it deleted are never returned. :class:`Hybrid` fuses any two
:class:`~crossrank.retrieve.protocols.FirstStage` objects by reciprocal rank fusion or score
interpolation; over two first stages of one index it fuses by slot, exactly as the index always has.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from crossrank.errors import ConfigError
from crossrank.retrieve.bm25 import BM25Index, BM25Settings, BM25Tokenizer
from crossrank.retrieve.fusion import Candidates, fuse_interpolate, fuse_interpolate_ids, fuse_rrf, fuse_rrf_ids
from crossrank.retrieve.index_files import IndexDamagedError, check_bm25_matrix, load_bm25_rows, reading
from crossrank.retrieve.manifest import FUSIONS, Manifest, SegmentInfo
from crossrank.retrieve.protocols import FirstStage, Retrieved, check_request
from crossrank.retrieve.vectors import VectorReader

if TYPE_CHECKING:
    from crossrank.retrieve.index import Index

__all__ = ["BM25Retriever", "DenseRetriever", "Hybrid", "open_bm25", "open_vectors"]

Fusion = Literal["rrf", "interpolate"]
#: candidates each first stage gives a hybrid, at least (more when ``k`` is larger)
HYBRID_POOL = 100


class _IndexStage:
    """What the index's own first stages share: they search by slot and return ids at the end."""

    name = ""

    def __init__(self, index: Index) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.index!r})"

    def retrieve(self, queries: Sequence[str], k: int) -> list[Retrieved]:
        """Return each query's top ``k`` documents (ids and scores, best first).

        Raises:
            InputError: ``queries`` is one string, or ``k`` < 1.
        """
        check_request(queries, k)
        return self.index._with_ids(self._slot_retrieve(queries, k))

    def _slot_retrieve(self, queries: Sequence[str], k: int) -> list[Candidates]:
        return self._search(queries, k, self._prepare(queries))

    def _prepare(self, queries: Sequence[str]) -> Any:
        """Return what the queries' searches and scorings share (the dense query vectors)."""
        return None

    def _search(self, queries: Sequence[str], k: int, prepared: Any) -> list[Candidates]:
        raise NotImplementedError

    def _scores_of(
        self, queries: Sequence[str], qi: int, slots: npt.NDArray[np.int64], prepared: Any
    ) -> npt.NDArray[np.float32]:
        """Return query ``qi``'s score of each of ``slots`` (live slots, ascending)."""
        raise NotImplementedError


class BM25Retriever(_IndexStage):
    """BM25 over an index's live documents.

    Example:
        >>> bm25 = Index.open("my-index").first_stage("bm25")  # doctest: +SKIP
        >>> bm25.retrieve(["what is a cat"], k=10)[0].doc_ids  # doctest: +SKIP
    """

    name = "bm25"

    def _search(self, queries: Sequence[str], k: int, prepared: Any) -> list[Candidates]:
        bm25, rows = self.index._bm25, self.index._bm25_rows
        assert bm25 is not None and rows is not None
        return [Candidates(rows[r], scores) for r, scores in bm25.search(queries, k)]

    def _scores_of(
        self, queries: Sequence[str], qi: int, slots: npt.NDArray[np.int64], prepared: Any
    ) -> npt.NDArray[np.float32]:
        bm25, bm25_rows = self.index._bm25, self.index._bm25_rows
        assert bm25 is not None and bm25_rows is not None
        ids = bm25.tokenizer.queries([queries[qi]])[0]
        if not ids:
            return np.zeros(slots.size, np.float32)
        all_scores = bm25.model.get_scores_from_ids(ids)
        rows = np.searchsorted(bm25_rows, slots)  # bm25 rows are the live slots, ascending
        return np.asarray(all_scores[rows], dtype=np.float32)


class DenseRetriever(_IndexStage):
    """Dot products of the query's vector with an index's live document vectors (exact or HNSW per segment).

    Example:
        >>> dense = Index.open("my-index").first_stage("dense")  # doctest: +SKIP
        >>> dense.retrieve(["what is a cat"], k=10)[0].scores  # doctest: +SKIP
    """

    name = "dense"

    def _prepare(self, queries: Sequence[str]) -> npt.NDArray[np.float32]:
        encoder = self.index.encoder
        assert encoder is not None
        return encoder.encode_queries(list(queries))

    def _search(self, queries: Sequence[str], k: int, prepared: Any) -> list[Candidates]:
        index, qv = self.index, prepared
        all_slots, all_scores = [], []
        for seg, reader in zip(index.segments, index._vectors, strict=True):
            rows, scores = reader.search(qv, k, index.live[seg.start : seg.start + seg.count])
            all_slots.append(rows + seg.start)
            all_scores.append(scores)
        slots = np.concatenate(all_slots, axis=1)
        scores = np.concatenate(all_scores, axis=1)
        out = []
        for qi in range(len(queries)):
            keep = np.isfinite(scores[qi])
            s, sc = slots[qi][keep], scores[qi][keep]
            order = np.lexsort((s, -sc))[:k]
            out.append(Candidates(s[order], sc[order]))
        return out

    def _scores_of(
        self, queries: Sequence[str], qi: int, slots: npt.NDArray[np.int64], prepared: Any
    ) -> npt.NDArray[np.float32]:
        index, qv = self.index, prepared[qi : qi + 1]
        starts = index._store.starts
        out = np.zeros(slots.size, np.float32)
        seg_of = np.searchsorted(starts, slots, side="right") - 1
        for si in np.unique(seg_of).tolist():
            pos = np.flatnonzero(seg_of == si)
            rows = (slots[pos] - starts[si])[None, :]
            out[pos] = index._vectors[si].dot(qv, rows)[0]
        return out


class Hybrid:
    """Fuses two first stages: reciprocal rank fusion, or interpolation of min-max-normalised scores.

    Each stage gives ``max(k, pool)`` candidates a query. With ``fusion="interpolate"`` the fused
    score is ``second_weight * minmax(second) + (1 - second_weight) * minmax(first)`` over the
    union of the two lists; a document one stage did not return gets that stage's lowest score for
    the query (two stages of one index score every candidate exactly instead, as the index does).

    Args:
        first: a first stage (for an index's hybrid: BM25).
        second: another first stage (for an index's hybrid: dense).
        fusion: ``"rrf"`` or ``"interpolate"``.
        rrf_k: the constant of reciprocal rank fusion.
        second_weight: the second stage's share of interpolated scores.
        pool: candidates each stage gives, at least.

    Raises:
        ConfigError: a setting is not allowed.

    Example:
        >>> from crossrank.retrieve.testing import DictFirstStage
        >>> a = DictFirstStage({"d1": "cats purr", "d2": "dogs bark"})
        >>> b = DictFirstStage({"d2": "dogs bark loudly", "d3": "cats and dogs"})
        >>> Hybrid(a, b).retrieve(["dogs"], k=3)[0].doc_ids
        ('d2', 'd3')
    """

    name = "hybrid"

    def __init__(
        self,
        first: FirstStage,
        second: FirstStage,
        *,
        fusion: Fusion = "rrf",
        rrf_k: int = 60,
        second_weight: float = 0.5,
        pool: int = HYBRID_POOL,
    ) -> None:
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be 'rrf' or 'interpolate' (got {fusion!r})")
        if not 0.0 <= second_weight <= 1.0:
            raise ConfigError(f"second_weight must be within [0, 1] (got {second_weight})")
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
            raise ConfigError(f"rrf_k must be a whole number >= 0 (got {rrf_k!r})")
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ConfigError(f"pool must be a whole number >= 1 (got {pool!r})")
        self.first, self.second = first, second
        self.fusion: Fusion = fusion
        self.rrf_k, self.second_weight, self.pool = rrf_k, second_weight, pool

    def __repr__(self) -> str:
        return f"Hybrid({self.first!r}, {self.second!r}, fusion={self.fusion!r})"

    def retrieve(self, queries: Sequence[str], k: int) -> list[Retrieved]:
        """Return each query's top ``k`` of the fused lists (ids and fused scores, best first).

        Raises:
            InputError: ``queries`` is one string, or ``k`` < 1.
        """
        check_request(queries, k)
        index = self._one_index()
        if index is not None:
            return index._with_ids(self._slot_retrieve(queries, k))
        pool = max(k, self.pool)
        firsts, seconds = self.first.retrieve(queries, pool), self.second.retrieve(queries, pool)
        if self.fusion == "rrf":
            return [fuse_rrf_ids(a, b, k=k, rrf_k=self.rrf_k) for a, b in zip(firsts, seconds, strict=True)]
        return [self._interpolate(a, b, k) for a, b in zip(firsts, seconds, strict=True)]

    def _interpolate(self, a: Retrieved, b: Retrieved, k: int) -> Retrieved:
        union = tuple(dict.fromkeys((*a.doc_ids, *b.doc_ids)))
        return fuse_interpolate_ids(
            union, _scores_over(a, union), _scores_over(b, union), k=k, second_weight=self.second_weight
        )

    def _one_index(self) -> Index | None:
        """Return the index both stages search, when they search the same one (then fusion is by slot)."""
        a, b = self.first, self.second
        if isinstance(a, _IndexStage) and isinstance(b, _IndexStage) and a.index is b.index:
            return a.index
        return None

    def _slot_retrieve(self, queries: Sequence[str], k: int) -> list[Candidates]:
        a, b = self.first, self.second
        assert isinstance(a, _IndexStage) and isinstance(b, _IndexStage)
        pool = max(k, self.pool)
        prep_a = a._prepare(queries)
        sparse = a._search(queries, pool, prep_a)
        prep_b = b._prepare(queries)
        dense = b._search(queries, pool, prep_b)
        if self.fusion == "rrf":
            return [fuse_rrf(s, d, k=k, rrf_k=self.rrf_k) for s, d in zip(sparse, dense, strict=True)]
        out = []
        for qi, (s, d) in enumerate(zip(sparse, dense, strict=True)):
            union = np.union1d(s.slots, d.slots)
            out.append(
                fuse_interpolate(
                    union,
                    a._scores_of(queries, qi, union, prep_a),
                    b._scores_of(queries, qi, union, prep_b),
                    k=k,
                    dense_weight=self.second_weight,
                )
            )
        return out


def _scores_over(found: Retrieved, ids: tuple[str, ...]) -> npt.NDArray[np.float32]:
    """Return ``found``'s score of each of ``ids``; an id it did not return gets its lowest score (0 when empty)."""
    floor = float(found.scores.min()) if len(found) else 0.0
    by_id = dict(zip(found.doc_ids, found.scores.tolist(), strict=True))
    return np.array([by_id.get(i, floor) for i in ids], dtype=np.float32)


# ---------------------------------------------------------------------- opening a generation's search files


def bm25_settings(folder: Path, manifest: Manifest) -> BM25Settings | None:
    """Return the generation's BM25 settings, or ``None`` without BM25."""
    with reading(folder, f"{manifest.generation}/manifest.json"):
        return BM25Settings.from_dict(dict(manifest.bm25)) if manifest.bm25 is not None else None


def open_bm25(
    folder: Path, manifest: Manifest, settings: BM25Settings, live: npt.NDArray[np.bool_], threads: int
) -> tuple[BM25Index, npt.NDArray[np.int64]]:
    """Open a generation's BM25 index (vocabulary, matrix, rows), checked against the manifest and ``live``."""
    gen = str(manifest.generation)
    assert manifest.counts is not None
    bm25_terms = manifest.counts.bm25_terms
    with reading(folder, f"{gen}/vocab.json"):
        tokenizer = BM25Tokenizer(settings, folder / gen / "vocab.json")
        terms = tokenizer.vocab_size
    if terms != bm25_terms:
        raise IndexDamagedError(folder, f"{gen}/vocab.json", f"holds {terms} terms; the manifest counts {bm25_terms}")
    with reading(folder, f"{gen}/bm25"):
        bm25 = BM25Index(folder / gen / "bm25", tokenizer, threads=threads)
    check_bm25_matrix(folder, gen, bm25.model.scores, manifest.documents, terms)
    return bm25, load_bm25_rows(folder, gen, live)


def open_vectors(folder: Path, manifest: Manifest, segments: Sequence[SegmentInfo]) -> list[VectorReader]:
    """Open each segment's vectors (or HNSW graph), checked against the manifest."""
    dense = manifest.dense
    assert dense is not None
    out = []
    for seg in segments:
        file = f"segments/{seg.name}/" + ("hnsw.usearch" if seg.hnsw else "vectors.bin")
        with reading(folder, file):
            reader = VectorReader(
                folder / "segments" / seg.name,
                seg.count,
                int(dense["fingerprint"]["dim"]),
                dense["dtype"],
                hnsw=seg.hnsw,
                expansion_search=int(dense["hnsw"]["expansion_search"]),
            )
        if reader.hnsw is not None and len(reader.hnsw) != seg.count:
            raise IndexDamagedError(folder, file, f"holds {len(reader.hnsw)} vectors; the segment has {seg.count}")
        out.append(reader)
    return out
