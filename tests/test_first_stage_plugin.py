"""A first stage from one file in tests/ (tests/dict_engine.py), run through everything that searches.

``Pipeline``, ``crossrank search --first-stage``, ``crossrank eval --first-stage --rerank`` and the
server's ``POST /v1/search`` take it as they take an index; nothing in ``src/`` knows it.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from crossrank import CrossEncoder
from crossrank.cli.app import app
from crossrank.errors import ConfigError
from crossrank.pipeline import Pipeline
from crossrank.retrieve.plugins import load_first_stage
from crossrank.serve import ServeConfig, create_app
from dict_engine import DictEngine
from test_serve import HTTP_TIMEOUT, serving

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "dl19"
ENGINE = f"{Path(__file__).parent / 'dict_engine.py'}:DictEngine"
QUERY = "what is durable medical equipment covered by medicare"


@pytest.fixture(scope="module")
def engine() -> DictEngine:
    return DictEngine()


def test_pipeline_reranks_what_the_first_stage_found(engine: DictEngine, default_model: CrossEncoder) -> None:
    first = engine.retrieve([QUERY], 20)[0]
    result = Pipeline(engine, reranker=default_model).search(QUERY, k=5, depth=20)
    assert result.retriever == "dict-engine" and result.reranked and result.depth == 20
    records = engine.get(list(first.doc_ids))
    want = default_model.rerank(QUERY, [r for r in records if r is not None], k=5)
    assert result.doc_ids() == [records[h.index]["id"] for h in want.hits]  # type: ignore[index]
    for hit in result.hits:
        assert first.doc_ids[hit.first_stage_rank - 1] == hit.doc_id
        assert hit.first_stage_score == float(first.scores[hit.first_stage_rank - 1])
    plain = Pipeline(engine, reranker=None).search(QUERY, k=5)
    assert plain.doc_ids() == list(first.doc_ids[:5]) and not plain.reranked


def test_pipeline_takes_the_store_apart_and_skips_what_it_lacks(engine: DictEngine) -> None:
    class IdsOnly:
        name = "ids-only"

        def retrieve(self, queries, k):  # type: ignore[no-untyped-def]
            return engine.retrieve(queries, k)

    with pytest.raises(ConfigError, match="store="):
        Pipeline(IdsOnly(), reranker=None)
    first = engine.retrieve([QUERY], 5)[0]
    fewer = DictEngine({i: d for i, d in engine.docs.items() if i != first.doc_ids[1]})
    result = Pipeline(IdsOnly(), reranker=None, store=fewer).search(QUERY, k=5)
    assert result.doc_ids() == [i for i in first.doc_ids if i != first.doc_ids[1]]
    with pytest.raises(ConfigError, match="cannot run retriever 'bm25'"):
        Pipeline(engine, reranker=None).search(QUERY, retriever="bm25")


def test_cli_search_takes_a_first_stage(engine: DictEngine, default_model: CrossEncoder, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["search", QUERY, "--first-stage", ENGINE, "--k", "4", "--depth", "10", "--format", "jsonl"]
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout.strip().splitlines()[-1])
    want = Pipeline(engine, reranker=default_model).search(QUERY, k=4, depth=10)
    assert [h["doc_id"] for h in got["hits"]] == want.doc_ids() and got["retriever"] == "dict-engine"
    run = tmp_path / "run.trec"
    res = runner.invoke(
        app,
        ["search", "--first-stage", ENGINE, "--queries", str(EXAMPLES / "queries.jsonl"), "--no-rerank", "--k", "3",
         "--output", str(run), "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = run.read_text(encoding="utf-8").splitlines()
    assert lines and all(line.split()[5] == "crossrank-dict-engine" for line in lines)
    both = runner.invoke(app, ["search", QUERY, "--first-stage", ENGINE, "--index", str(tmp_path)])
    assert both.exit_code != 0 and "either --index" in both.output


def test_cli_eval_reranks_a_first_stage(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    res = CliRunner().invoke(
        app,
        ["eval", "--data", str(EXAMPLES), "--first-stage", ENGINE, "--rerank", "default", "--depth", "10",
         "--depths", "5 10", "--json", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [p["depth"] for p in report["depth_sweep"]] == [5, 10]
    cfg = tmp_path / "pipe.toml"
    cfg.write_text(f'first_stage = "{ENGINE}"\nmodel = "default"\ndepth = 10\n', encoding="utf-8")
    res = CliRunner().invoke(
        app, ["eval", "--data", str(EXAMPLES), "--pipeline", str(cfg), "--depths", "10", "--json", str(out)]
    )
    assert res.exit_code == 0, res.output


def test_server_searches_a_first_stage(engine: DictEngine, default_model: CrossEncoder) -> None:
    with serving(create_app(default_model, first_stage=engine, config=ServeConfig(max_wait_ms=10))) as base:
        body = httpx.post(f"{base}/v1/search", json={"query": QUERY, "k": 3, "depth": 10}, timeout=60).json()
        card = httpx.get(f"{base}/v1/models", timeout=HTTP_TIMEOUT).json()["data"][0]
    want = Pipeline(engine, reranker=default_model).search(QUERY, k=3, depth=10)
    assert body["retriever"] == "dict-engine" and body["reranked"] and body["depth"] == 10
    assert [h["doc_id"] for h in body["hits"]] == want.doc_ids()
    np.testing.assert_allclose([h["score"] for h in body["hits"]], [h.score for h in want.hits], atol=1e-6)
    assert card["search"]["documents"] == len(engine) and card["search"]["default_retriever"] == "dict-engine"
    with pytest.raises(ConfigError, match="not both"):
        create_app(default_model, index=ROOT, first_stage=engine)
    refused = CliRunner().invoke(app, ["serve", "--first-stage", ENGINE, "--index", str(ROOT)])
    assert refused.exit_code == 2 and "served alone" in refused.output


def test_load_first_stage_explains_what_is_wrong(tmp_path: Path) -> None:
    assert type(load_first_stage(ENGINE)).__name__ == "DictEngine"  # the file, loaded as a module of its own
    assert isinstance(load_first_stage("dict_engine:DictEngine"), DictEngine)  # importable: tests/ is on the path
    for spec, match in [
        ("no-colon", "module:attr"),
        (f"{tmp_path / 'missing.py'}:X", "does not exist"),
        ("crossrank.retrieve.testing:Nope", "no attribute"),
        ("crossrank.retrieve.testing:__name__", "not a first stage"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_first_stage(spec)
