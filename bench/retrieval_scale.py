"""First-stage scale: BM25 at 1M documents, dense HNSW at 100k and 1M vectors.

Measured, each case in its own subprocess (so peak RSS is its own): build rate, size on disk, peak
RSS, single-query latency p50/p99, and for HNSW its recall@10 against exact search.

The shared collections hold about 21,000 real documents, too few for these sizes, so:

* BM25 text is synthetic but shaped like the real thing: words are drawn from the unigram
  distribution of all five shared corpora (NFCorpus, Cranfield, CISI, CACM, Vaswani), document
  lengths from their real length distribution. Queries are the real queries of those sets.
  The corpus streams through ``Index.build`` from a generator; it is never held in memory.
* Vectors are drawn from a Gaussian with the mean and full covariance of 8,000 real bge-small-en
  document vectors of the shared corpora, then renormalised, so their anisotropy and spread are
  those of the real embedding space. Queries are real bge-small-en query vectors. The vectors go
  through the same writer, HNSW builder and reader the index uses.

    python bench/retrieval_scale.py                    # about 20 minutes on 2 cores
    python bench/retrieval_scale.py --bm25-docs 100000 --dense 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "bench" / ".work" / "scale"
SETS = ["nfcorpus-preproc", "cranfield", "cisi", "cacm", "vaswani"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _real_texts() -> tuple[list[str], list[str]]:
    docs, queries = [], []
    for name in SETS:
        for line in (DATA / name / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            docs.append(f"{rec.get('title', '')} {rec['text']}".strip())
        for line in (DATA / name / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            queries.append(json.loads(line)["text"])
    return docs, queries


def _latency(fn: Any, queries: list[Any]) -> dict[str, float]:
    fn(queries[:5])  # warm
    times = []
    for q in queries:
        t = time.perf_counter()
        fn([q])
        times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2)}


# --------------------------------------------------------------------------- cases (run in a subprocess)


def case_bm25(n_docs: int) -> dict[str, Any]:
    from crossrank.retrieve.index import Index

    docs, queries = _real_texts()
    words: list[str] = []
    lengths = []
    for d in docs:
        w = d.split()
        words.extend(w)
        lengths.append(len(w))
    vocab, counts = np.unique(np.array(words, dtype=object), return_counts=True)
    probs = counts / counts.sum()
    len_pool = np.array([n for n in lengths if n > 0])
    rng = np.random.default_rng(0)

    def corpus():  # type: ignore[no-untyped-def]
        for start in range(0, n_docs, 10_000):
            m = min(10_000, n_docs - start)
            lens = rng.choice(len_pool, size=m)
            flat = rng.choice(len(vocab), size=int(lens.sum()), p=probs)
            pos = 0
            for i, n in enumerate(lens.tolist()):
                yield {"id": f"s{start + i}", "text": " ".join(vocab[flat[pos : pos + n]])}
                pos += n

    folder = WORK / f"bm25-{n_docs}"
    shutil.rmtree(folder, ignore_errors=True)
    rss_before = _peak_rss_mb()
    t = time.perf_counter()
    index = Index.build(folder, corpus(), retriever="bm25", chunk_size=4096)
    build_s = time.perf_counter() - t
    lat = _latency(lambda q: index.retrieve(q, k=100), queries[:300])
    return {
        "case": f"bm25-{n_docs}",
        "documents": len(index),
        "text": "synthetic (unigram + length distribution of the five shared corpora); real queries",
        "build_s": round(build_s, 1),
        "docs_per_s": round(n_docs / build_s),
        "disk_mb": round(_du(folder) / 2**20, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_build_mb": round(rss_before, 1),
        "query_k100": lat,
    }


def _real_vectors() -> tuple[np.ndarray, np.ndarray]:
    """Real bge-small-en vectors of the shared corpora and queries (embedded once, cached)."""
    cache = WORK / "real-vectors.npz"
    if cache.is_file():
        data = np.load(cache)
        return data["docs"], data["queries"]
    from crossrank.retrieve.embed import BiEncoder

    docs, queries = _real_texts()
    enc = BiEncoder("bge-small-en")
    rng = np.random.default_rng(1)
    pick = rng.choice(len(docs), size=min(8000, len(docs)), replace=False)
    dv = enc.encode_documents([docs[i] for i in pick])
    qv = enc.encode_queries(queries[:500])
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(cache, docs=dv, queries=qv)
    return dv, qv


def case_dense(n: int, dtype: str, kind: str = "gaussian") -> dict[str, Any]:
    from crossrank.retrieve.vectors import VectorReader, VectorWriter, build_hnsw

    real, queries = _real_vectors()
    # "gaussian": a Gaussian with the real vectors' mean and full covariance, renormalised: the same
    # anisotropy and spread as bge-small-en's space, but filling all its dimensions (a hard case).
    # "copies": real vectors plus Gaussian noise at the spread of real nearest neighbours: near the
    # real surface, but many near-duplicates per real vector at 1M (also hard: near-ties).
    mean = real.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1]))
    sims = real[:500] @ real.T
    np.fill_diagonal(sims[:, :500], -1)
    sigma = np.sqrt(np.maximum(0, 2 - 2 * sims.max(axis=1))).mean() / np.sqrt(real.shape[1])
    folder = WORK / f"dense-{n}-{dtype}-{kind}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    t = time.perf_counter()
    writer = VectorWriter(folder, real.shape[1], dtype)  # type: ignore[arg-type]
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        if kind == "gaussian":
            v = (mean + rng.standard_normal((m, real.shape[1])) @ chol.T).astype(np.float32)
        else:
            base = real[rng.integers(0, len(real), size=m)]
            v = base + rng.normal(0, sigma, size=base.shape).astype(np.float32)
        writer.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    writer.close()
    write_s = time.perf_counter() - t
    reader = VectorReader(folder, n, real.shape[1], dtype, hnsw=False)  # type: ignore[arg-type]
    t = time.perf_counter()
    build_hnsw(reader, folder / "hnsw.usearch", threads=os.cpu_count() or 1)
    hnsw_s = time.perf_counter() - t
    live = np.ones(n, dtype=np.bool_)
    reader = VectorReader(folder, n, real.shape[1], dtype, hnsw=True)  # type: ignore[arg-type]
    qs = queries[:200]
    exact_rows, _ = reader.search(qs, 10, live, exact=True)
    sweep = {}
    for ef in (64, 128, 256):  # HNSW search breadth: recall against latency
        reader.hnsw.expansion_search = ef
        hnsw_rows, _ = reader.search(qs, 10, live)
        recall = float(
            np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw_rows.tolist(), exact_rows.tolist(), strict=True)])
        )
        sweep[str(ef)] = {
            "recall@10": round(recall, 4),
            **_latency(lambda q: reader.search(np.stack(q), 100, live), list(qs)),
        }
    lat_exact = _latency(lambda q: reader.search(np.stack(q), 100, live, exact=True), list(qs[:50]))
    return {
        "case": f"dense-hnsw-{n}-{dtype}-{kind}",
        "vectors": n,
        "dim": int(real.shape[1]),
        "dtype": dtype,
        "vectors_text": {
            "gaussian": "Gaussian fitted to real bge-small-en document vectors (mean, covariance); real queries",
            "copies": "real bge-small-en document vectors plus noise at the nearest-neighbour spread; real queries",
        }[kind],
        "write_s": round(write_s, 1),
        "hnsw_build_s": round(hnsw_s, 1),
        "vectors_per_s": round(n / hnsw_s),
        "disk_mb": round(_du(folder) / 2**20, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "hnsw_by_expansion_search": sweep,
        "query_k100_exact": lat_exact,
    }


def case_real() -> dict[str, Any]:
    """HNSW on real vectors only (8,000 bge-small-en document vectors of the shared corpora)."""
    from crossrank.retrieve.vectors import VectorReader, VectorWriter, build_hnsw

    real, queries = _real_vectors()
    folder = WORK / "dense-real"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    writer = VectorWriter(folder, real.shape[1], "float32")
    writer.append(real)
    writer.close()
    build_hnsw(VectorReader(folder, len(real), real.shape[1], "float32", hnsw=False), folder / "hnsw.usearch")
    reader = VectorReader(folder, len(real), real.shape[1], "float32", hnsw=True)
    live = np.ones(len(real), dtype=np.bool_)
    exact_rows, _ = reader.search(queries, 10, live, exact=True)
    sweep = {}
    for ef in (64, 128, 256):
        reader.hnsw.expansion_search = ef
        rows, _ = reader.search(queries, 10, live)
        recall = float(
            np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), exact_rows.tolist(), strict=True)])
        )
        sweep[str(ef)] = {"recall@10": round(recall, 4)}
    return {
        "case": "dense-hnsw-real-8000",
        "vectors": len(real),
        "queries": len(queries),
        "hnsw_by_expansion_search": sweep,
    }


# --------------------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bm25-docs", default="1000000", help="comma-separated corpus sizes for BM25")
    ap.add_argument("--dense", default="100000,1000000", help="comma-separated vector counts for HNSW")
    ap.add_argument("--dtype", default="float32", choices=["float32", "int8"])
    ap.add_argument("--vectors", default="gaussian,copies", help="synthetic vector kinds: gaussian, copies")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-retrieval-scale.json")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:  # child process: one case, JSON on the last line
        kind, n = args.case.split(":")
        cases_by_kind = {
            "real": case_real,
            "bm25": lambda: case_bm25(int(n)),
            "dense": lambda: case_dense(int(n), args.dtype, args.vectors),
        }
        out = cases_by_kind[kind]()
        print(json.dumps(out))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    dense = [(n, v) for v in args.vectors.split(",") if v for n in args.dense.split(",") if n]
    cases = [(f"bm25:{n}", "") for n in args.bm25_docs.split(",") if n] + [(f"dense:{n}", v) for n, v in dense]
    if args.dense:
        cases.append(("real:0", ""))
    results = []
    for case, kind in cases:
        print(f"running {case} {kind} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--case", case, "--dtype", args.dtype, "--vectors", kind or "gaussian"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{case} failed")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        results.append(row)
    cpu = os.cpu_count()
    args.out.write_text(json.dumps({"cores": cpu, "results": results}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
