"""The contract every first stage keeps: ids unique, scores descending, ``k`` respected, deletes honoured.

It runs over the index's BM25, dense and hybrid first stages (both fusions), a hybrid of two
first stages that are not an index's, and the public fake :class:`DictFirstStage`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.errors import ConfigError, InputError
from crossrank.retrieve.index import Index
from crossrank.retrieve.protocols import DocumentStore, FirstStage, Retrieved
from crossrank.retrieve.retrievers import Hybrid
from crossrank.retrieve.testing import DictFirstStage

QUERIES = [
    "information retrieval systems evaluation",
    "library catalog classification",
    "citation analysis of scientific literature",
    "zzzz-nothing-matches-this",
]
STAGES = ["bm25", "dense", "hybrid-rrf", "hybrid-interpolate", "dict", "dict-hybrid"]


def _texts(corpus: Path) -> dict[str, str]:
    out = {}
    for line in corpus.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out[str(rec["_id"])] = f"{rec.get('title', '')} {rec['text']}"
    return out


def _make(kind: str, index: Index | None, texts: dict[str, str]) -> tuple[FirstStage, Callable[[list[str]], None]]:
    """Return a first stage of ``kind`` and how to delete documents from what it searches."""
    if kind in ("dict", "dict-hybrid"):
        docs = dict(texts)

        def forget(ids: list[str]) -> None:
            for i in ids:
                del docs[i]

        stage: FirstStage = DictFirstStage(docs)
        if kind == "dict-hybrid":
            halves = DictFirstStage(docs, name="again")  # the same documents, seen twice
            stage = Hybrid(stage, halves, fusion="interpolate", second_weight=0.3)
        return stage, forget
    assert index is not None
    name, _, fusion = kind.partition("-")
    return index.first_stage(name, fusion=fusion or None), lambda ids: index.delete(ids)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def shared_index(cisi_slice: Path, tmp_path_factory: pytest.TempPathFactory, remembering_encoder: Any) -> Index:
    folder = tmp_path_factory.mktemp("contract") / "idx"
    return Index.build(folder, cisi_slice, retriever="hybrid", dense_model=remembering_encoder)


def _check(found: list[Retrieved], queries: list[str], k: int) -> None:
    assert len(found) == len(queries)
    for r in found:
        assert isinstance(r, Retrieved) and len(r) <= k
        assert all(isinstance(i, str) for i in r.doc_ids)
        assert len(set(r.doc_ids)) == len(r.doc_ids), "ids must be unique"
        assert r.scores.dtype == np.float32 and r.scores.shape == (len(r),)
        assert np.all(np.diff(r.scores) <= 0), "scores must not rise"


@pytest.mark.parametrize("kind", STAGES)
def test_ids_unique_scores_descending_k_respected(kind: str, shared_index: Index, cisi_slice: Path) -> None:
    stage, _ = _make(kind, shared_index, _texts(cisi_slice))
    assert isinstance(stage, FirstStage)
    for k in (1, 7, 50, 400):
        found = stage.retrieve(QUERIES, k)
        _check(found, QUERIES, k)
        if k <= 50:  # the first query matches more documents than that, in every first stage
            assert len(found[0]) == k
    assert stage.retrieve([], 5) == []


@pytest.mark.parametrize("kind", STAGES)
def test_a_batch_answers_as_its_queries_alone(kind: str, shared_index: Index, cisi_slice: Path) -> None:
    stage, _ = _make(kind, shared_index, _texts(cisi_slice))
    batch = stage.retrieve(QUERIES, 10)
    for q, together in zip(QUERIES, batch, strict=True):
        alone = stage.retrieve([q], 10)[0]
        assert alone.doc_ids == together.doc_ids
        np.testing.assert_allclose(alone.scores, together.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", STAGES)
def test_bad_requests_are_refused(kind: str, shared_index: Index, cisi_slice: Path) -> None:
    stage, _ = _make(kind, shared_index, _texts(cisi_slice))
    with pytest.raises(InputError, match="list of queries"):
        stage.retrieve("one string", 5)  # type: ignore[arg-type]
    for k in (0, -1):
        with pytest.raises(InputError, match="k must be >= 1"):
            stage.retrieve(QUERIES, k)


@pytest.mark.parametrize("kind", STAGES)
def test_deleted_documents_never_come_back(
    kind: str, cisi_slice: Path, tmp_path: Path, remembering_encoder: Any
) -> None:
    index = None
    if not kind.startswith("dict"):
        index = Index.build(tmp_path / "idx", cisi_slice, retriever="hybrid", dense_model=remembering_encoder)
    stage, forget = _make(kind, index, _texts(cisi_slice))
    before = stage.retrieve(QUERIES[:3], 20)
    gone = sorted({r.doc_ids[0] for r in before} | set(before[0].doc_ids[1:4]))
    forget(gone)
    after = stage.retrieve(QUERIES[:3], 300)
    _check(after, QUERIES[:3], 300)
    for r in after:
        assert not set(r.doc_ids) & set(gone)
    if isinstance(stage, DocumentStore):
        assert stage.get(gone) == [None] * len(gone)


# ---------------------------------------------------------------------- the index's stages, as before


@pytest.mark.parametrize("retriever", ["bm25", "dense", "hybrid"])
@pytest.mark.parametrize("fusion", ["rrf", "interpolate"])
def test_index_first_stages_return_what_index_retrieve_returns(
    shared_index: Index, retriever: str, fusion: str
) -> None:
    slots = shared_index.retrieve(QUERIES, k=30, retriever=retriever, fusion=fusion)  # type: ignore[arg-type]
    ids = shared_index.first_stage(retriever, fusion=fusion).retrieve(QUERIES, 30)  # type: ignore[arg-type]
    for by_slot, by_id in zip(slots, ids, strict=True):
        assert by_id.doc_ids == tuple(shared_index.doc_ids(by_slot.slots))
        np.testing.assert_array_equal(by_id.scores, by_slot.scores)
    combined = Hybrid(
        shared_index.first_stage("bm25"),
        shared_index.first_stage("dense"),
        fusion=fusion,  # type: ignore[arg-type]
    ).retrieve(QUERIES, 30)
    hybrid = shared_index.first_stage("hybrid", fusion=fusion).retrieve(QUERIES, 30)  # type: ignore[arg-type]
    assert [r.doc_ids for r in combined] == [r.doc_ids for r in hybrid]


def test_hybrid_fuses_by_id_with_the_index_formula() -> None:
    a = Retrieved.of([("x", 3.0), ("y", 2.0), ("z", 1.0)])
    b = Retrieved.of([("z", 0.9), ("x", 0.8)])

    class Fixed:
        def __init__(self, r: Retrieved) -> None:
            self.r = r

        def retrieve(self, queries: list[str], k: int) -> list[Retrieved]:
            return [self.r for _ in queries]

    rrf = Hybrid(Fixed(a), Fixed(b)).retrieve(["q"], 3)[0]
    assert rrf.doc_ids == ("x", "z", "y")
    assert rrf.scores.tolist() == pytest.approx([1 / 61 + 1 / 62, 1 / 61 + 1 / 63, 1 / 62])
    tied = Hybrid(Fixed(Retrieved.of([("b", 2.0), ("a", 1.0)])), Fixed(Retrieved.of([("a", 2.0), ("b", 1.0)])))
    assert tied.retrieve(["q"], 2)[0].doc_ids == ("a", "b")  # equal fused scores: the smaller id first
    mixed = Hybrid(Fixed(a), Fixed(b), fusion="interpolate", second_weight=0.5).retrieve(["q"], 3)[0]
    # first: x 1, y .5, z 0; second: z 1, x 0, y (missing: its lowest, .8) 0
    assert mixed.doc_ids == ("x", "z", "y") and mixed.scores.tolist() == pytest.approx([0.5, 0.5, 0.25])
    with pytest.raises(ConfigError, match="fusion"):
        Hybrid(Fixed(a), Fixed(b), fusion="max")  # type: ignore[arg-type]


def test_index_is_a_document_store(shared_index: Index) -> None:
    assert isinstance(shared_index, DocumentStore)
    found = shared_index.first_stage("bm25").retrieve(QUERIES[:1], 3)[0]
    records = shared_index.get([*found.doc_ids, "no-such-id"])
    assert [r["id"] for r in records[:3] if r is not None] == list(found.doc_ids) and records[3] is None
