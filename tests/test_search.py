"""The two-stage pipeline and the index/search command line, on a real hybrid index of CISI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crossrank import CrossEncoder, ScoringConfig
from crossrank.errors import InputError
from crossrank.io import read_trec_run
from crossrank.pipeline import Pipeline
from crossrank.retrieve.fusion import Candidates, fuse_interpolate, fuse_rrf
from crossrank.retrieve.index import Index
from test_cli import crossrank

QUERY = "the use of computers in libraries"


def test_pipeline_reranks_the_first_stage_top_depth(hybrid_index: Index, default_model: CrossEncoder) -> None:
    pipe = Pipeline(hybrid_index, reranker=default_model)
    result = pipe.search(QUERY, k=5, depth=30)
    assert len(result.hits) == 5 and result.reranked and result.depth == 30 and result.retriever == "hybrid"
    assert set(result.timings_ms) == {"first_stage", "fetch", "rerank", "total"}
    assert result.timings_ms["rerank"] > 0 and result.timings_ms["total"] >= result.timings_ms["rerank"]

    first = hybrid_index.retrieve([QUERY], k=30)[0]
    first_ids = hybrid_index.doc_ids(first.slots)
    records = hybrid_index.documents(first.slots)
    want = default_model.rerank(QUERY, records, k=5)
    assert result.doc_ids() == want.doc_ids()
    for rank, (hit, ref) in enumerate(zip(result.hits, want.hits, strict=True), start=1):
        assert (
            hit.rank == rank
            and hit.rerank_score == pytest.approx(ref.score, abs=1e-6)
            and hit.score == hit.rerank_score
        )
        # both stages' ranks and scores
        assert first_ids[hit.first_stage_rank - 1] == hit.doc_id
        assert hit.first_stage_score == pytest.approx(float(first.scores[hit.first_stage_rank - 1]))
        assert hit.document["id"] == hit.doc_id and hit.document["text"]
    assert [h.rerank_score for h in result.hits] == sorted((h.rerank_score for h in result.hits), reverse=True)


def test_rerank_off_batches_and_retriever_choice(hybrid_index: Index, default_model: CrossEncoder) -> None:
    pipe = Pipeline(hybrid_index, reranker=default_model)
    plain = pipe.search(QUERY, k=8, rerank=False)
    assert not plain.reranked and plain.timings_ms["rerank"] == 0
    assert [h.first_stage_rank for h in plain.hits] == list(range(1, 9))
    assert all(h.rerank_score is None for h in plain.hits)

    queries = {"q1": QUERY, "q2": "citation analysis of scientific journals", "q3": "classification of books"}
    batch = pipe.search_many(queries, k=4, depth=20, retriever="bm25")
    assert [r.query_id for r in batch] == ["q1", "q2", "q3"]
    for r in batch:
        single = pipe.search(r.query, k=4, depth=20, retriever="bm25")
        assert r.doc_ids() == single.doc_ids() and r.retriever == "bm25"
        np.testing.assert_allclose([h.score for h in r.hits], [h.score for h in single.hits], atol=1e-6)
    # rerank_weight 0 keeps the first stage's order, 1 the cross-encoder's; both scores stay on the hits
    kept = pipe.search(QUERY, k=10, depth=10, rerank_weight=0.0)
    assert [h.first_stage_rank for h in kept.hits] == list(range(1, 11))
    assert all(h.rerank_score is not None for h in kept.hits)
    norm = lambda x: (x - x.min()) / (x.max() - x.min())  # noqa: E731
    # the default blend takes the cross-encoder's probability as it is; "minmax" stretches it per query
    for mode in ("probability", "minmax"):
        half = pipe.search(QUERY, k=10, depth=10, rerank_weight=0.5, blend=mode)  # type: ignore[arg-type]
        ce = np.array([h.rerank_score for h in half.hits])
        fs = np.array([h.first_stage_score for h in half.hits])
        assert ((ce >= 0) & (ce <= 1)).all()
        expected = 0.5 * (ce if mode == "probability" else norm(ce)) + 0.5 * norm(fs)
        np.testing.assert_allclose([h.score for h in half.hits], expected, atol=1e-6)
        assert [h.score for h in half.hits] == sorted((h.score for h in half.hits), reverse=True)
    assert [h.score for h in pipe.search(QUERY, k=10, depth=10, rerank_weight=0.5).hits] == pytest.approx(
        [h.score for h in pipe.search(QUERY, k=10, depth=10, rerank_weight=0.5, blend="probability").hits]
    )
    # on raw logits the probability is their sigmoid
    raw = CrossEncoder("default", config=ScoringConfig(activation="none"), calibration=None)
    logits = Pipeline(hybrid_index, reranker=raw).search(QUERY, k=10, depth=10, rerank_weight=0.5)
    z = np.array([h.rerank_score for h in logits.hits])
    fs = np.array([h.first_stage_score for h in logits.hits])
    np.testing.assert_allclose([h.score for h in logits.hits], 0.5 / (1 + np.exp(-z)) + 0.5 * norm(fs), atol=1e-5)
    with pytest.raises(InputError, match="rerank_weight"):
        pipe.search(QUERY, rerank_weight=1.5)
    with pytest.raises(InputError, match=r"blend must be one of \('probability', 'minmax'\)"):
        pipe.search(QUERY, rerank_weight=0.5, blend="zscore")  # type: ignore[arg-type]
    dense = pipe.search(QUERY, k=4, depth=20, retriever="dense")
    assert dense.retriever == "dense"
    with pytest.raises(InputError, match="empty"):
        pipe.search("   ")
    with pytest.raises(InputError, match="k and depth"):
        pipe.search(QUERY, k=0)


def test_fusion_arithmetic() -> None:
    a = Candidates(np.array([5, 7, 9]), np.array([3.0, 2.0, 1.0], np.float32))
    b = Candidates(np.array([9, 5]), np.array([0.9, 0.8], np.float32))
    fused = fuse_rrf(a, b, k=3, rrf_k=60)
    # 5: 1/61 + 1/62; 9: 1/63 + 1/61; 7: 1/62
    assert fused.slots.tolist() == [5, 9, 7]
    np.testing.assert_allclose(fused.scores, [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62], rtol=1e-6)
    mixed = fuse_interpolate(
        np.array([1, 2, 3]), np.array([10.0, 5.0, 0.0], np.float32), np.array([0.2, 0.6, 0.4], np.float32), k=3
    )
    # minmax: sparse [1, .5, 0], dense [0, 1, .5] -> 0.5 * each: [.5, .75, .25]
    assert mixed.slots.tolist() == [2, 1, 3]
    np.testing.assert_allclose(mixed.scores, [0.75, 0.5, 0.25], rtol=1e-6)


def test_interpolation_uses_each_stages_real_scores(hybrid_index: Index) -> None:
    fused = hybrid_index.retrieve([QUERY], k=10, retriever="hybrid", fusion="interpolate", dense_weight=1.0)[0]
    dense = hybrid_index.retrieve([QUERY], k=10, retriever="dense")[0]
    assert fused.slots.tolist() == dense.slots.tolist()  # all weight on dense: the dense order
    sparse_only = hybrid_index.retrieve([QUERY], k=10, retriever="hybrid", fusion="interpolate", dense_weight=0.0)[0]
    assert sparse_only.slots.tolist() == hybrid_index.retrieve([QUERY], k=10, retriever="bm25")[0].slots.tolist()


def test_cli_index_and_search(cisi_slice: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    res = crossrank("index", "build", "--corpus", str(cisi_slice), "--index", str(idx), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["documents"] == 300
    info = json.loads(crossrank("index", "info", "--index", str(idx)).stdout)
    assert info["retriever"] == "bm25" and info["counts"]["documents"] == 300 and info["bytes_on_disk"] > 0

    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "new-1", "text": "zeppelin airship library"}) + "\n", encoding="utf-8")
    res = crossrank("index", "add", "--corpus", str(extra), "--index", str(idx), "--no-progress")
    assert res.returncode == 0 and json.loads(res.stdout)["documents"] == 301
    res = crossrank("index", "add", "--corpus", str(extra), "--index", str(idx), "--no-progress")
    assert res.returncode == 2 and "already in the index" in res.stderr and "Traceback" not in res.stderr
    res = crossrank("index", "add", "--corpus", str(extra), "--index", str(idx), "--max-segments", "-1")
    assert res.returncode == 2 and "--max-segments must be >= 0" in res.stderr
    res = crossrank("index", "delete", "--index", str(idx), "new-1", "1")
    assert res.returncode == 0 and json.loads(res.stdout)["documents"] == 299
    res = crossrank("index", "compact", "--index", str(idx), "--no-progress")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["documents"] == 299 and out["segments"] == {"before": 2, "after": 1} and out["report"]["purged"] == 2
    assert out["bytes_on_disk"]["after"] < out["bytes_on_disk"]["before"]

    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in [("a", QUERY), ("b", "indexing languages")]),
        encoding="utf-8",
    )
    run = tmp_path / "run.trec"
    res = crossrank(
        "search", "--index", str(idx), "--queries", str(queries), "--k", "10", "--depth", "20", "--output", str(run)
    )
    assert res.returncode == 0, res.stderr
    got = read_trec_run(run)
    assert set(got) == {"a", "b"} and all(len(v) == 10 for v in got.values())
    plain = tmp_path / "plain.trec"
    res = crossrank("search", "--index", str(idx), "--queries", str(queries), "--no-rerank", "--output", str(plain))
    assert res.returncode == 0 and read_trec_run(plain) != got

    res = crossrank("search", "--index", str(idx), QUERY, "--k", "3", "--depth", "10")
    assert res.returncode == 0 and "rerank of top 10" in res.stdout and "first stage" in res.stdout
    res = crossrank("search", "--index", str(idx), QUERY, "--k", "3", "--format", "jsonl", "--no-rerank")
    assert [h["first_stage_rank"] for h in json.loads(res.stdout)["hits"]] == [1, 2, 3]
    res = crossrank("search", "--index", str(idx), QUERY, "--retriever", "dense")
    assert res.returncode == 2 and "cannot run retriever 'dense'" in res.stderr
    res = crossrank("search", "--index", str(tmp_path / "missing"), QUERY)
    assert res.returncode == 2 and "no index" in res.stderr
