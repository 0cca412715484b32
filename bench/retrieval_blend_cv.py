"""Can a blend weight chosen on a collection's own judged queries make the pipeline beat the hybrid?

Run after bench/retrieval_quality.py (it reuses that bench's indexes and cross-encoder score
cache; about a minute). For each of the five test collections, every query's nDCG@10 is computed
for the pipeline's probability blend ``w * p + (1 - w) * minmax(hybrid)`` at w = 0, 0.05, ..., 1
(w = 0 is the hybrid first stage alone). Then 2-fold cross-validation, repeated 50 times with
seeded splits: the weight that scores best on one half of a collection's queries is applied to
the other half. Prints, per collection, the hybrid's nDCG@10 and the cross-validated pipeline's,
and a paired t-test over all queries.

    python bench/retrieval_blend_cv.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_blends import SETS, _ce_scores, _minmax, _queries
from retrieval_quality import WORK

WEIGHTS = [round(float(w), 2) for w in np.arange(0, 1.0001, 0.05)]


def per_query(ce, name: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Return nDCG@10 per (weight, query) of one collection's test queries."""
    import ir_measures
    from ir_measures import nDCG

    from crossrank.retrieve.index import Index

    qids, texts, qrels = _queries(name, "test")
    idx = Index.open(WORK / f"index-{name}")
    hybrid = idx.retrieve(texts, k=100, retriever="hybrid")
    rankings = ce.rerank_many(texts, [idx.documents(c.slots) for c in hybrid], k=None)
    qr = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
    ids = [idx.doc_ids(c.slots) for c in hybrid]
    ces = [_ce_scores(r, len(c)) for r, c in zip(rankings, hybrid, strict=True)]
    first = [_minmax(c.scores.astype(float)) for c in hybrid]
    out = np.zeros((len(WEIGHTS), len(qids)))
    for wi, w in enumerate(WEIGHTS):
        scored = []
        for qi, q in enumerate(qids):
            n = len(hybrid[qi])
            s = w * ces[qi] + (1 - w) * first[qi] if w > 0 else -np.arange(n, dtype=float)
            order = np.lexsort((np.arange(n), -s))
            scored += [ir_measures.ScoredDoc(q, ids[qi][i], float(-j)) for j, i in enumerate(order)]
        got = {m.query_id: float(m.value) for m in ir_measures.iter_calc([nDCG @ 10], qr, scored)}
        out[wi] = [got.get(q, 0.0) for q in qids]
    idx.close()
    return out


def cross_validate(m: np.ndarray, folds: int = 2, repeats: int = 50, seed: int = 0) -> np.ndarray:
    """Per-query nDCG@10 with the weight chosen on the other folds, averaged over repeats."""
    rng = np.random.default_rng(seed)
    out = np.zeros(m.shape[1])
    for _ in range(repeats):
        perm = rng.permutation(m.shape[1])
        for test in np.array_split(perm, folds):
            train = np.setdiff1d(perm, test)
            out[test] += m[int(np.argmax(m[:, train].mean(axis=1))), test]
    return out / repeats


def main() -> None:
    from scipy import stats

    from crossrank import CrossEncoder, ScoringConfig

    ce = CrossEncoder("default", config=ScoringConfig(cache_size=200_000, cache_dir=WORK / "ce-cache"))
    hyb, cv = [], []
    print("| collection | queries | hybrid | pipeline, weight by 2-fold CV |\n|---|---|---|---|")
    for name in SETS:
        m = per_query(ce, name)
        h, c = m[0], cross_validate(m)
        hyb.append(h)
        cv.append(c)
        print(f"| {name} | {m.shape[1]} | {h.mean():.4f} | {c.mean():.4f} |")
    print(f"| mean of the sets | | {np.mean([h.mean() for h in hyb]):.4f} | {np.mean([c.mean() for c in cv]):.4f} |")
    h_all, c_all = np.concatenate(hyb), np.concatenate(cv)
    test = stats.ttest_rel(c_all, h_all)
    print(
        f"all {h_all.size} queries: mean difference {np.mean(c_all - h_all):+.4f}, paired t-test p = {test.pvalue:.3f}"
    )


if __name__ == "__main__":
    main()
