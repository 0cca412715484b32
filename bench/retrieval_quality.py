"""First stages and the two-stage pipeline, side by side, on NFCorpus and four classic test collections.

For each collection (BEIR layout under ../shared/data) it builds one hybrid index (BM25 with the
default Anserini settings + bge-small-en vectors, exact search) and measures, with ir-measures:

    BM25 | dense | hybrid RRF | hybrid interpolation | BM25 -> cross-encoder | hybrid RRF -> cross-encoder

nDCG@10 and Recall@100 (the ceiling for a reranker of the top 100), plus the reranking latency per
query. The cross-encoder is crossrank's default (ms-marco-MiniLM-L-12-v2) on the top 100.
It also scores the candidate dense model all-MiniLM-L6-v2 when asked (--dense-candidates).

    python bench/retrieval_quality.py                    # about 25 minutes on 2 cores
    python bench/retrieval_quality.py --sets cisi,cacm --queries 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "bench" / ".work"
SETS = ["nfcorpus-preproc", "cranfield", "cisi", "cacm", "vaswani"]
REFERENCE_BM25 = {"nfcorpus-preproc": 0.3285, "cranfield": 0.352, "cisi": 0.358, "cacm": 0.466, "vaswani": 0.438}


def evaluate(run: dict[str, list[tuple[str, float]]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    import ir_measures
    from ir_measures import R, nDCG

    qr = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
    sd = [ir_measures.ScoredDoc(q, d, s) for q, hits in run.items() for d, s in hits]
    agg = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], qr, sd)
    return {"nDCG@10": round(float(agg[nDCG @ 10]), 4), "R@100": round(float(agg[R @ 100]), 4)}


def blend(hits: list[tuple[str, float, float]], weight: float) -> list[tuple[str, float]]:
    """Order (doc, first-stage score, cross-encoder probability) as the pipeline does for ``rerank_weight``.

    The pipeline's default blend (``blend="probability"``): the cross-encoder's probability as it
    is, the first stage's scores min-max normalised over the query's candidates.
    """
    import numpy as np

    from crossrank.retrieve.fusion import minmax

    if not hits:
        return []
    fs = np.array([h[1] for h in hits], dtype=np.float32)
    ce = np.array([h[2] for h in hits], dtype=np.float32)
    final = weight * np.clip(ce, 0.0, 1.0) + (1 - weight) * minmax(fs)
    order = np.lexsort((np.arange(len(hits)), -final))
    return [(hits[i][0], float(final[i])) for i in order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--queries", type=int, default=0, help="first N judged queries per set (0 = all)")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-retrieval-quality.json")
    args = ap.parse_args()

    from crossrank import CrossEncoder, ScoringConfig
    from crossrank.io import read_beir_queries, read_jsonl, read_qrels
    from crossrank.pipeline import Pipeline
    from crossrank.retrieve.index import Index

    # scores persist in SQLite: a rerun (or the dev-set sweep) scores each pair once
    ce = CrossEncoder("default", config=ScoringConfig(cache_size=200_000, cache_dir=WORK / "ce-cache"))

    def open_index(name: str) -> tuple[Index, float | None]:
        idx_dir = WORK / f"index-{name}"
        t0 = time.perf_counter()
        try:
            return Index.open(idx_dir), None
        except Exception:
            # Cranfield has two records with neither title nor text: skipped and counted
            index = Index.build(
                idx_dir, DATA / name, retriever="hybrid", ann="exact", overwrite=True, progress=True, on_error="skip"
            )
            return index, round(time.perf_counter() - t0, 1)

    def pipeline_hits(
        index: Index, queries: dict[str, str], retriever: str
    ) -> tuple[dict[str, list[tuple[str, float, float]]], float]:
        pipe = Pipeline(index, reranker=ce)
        t = time.perf_counter()
        res = pipe.search_many(queries, k=args.depth, depth=args.depth, retriever=retriever)  # type: ignore[arg-type]
        ms = (time.perf_counter() - t) * 1000 / max(len(queries), 1)
        hits = {r.query_id or "": [(h.doc_id, h.first_stage_score, h.rerank_score or 0.0) for h in r.hits] for r in res}
        return hits, ms

    weights = [round(0.1 * i, 1) for i in range(1, 10)]
    # choose the blend weight on held-out data: the NFCorpus dev queries (not a test query of any set)
    nf = DATA / "nfcorpus-preproc"
    dev_ids = {
        str(r["_id"]) for r in read_jsonl(nf / "queries.jsonl") if (r.get("metadata") or {}).get("split") == "dev"
    }
    dev_qrels = read_qrels(nf / "qrels" / "dev.tsv")
    all_q = read_beir_queries(nf / "queries.jsonl")
    dev_queries = {q: all_q[q] for q in all_q if q in dev_ids and q in dev_qrels}
    if args.queries:
        dev_queries = dict(list(dev_queries.items())[: args.queries])
    nf_index, _ = open_index("nfcorpus-preproc")
    dev_hits, _ = pipeline_hits(nf_index, dev_queries, "hybrid")
    dev_scores = {
        w: evaluate({q: blend(h, w) for q, h in dev_hits.items()}, {q: dev_qrels[q] for q in dev_queries})["nDCG@10"]
        for w in [*weights, 1.0]
    }
    best_w = max(weights, key=lambda w: dev_scores[w])
    print("dev (NFCorpus dev, hybrid -> CE) nDCG@10 by rerank_weight:", dev_scores, "chosen", best_w, flush=True)
    nf_index.close()

    results: dict[str, Any] = {"depth": args.depth, "rerank_weight": best_w, "dev_sweep": dev_scores, "sets": {}}
    for name in args.sets.split(","):
        folder = DATA / name
        queries = read_beir_queries(folder / "queries.jsonl")
        qrels = read_qrels(folder / "qrels" / "test.tsv")
        qids = [q for q in queries if q in qrels]
        if args.queries:
            qids = qids[: args.queries]
        qrels = {q: qrels[q] for q in qids}
        index, built = open_index(name)
        texts = [queries[q] for q in qids]
        row: dict[str, Any] = {"documents": len(index), "queries": len(qids), "build_s": built}

        def first_stage(
            ret: str, fusion: str | None = None, index: Any = index, texts: list[str] = texts, qids: list[str] = qids
        ) -> dict[str, list[tuple[str, float]]]:
            cands = index.retrieve(texts, k=1000, retriever=ret, fusion=fusion)
            return {
                q: list(zip(index.doc_ids(c.slots), c.scores.tolist(), strict=True))
                for q, c in zip(qids, cands, strict=True)
            }

        runs = {
            "bm25": first_stage("bm25"),
            "dense": first_stage("dense"),
            "hybrid-rrf": first_stage("hybrid", "rrf"),
            "hybrid-interp": first_stage("hybrid", "interpolate"),
        }
        for label, ret in (("bm25+ce", "bm25"), ("hybrid-rrf+ce", "hybrid")):
            hits, ms = pipeline_hits(index, dict(zip(qids, texts, strict=True)), ret)
            row[f"{label}_ms_per_query"] = round(ms, 1)
            runs[label] = {q: blend(h, 1.0) for q, h in hits.items()}
            runs[f"{label}-blend"] = {q: blend(h, best_w) for q, h in hits.items()}
        for label, run in runs.items():
            row[label] = evaluate(run, qrels)
        row["reference_bm25_nDCG@10"] = REFERENCE_BM25.get(name)
        results["sets"][name] = row
        print(name, json.dumps(row), flush=True)
        index.close()

    labels = [
        "bm25",
        "dense",
        "hybrid-rrf",
        "hybrid-interp",
        "bm25+ce",
        "bm25+ce-blend",
        "hybrid-rrf+ce",
        "hybrid-rrf+ce-blend",
    ]
    sets = results["sets"]
    results["mean"] = {lab: round(sum(sets[s][lab]["nDCG@10"] for s in sets) / len(sets), 4) for lab in labels}
    print("\n| set | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for s, row in sets.items():
        print(f"| {s} | " + " | ".join(f"{row[lab]['nDCG@10']:.4f}" for lab in labels) + " |")
    print("| mean | " + " | ".join(f"{results['mean'][lab]:.4f}" for lab in labels) + " |")
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
