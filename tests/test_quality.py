"""Quality on real data: the default model reranking the BM25 top-100 of TREC DL 2019."""

from __future__ import annotations

from pathlib import Path

import ir_measures
import numpy as np
import pytest
from ir_measures import nDCG

from crossrank import CrossEncoder
from crossrank.io import read_beir_corpus, read_beir_queries, read_qrels, read_trec_run

pytestmark = pytest.mark.slow


def _ndcg10(ce: CrossEncoder, dl19: Path) -> float:
    corpus = read_beir_corpus(dl19 / "corpus.jsonl")
    queries = read_beir_queries(dl19 / "queries.jsonl")
    run = read_trec_run(dl19 / "runs" / "bm25.top100.trec")
    qids = [q for q in run if q in queries]
    assert len(qids) == 43
    rankings = ce.rerank_many(
        [queries[q] for q in qids], [[corpus[d] for d, _ in run[q][:100]] for q in qids], query_ids=qids
    )
    assert sum(len(r) for r in rankings) == 4300
    qrels = [
        ir_measures.Qrel(q, d, g)
        for q, docs in read_qrels(dl19 / "qrels" / "test.tsv").items()
        for d, g in docs.items()
    ]
    scored = [ir_measures.ScoredDoc(r.query_id, h.doc_id, h.score) for r in rankings for h in r.hits]
    return float(ir_measures.calc_aggregate([nDCG @ 10], qrels, scored)[nDCG @ 10])


def test_bm25_alone_matches_reference(dl19: Path) -> None:
    run = ir_measures.read_trec_run(str(dl19 / "runs" / "bm25.top100.trec"))
    qrels = [
        ir_measures.Qrel(q, d, g)
        for q, docs in read_qrels(dl19 / "qrels" / "test.tsv").items()
        for d, g in docs.items()
    ]
    value = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    assert round(value, 4) == 0.5058


def test_default_model_reranks_dl19_above_072(default_model: CrossEncoder, dl19: Path) -> None:
    assert _ndcg10(default_model, dl19) >= 0.72


def test_converted_fp32_model_reranks_dl19_above_072(fp32_folder: Path, dl19: Path) -> None:
    assert _ndcg10(CrossEncoder(fp32_folder, backend="torch"), dl19) >= 0.72


def test_converted_folder_loads_in_sentence_transformers(fp32_folder: Path, default_model: CrossEncoder) -> None:
    from sentence_transformers import CrossEncoder as STCrossEncoder

    pairs = [
        ("how long do cats live", "Indoor cats live 12 to 18 years on average."),
        ("how long do cats live", "The Eiffel Tower is in Paris."),
        ("define photosynthesis", "Photosynthesis is how plants turn light into chemical energy."),
    ]
    st = STCrossEncoder(str(fp32_folder), device="cpu")
    st_scores = st.predict(pairs, convert_to_numpy=True)
    ours = CrossEncoder(fp32_folder, backend="torch").score(pairs)
    np.testing.assert_allclose(ours, st_scores, atol=1e-4)
    # the int8 default agrees with its fp32 twin on these pairs' order and roughly on values
    assert np.argsort(default_model.score(pairs)).tolist() == np.argsort(ours).tolist()
    assert np.abs(default_model.score(pairs) - ours).max() < 0.05
