"""Ways to combine the cross-encoder with the hybrid first stage, on the same scores.

Run after bench/retrieval_quality.py: it reuses that bench's indexes and its cross-encoder score
cache, so nothing is scored twice. For the NFCorpus dev queries (held out: the place to choose a
setting) and the five test sets it prints nDCG@10 of:

- ``hybrid``: the hybrid (RRF) first stage alone;
- ``ce``: the cross-encoder's order of the hybrid top 100;
- ``blendW``: ``W * minmax(CE) + (1 - W) * minmax(hybrid score)`` (the pipeline's ``rerank_weight``);
- ``probW``: ``W * CE probability + (1 - W) * minmax(hybrid score)``: the cross-encoder's
  probability is not stretched to [0, 1] per query, so a query on which the model finds nothing
  clearly relevant keeps the first stage's order;
- ``rrf2``: reciprocal rank fusion of the CE rank and the hybrid rank;
- ``rrf3``: reciprocal rank fusion of the CE, BM25 and dense ranks;
- ``ce@D`` / ``rrf3@D``: the same, with the cross-encoder on the top D only.

    python bench/retrieval_blends.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_quality import DATA, WORK, evaluate

SETS = ["nfcorpus-preproc", "cranfield", "cisi", "cacm", "vaswani"]


def _queries(name: str, split: str) -> tuple[list[str], list[str], dict[str, dict[str, int]]]:
    from crossrank.io import read_beir_queries, read_jsonl, read_qrels

    folder = DATA / name
    qs = read_beir_queries(folder / "queries.jsonl")
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    if split == "dev":
        dev = {
            str(r["_id"])
            for r in read_jsonl(folder / "queries.jsonl")
            if (r.get("metadata") or {}).get("split") == "dev"
        }
        qs = {q: t for q, t in qs.items() if q in dev}
    qids = [q for q in qs if q in qrels]
    return qids, [qs[q] for q in qids], {q: qrels[q] for q in qids}


def _minmax(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x)


def _ce_scores(ranking: Any, n: int) -> np.ndarray:
    """The cross-encoder's scores of a query's ``n`` candidates, in the first stage's order."""
    out = np.zeros(n)
    for h in ranking.hits:
        out[h.index] = h.score
    return out


def _ranks(scores: np.ndarray) -> np.ndarray:
    out = np.empty(scores.size)
    out[np.argsort(-scores, kind="stable")] = np.arange(1, scores.size + 1)
    return out


def variants(ce: Any, name: str, split: str = "test") -> dict[str, float]:
    from crossrank.retrieve.index import Index

    qids, texts, qrels = _queries(name, split)
    idx = Index.open(WORK / f"index-{name}")
    hybrid = idx.retrieve(texts, k=100, retriever="hybrid")
    bm25 = idx.retrieve(texts, k=1000, retriever="bm25")
    dense = idx.retrieve(texts, k=1000, retriever="dense")
    rankings = ce.rerank_many(texts, [idx.documents(c.slots) for c in hybrid], k=None)
    runs: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for qi, q in enumerate(qids):
        c = hybrid[qi]
        n = len(c)
        ids = idx.doc_ids(c.slots)
        ces = _ce_scores(rankings[qi], n)
        r_h = np.arange(1, n + 1, dtype=float)
        r_ce = _ranks(ces)
        bm_rank = {s: i + 1 for i, s in enumerate(bm25[qi].slots.tolist())}
        de_rank = {s: i + 1 for i, s in enumerate(dense[qi].slots.tolist())}
        r_b = np.array([bm_rank.get(s, 10**6) for s in c.slots.tolist()], dtype=float)
        r_d = np.array([de_rank.get(s, 10**6) for s in c.slots.tolist()], dtype=float)
        scored = {"hybrid": -r_h, "ce": ces}
        for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
            scored[f"blend{w}"] = w * _minmax(ces) + (1 - w) * _minmax(c.scores.astype(float))
            scored[f"prob{w}"] = w * ces + (1 - w) * _minmax(c.scores.astype(float))
        scored["rrf2"] = 1 / (60 + r_ce) + 1 / (60 + r_h)
        scored["rrf3"] = 1 / (60 + r_ce) + 1 / (60 + r_b) + 1 / (60 + r_d)
        for d in (20, 50):
            top = np.arange(n) < d
            only = -r_h.copy()
            only[top] = 1000 + ces[top]
            scored[f"ce@{d}"] = only
            fused = 1 / (60 + r_b) + 1 / (60 + r_d)
            fused[top] += 1 / (60 + _ranks(ces[top]))
            scored[f"rrf3@{d}"] = fused
        for label, s in scored.items():
            order = np.lexsort((np.arange(n), -s))
            runs.setdefault(label, {})[q] = [(ids[i], float(-j)) for j, i in enumerate(order)]
    idx.close()
    return {label: evaluate(run, qrels)["nDCG@10"] for label, run in runs.items()}


def main() -> None:
    from crossrank import CrossEncoder, ScoringConfig

    ce = CrossEncoder("default", config=ScoringConfig(cache_size=200_000, cache_dir=WORK / "ce-cache"))
    results = {"nfcorpus-dev": variants(ce, "nfcorpus-preproc", "dev")}
    print("nfcorpus-dev", json.dumps(results["nfcorpus-dev"]), flush=True)
    for name in SETS:
        results[name] = variants(ce, name)
        print(name, json.dumps(results[name]), flush=True)
    labels = list(results["cisi"])
    mean = {k: round(float(np.mean([results[s][k] for s in SETS])), 4) for k in labels}
    print("\n| variant | NFCorpus dev | " + " | ".join(SETS) + " | mean (5 test sets) |")
    print("|---|" + "---|" * (len(SETS) + 2))
    for k in labels:
        cells = [f"{results['nfcorpus-dev'][k]:.4f}", *(f"{results[s][k]:.4f}" for s in SETS), f"{mean[k]:.4f}"]
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
