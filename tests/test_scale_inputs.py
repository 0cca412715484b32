"""The Ray engine's inputs, outputs and settings, checked without a cluster (the cluster tests are in test_ray.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.errors import ConfigError, InputError
from crossrank.io import read_beir_corpus, read_beir_queries, read_trec_run
from crossrank.scale import read_pairs, rerank_here, run_pairs, write_output

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "dl19"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_run_pairs_are_the_runs_top_depth_with_the_libraries_texts() -> None:
    pairs, skipped = run_pairs(
        EXAMPLES / "bm25.top100.trec", EXAMPLES / "corpus.jsonl", EXAMPLES / "queries.jsonl", depth=7
    )
    run = read_trec_run(EXAMPLES / "bm25.top100.trec")
    corpus = read_beir_corpus(EXAMPLES / "corpus.jsonl")
    queries = read_beir_queries(EXAMPLES / "queries.jsonl")
    assert skipped == {"skipped_queries": 0, "skipped_docs": 0}
    assert pairs.num_rows == 7 * len(run)
    first = next(iter(run))
    assert pairs.column("doc_id").to_pylist()[:7] == [d for d, _ in run[first][:7]]
    assert pairs.column("query").to_pylist()[0] == queries[first]
    assert pairs.column("text").to_pylist()[0] == corpus[run[first][0][0]]["text"]  # no titles in this slice


def test_local_table_engine_ranks_as_rerank_many_and_writes_trec_and_parquet(
    default_model: Any, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    pairs, _ = run_pairs(EXAMPLES / "bm25.top100.trec", EXAMPLES / "corpus.jsonl", EXAMPLES / "queries.jsonl", depth=12)
    pairs = pairs.slice(0, 36)  # three queries
    result = rerank_here(pairs, default_model, k=5)
    grouped: dict[str, list[tuple[str, str]]] = {}
    for q, qt, d, t in zip(
        *(pairs.column(c).to_pylist() for c in ("query_id", "query", "doc_id", "text")), strict=True
    ):
        grouped.setdefault(q, []).append((qt, d, t))  # type: ignore[arg-type]
    want = default_model.rerank_many(
        [v[0][0] for v in grouped.values()],
        [[{"id": d, "text": t} for _, d, t in v] for v in grouped.values()],
        k=5,
        query_ids=list(grouped),
    )
    assert [r.query_id for r in result.rankings] == list(grouped)
    for got, exp in zip(result.rankings, want, strict=True):
        assert got.doc_ids() == exp.doc_ids()
        np.testing.assert_allclose([h.score for h in got.hits], [h.score for h in exp.hits], atol=1e-6)
    ranks = result.table.column("rank").to_numpy()
    assert sorted(ranks[:12].tolist()) == list(range(1, 13))  # every pair ranked within its query
    assert write_output(result, tmp_path / "run.trec") == 15
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0].split()[:4] == [result.rankings[0].query_id, "Q0", result.rankings[0].hits[0].doc_id, "1"]
    assert write_output(result, tmp_path / "all.parquet") == 36
    assert pq.read_table(tmp_path / "all.parquet").column("doc_id").to_pylist() == pairs.column("doc_id").to_pylist()
    assert not list(tmp_path.glob("*.partial"))


def test_read_pairs_takes_jsonl_with_integer_ids(tmp_path: Path) -> None:
    rows = [
        {"query_id": 1, "query": "what is a cat", "doc_id": 10, "text": "A cat is a small feline.", "extra": 1},
        {"query_id": 1, "query": "what is a cat", "doc_id": 11, "text": "Paris is in France.", "extra": 2},
    ]
    table = read_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert table.column_names == ["query_id", "query", "doc_id", "text"]
    assert table.column("doc_id").to_pylist() == ["10", "11"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"query_id": "q", "query": "x", "doc_id": "d"}], "lacks column(s) text"),
        ([{"query_id": "q", "query": "x", "doc_id": "d", "text": "  "}], "row 1 has an empty 'text'"),
        (
            [{"query_id": "q", "query": "x", "doc_id": "d", "text": "a"}] * 2,
            "1 (query_id, doc_id) pairs repeat (first: 'q', 'd')",
        ),
        ([{"query_id": "q", "query": "x", "doc_id": "d", "text": 5}], "column 'text' must hold strings"),
    ],
)
def test_read_pairs_names_what_is_wrong(tmp_path: Path, rows: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_pairs(write_jsonl(tmp_path / "p.jsonl", rows))


def test_read_pairs_refuses_missing_broken_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_pairs(tmp_path / "none.parquet")
    (tmp_path / "p.csv").write_text("a,b\n")
    with pytest.raises(InputError, match=r"must end in \.parquet, \.jsonl or \.json"):
        read_pairs(tmp_path / "p.csv")
    (tmp_path / "broken.jsonl").write_text('{"query_id": "q", "query": \n')
    with pytest.raises(InputError, match="cannot read pairs from"):
        read_pairs(tmp_path / "broken.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError):
        read_pairs(tmp_path / "empty.jsonl")


def test_ray_settings_map_to_ray_serve_options() -> None:
    from crossrank.scale.serving import build_application, deployment_options

    fixed = deployment_options(replicas=3, threads_per_replica=2, max_ongoing_requests=8)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 2} and fixed["max_ongoing_requests"] == 8
    auto = deployment_options(replicas=2, min_replicas=1, max_replicas=10, target_ongoing_requests=4)
    assert "num_replicas" not in auto
    assert auto["autoscaling_config"] == {
        "min_replicas": 1,
        "initial_replicas": 2,
        "max_replicas": 10,
        "target_ongoing_requests": 4,
    }
    app = build_application("default", options=auto)  # binding starts nothing
    assert type(app).__name__ == "Application"
    for bad in (
        {"replicas": 0},
        {"min_replicas": 3, "max_replicas": 1},
        {"max_replicas": 2, "target_ongoing_requests": 0},
    ):
        with pytest.raises(ConfigError):
            deployment_options(**bad)  # type: ignore[arg-type]


def test_ray_job_settings_are_checked_before_any_cluster_starts() -> None:
    import ray

    from crossrank.errors import ModelNotFoundError
    from crossrank.scale import rerank_on_ray

    pairs, _ = run_pairs(EXAMPLES / "bm25.top100.trec", EXAMPLES / "corpus.jsonl", EXAMPLES / "queries.jsonl", depth=2)
    with pytest.raises(InputError, match="workers must be an int >= 1"):
        rerank_on_ray(pairs, workers=0)
    with pytest.raises(InputError, match="lacks column"):
        rerank_on_ray(pairs.drop_columns(["query"]))
    with pytest.raises(ModelNotFoundError):
        rerank_on_ray(pairs, model=str(Path("no") / "such" / "model"))
    assert not ray.is_initialized()
