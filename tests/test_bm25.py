"""BM25: reference scores on five real test collections, and differential checks against other implementations."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import beir
from crossrank.io import read_beir_corpus, read_beir_queries, read_qrels
from crossrank.retrieve.bm25 import BM25Index, BM25Settings, BM25Tokenizer, build_bm25
from crossrank.retrieve.index import Index, WriteReport

# nDCG@10 of Anserini-style BM25 (k1=0.9, b=0.4, Porter) on these exact files: ../shared/data/SOURCES.md
REFERENCE = {"nfcorpus-preproc": 0.3285, "cranfield": 0.352, "cisi": 0.358, "cacm": 0.466, "vaswani": 0.438}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_bm25_reproduces_reference_ndcg(name: str, tmp_path: Path) -> None:
    import ir_measures
    from ir_measures import nDCG

    folder = beir(name)
    queries = read_beir_queries(folder / "queries.jsonl")
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    qids = [q for q in queries if q in qrels]
    report = WriteReport()
    index = Index.build(tmp_path / "idx", folder, retriever="bm25", on_error="skip", report=report)
    # Cranfield holds two records with neither title nor text; nothing else is skipped anywhere
    assert dict(report.corpus.skipped) == ({"empty document": 2} if name == "cranfield" else {})
    cands = index.retrieve([queries[q] for q in qids], k=1000)
    run = [
        ir_measures.ScoredDoc(q, d, float(s))
        for q, c in zip(qids, cands, strict=True)
        for d, s in zip(index.doc_ids(c.slots), c.scores, strict=True)
    ]
    judged = [ir_measures.Qrel(q, d, g) for q in qids for d, g in qrels[q].items()]
    got = ir_measures.calc_aggregate([nDCG @ 10], judged, run)[nDCG @ 10]
    assert got == pytest.approx(REFERENCE[name], abs=0.01), f"{name}: nDCG@10 {got:.4f} vs reference {REFERENCE[name]}"


def _cisi_tokens(n_docs: int = 600) -> tuple[list[str], BM25Tokenizer, np.ndarray, np.ndarray, list[str]]:
    folder = beir("cisi")
    corpus = list(read_beir_corpus(folder / "corpus.jsonl").values())[:n_docs]
    texts = [f"{d['title']} {d['text']}".strip() for d in corpus]
    tok = BM25Tokenizer(BM25Settings())
    flat, lengths = tok.documents(texts)
    queries = list(read_beir_queries(folder / "queries.jsonl").values())[:25]
    return texts, tok, flat, lengths, queries


def test_lucene_scores_equal_the_textbook_formula(tmp_path: Path) -> None:
    """Every document's score for 25 real queries equals Lucene's BM25 computed term by term here."""
    _, tok, flat, lengths, queries = _cisi_tokens()
    s = BM25Settings()
    build_bm25([(flat, lengths)], num_terms=tok.vocab_size, settings=s, folder=tmp_path / "bm25")
    index = BM25Index(tmp_path / "bm25", tok)
    docs = np.split(flat, np.cumsum(lengths)[:-1])
    tfs = [Counter(d.tolist()) for d in docs]
    n, avgdl = len(docs), float(lengths.mean())
    df = Counter(t for tf in tfs for t in tf)
    for q_ids in tok.queries(queries):
        got = index.model.get_scores_from_ids(q_ids) if q_ids else np.zeros(n)
        want = np.zeros(n)
        for t in q_ids:  # a repeated query term counts again, as in Lucene's BooleanQuery of term clauses
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            for i, tf in enumerate(tfs):
                if t in tf:
                    want[i] += idf * tf[t] / (tf[t] + s.k1 * (1 - s.b + s.b * lengths[i] / avgdl))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_okapi_scores_equal_rank_bm25(tmp_path: Path) -> None:
    """Differential test against rank_bm25's BM25Okapi on the same tokens (Robertson idf, ATIRE tf)."""
    from rank_bm25 import BM25Okapi

    _, tok, flat, lengths, queries = _cisi_tokens()
    s = BM25Settings(k1=1.2, b=0.75, method="atire", idf="robertson")
    build_bm25([(flat, lengths)], num_terms=tok.vocab_size, settings=s, folder=tmp_path / "bm25")
    index = BM25Index(tmp_path / "bm25", tok)
    docs = [[str(t) for t in d.tolist()] for d in np.split(flat, np.cumsum(lengths)[:-1])]
    ref = BM25Okapi(docs, k1=1.2, b=0.75, epsilon=0.0)  # epsilon 0: a negative idf counts as 0, as in bm25s
    for q_ids in tok.queries(queries):
        if not q_ids:
            continue
        got = index.model.get_scores_from_ids(q_ids)
        want = ref.get_scores([str(t) for t in q_ids])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_chunked_builder_equals_bm25s_own_builder(tmp_path: Path) -> None:
    """crossrank builds the matrix in chunks with numpy; bm25s's own index() must give the same matrix."""
    import bm25s

    _, tok, flat, lengths, _ = _cisi_tokens()
    s = BM25Settings()
    # three uneven chunks, read twice by the builder
    cuts = [0, 100, 101, 450, lengths.size]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    chunks = [(flat[offsets[a] : offsets[b]], lengths[a:b]) for a, b in itertools.pairwise(cuts)]
    build_bm25(chunks, num_terms=tok.vocab_size, settings=s, folder=tmp_path / "ours")
    ours = bm25s.BM25.load(str(tmp_path / "ours"))
    theirs = bm25s.BM25(k1=s.k1, b=s.b, method=s.method)
    ids = [d.tolist() for d in np.split(flat, np.cumsum(lengths)[:-1])]
    vocab = {str(i): i for i in range(tok.vocab_size)}
    theirs.index((ids, vocab), show_progress=False, create_empty_token=False)
    for key in ("indptr", "indices"):
        np.testing.assert_array_equal(np.asarray(ours.scores[key]), np.asarray(theirs.scores[key]))
    np.testing.assert_allclose(np.asarray(ours.scores["data"]), np.asarray(theirs.scores["data"]), rtol=1e-6)


def test_settings_are_checked() -> None:
    from crossrank.errors import ConfigError

    with pytest.raises(ConfigError, match="method"):
        BM25Settings(method="okapi")
    with pytest.raises(ConfigError, match="k1"):
        BM25Settings(b=2.0)
    with pytest.raises(ConfigError, match="stemmer"):
        BM25Tokenizer(BM25Settings(stemmer="klingon"))
    with pytest.raises(ConfigError, match="unknown BM25 settings"):
        BM25Settings.from_dict({"k1": 1.0, "kone": 2})
