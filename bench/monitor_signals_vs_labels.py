"""How well each label-free signal tracks what reranking did to a query, by the labels.

With the default model reranking the BM25 top 20 of TREC DL 2019, DL 2021 and CISI (BM25 over
all of CISI; its judged queries), this prints, per collection and pooled:

- nDCG@10 of BM25 and of the reranking over the same 20 candidates;
- each signal's Spearman correlation with the per-query change in nDCG@10 (reranked - BM25);
- the AUC of the verdict's per-query score (``top_score + score_std + 0.5 * rbo``, lower = worse)
  for "reranking hurt this query" (its nDCG@10 went down).

    python bench/monitor_signals_vs_labels.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

from crossrank import CrossEncoder, Pipeline
from crossrank.evaluate.metrics import evaluate
from crossrank.io import read_beir_queries, read_qrels, read_run_candidates
from crossrank.retrieve.index import Index
from crossrank.signals import QuerySignals

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CROSSRANK_SHARED", ROOT.parent / "shared")) / "data"
DEPTH = 20
SIGNALS = ("kendall_tau", "rbo", "displacement", "top_score", "margin", "score_std", "score_iqr", "query_words")

Row = tuple[str, QuerySignals, dict[str, float], dict[str, float]]  # qid, signals, first stage, reranked


def dl_rows(ce: CrossEncoder, name: str) -> list[Row]:
    folder = DATA / name
    cands = read_run_candidates(
        folder / "runs" / "bm25.top100.trec", folder / "queries.jsonl", folder / "corpus.jsonl", depth=DEPTH
    )
    rankings = ce.rerank_many(list(cands.queries), [list(d) for d in cands.documents])
    rows = []
    for qid, ranking in zip(cands.query_ids, rankings, strict=True):
        assert ranking.signals is not None
        first = {h.doc_id: float(-h.index) for h in ranking.hits}
        rows.append((qid, ranking.signals, first, {h.doc_id: h.score for h in ranking.hits}))
    return rows


def cisi_rows(ce: CrossEncoder, qrels: dict[str, dict[str, int]]) -> list[Row]:
    queries = {q: t for q, t in read_beir_queries(DATA / "cisi" / "queries.jsonl").items() if q in qrels}
    with tempfile.TemporaryDirectory() as tmp:
        index = Index.build(Path(tmp) / "cisi", DATA / "cisi" / "corpus.jsonl", retriever="bm25")
        results = Pipeline(index, reranker=ce).search_many(queries, k=DEPTH, depth=DEPTH)
    rows = []
    for qid, result in zip(queries, results, strict=True):
        assert result.signals is not None
        first = {h.doc_id: float(-h.first_stage_rank) for h in result.hits}
        rows.append((qid, result.signals, first, {h.doc_id: h.score for h in result.hits}))
    return rows


def auc(hurt: np.ndarray, score: np.ndarray) -> float:
    """AUC of ``-score`` for ``hurt`` (Mann-Whitney); 0.5 = no better than chance."""
    if hurt.all() or not hurt.any():
        return float("nan")
    return float(stats.mannwhitneyu(-score[hurt], -score[~hurt]).statistic / (hurt.sum() * (~hurt).sum()))


def main() -> None:
    ce = CrossEncoder("default")
    pooled_sig: list[QuerySignals] = []
    pooled_delta: list[float] = []
    for name in ("trec-dl-2019-passage", "trec-dl-2021-passage", "cisi"):
        qrels = read_qrels(DATA / name / "qrels" / "test.tsv")
        rows = cisi_rows(ce, qrels) if name == "cisi" else dl_rows(ce, name)
        rows = [r for r in rows if r[0] in qrels]
        ev = evaluate(
            qrels,
            {"bm25": {q: f for q, _, f, _ in rows}, "ce": {q: c for q, _, _, c in rows}},
            "nDCG@10",
            missing="zero",
        )
        base, reranked = ev.per_query["bm25"]["nDCG@10"], ev.per_query["ce"]["nDCG@10"]
        qids = [q for q, *_ in rows if q in base and q in reranked]
        delta = np.array([reranked[q] - base[q] for q in qids])
        sigs = [s for q, s, *_ in rows if q in base and q in reranked]
        print(
            f"{name}: {len(qids)} judged queries, nDCG@10 BM25 {np.mean([base[q] for q in qids]):.4f} -> "
            f"reranked {np.mean([reranked[q] for q in qids]):.4f}; hurt {int((delta < 0).sum())}, "
            f"helped {int((delta > 0).sum())}"
        )
        _report(sigs, delta)
        pooled_sig += sigs
        pooled_delta += delta.tolist()
    print("pooled:")
    _report(pooled_sig, np.array(pooled_delta))


def _report(sigs: list[QuerySignals], delta: np.ndarray) -> None:
    for name in SIGNALS:
        values = np.array([float(getattr(s, name)) for s in sigs])
        rho = stats.spearmanr(values, delta).statistic if values.std() > 0 else float("nan")
        print(f"  spearman({name}, delta nDCG@10) = {rho:+.3f}")
    score = np.array([s.top_score + s.score_std + 0.5 * s.rbo for s in sigs])
    print(f"  AUC of the verdict score for 'reranking hurt this query': {auc(delta < 0, score):.3f}")


if __name__ == "__main__":
    sys.exit(main())
