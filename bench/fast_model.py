"""The built-in `fast` model against the default, side by side: quality and speed on one machine.

    python bench/fast_model.py [--rounds 3] [--backends openvino onnx]

Both models rerank the BM25 top-100 of the 43 TREC DL 2019 queries (4,300 pairs), one query per
call as a service would, with the same engine and settings. Rounds alternate between the models
so that both see the same machine state; the best round counts. Prints nDCG@10 (ir-measures),
pairs/s, per-query p50 latency, and the ratios fast/default. Results go to docs/bench-fast-model.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DL19 = ROOT.parent / "shared" / "data" / "trec-dl-2019-passage"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", nargs="+", default=["openvino", "onnx"])
    ap.add_argument("--fast", default="fast", help="the fast model: the built-in, or a folder (runs/fast/onnx)")
    args = ap.parse_args()

    from crossrank import CrossEncoder
    from crossrank.evaluate.metrics import evaluate
    from crossrank.io import read_beir_corpus, read_beir_queries, read_qrels, read_trec_run

    corpus = read_beir_corpus(DL19 / "corpus.jsonl")
    queries = read_beir_queries(DL19 / "queries.jsonl")
    qrels = read_qrels(DL19 / "qrels" / "test.tsv")
    run = read_trec_run(DL19 / "runs" / "bm25.top100.trec")
    qids = sorted(q for q in run if q in qrels)
    docs = {q: [{"id": d, **corpus[d]} for d, _ in run[q][:100]] for q in qids}
    pairs = sum(len(v) for v in docs.values())

    results: dict[str, dict[str, float]] = {}
    for backend in args.backends:
        sources = {"default": "default", "fast": args.fast}
        models = {name: CrossEncoder(src, backend=backend, calibration=None) for name, src in sources.items()}  # type: ignore[arg-type]
        for m in models.values():
            m.rerank(queries[qids[0]], docs[qids[0]][:16])  # warm-up
        best: dict[str, float] = {}
        lat: dict[str, list[float]] = {}
        runs: dict[str, dict[str, dict[str, float]]] = {}
        for _ in range(args.rounds):
            for name, m in models.items():
                times = []
                ranked: dict[str, dict[str, float]] = {}
                t0 = time.perf_counter()
                for q in qids:
                    t = time.perf_counter()
                    hits = m.rerank(queries[q], docs[q]).hits
                    times.append(time.perf_counter() - t)
                    ranked[q] = {h.doc_id: float(h.score) for h in hits}
                rate = pairs / (time.perf_counter() - t0)
                if rate > best.get(name, 0.0):
                    best[name], lat[name] = rate, times
                runs[name] = ranked
        quality = evaluate(qrels, runs, ["nDCG@10"], rel=2)
        for name in models:
            results[f"{name}/{backend}"] = {
                "nDCG@10": quality.aggregate[name]["nDCG@10"],
                "pairs_per_s": best[name],
                "p50_ms": float(np.percentile(lat[name], 50) * 1000),
            }
        d, f = results[f"default/{backend}"], results[f"fast/{backend}"]
        results[f"ratio/{backend}"] = {
            "nDCG@10": f["nDCG@10"] / d["nDCG@10"],
            "pairs_per_s": f["pairs_per_s"] / d["pairs_per_s"],
            "p50_ms": f["p50_ms"] / d["p50_ms"],
        }
    print(f"TREC DL 2019, BM25 top-100, {len(qids)} queries, {pairs} pairs; best of {args.rounds} alternating rounds")
    print(f"{'model/backend':<22}{'nDCG@10':>9}{'pairs/s':>10}{'p50 ms':>9}")
    for key, r in results.items():
        print(f"{key:<22}{r['nDCG@10']:>9.4f}{r['pairs_per_s']:>10.2f}{r['p50_ms']:>9.2f}")
    out = {
        "command": "python bench/fast_model.py " + " ".join(__import__("sys").argv[1:]),
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "processor": platform.processor()},
        "queries": len(qids),
        "pairs": pairs,
        "results": results,
    }
    (ROOT / "docs" / "bench-fast-model.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
