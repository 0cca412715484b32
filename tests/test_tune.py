"""`crossrank tune`: settings chosen from judged queries, scored exactly as the pipeline ranks, and loaded back.

The real cases run the default model on the ten TREC DL 2019 queries shipped in ``examples/dl19``
(their BM25 top 20); the decision rule is also held to hand-built evidence whose answer is known.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import ir_measures
import numpy as np
import pytest
from ir_measures import nDCG

from crossrank import CrossEncoder
from crossrank.errors import ConfigError, InputError
from crossrank.evaluate.tune import (
    Candidate,
    JudgedQuery,
    candidate_settings,
    judged_from_index,
    judged_from_run,
    ndcg_matrix,
    tune,
    tune_matrix,
)
from crossrank.io import read_beir_queries, read_qrels, read_trec_run
from crossrank.pipeline import Pipeline
from crossrank.retrieve.index import Index
from crossrank.settings import SearchSettings, load_settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "dl19"
DEPTH = 20


def crossrank(*args: str | Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def qrels() -> dict[str, dict[str, int]]:
    return read_qrels(EXAMPLES / "qrels.tsv")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tune") / "dl19-bm25"
    Index.build(folder, EXAMPLES / "corpus.jsonl", retriever="bm25")
    return folder


@pytest.fixture(scope="module")
def judged(index: Path, default_model: CrossEncoder) -> list[JudgedQuery]:
    return judged_from_index(default_model, index, read_beir_queries(EXAMPLES / "queries.jsonl"), depth=DEPTH)


def _ndcg(results: list[Any], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    qr = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
    run = [ir_measures.ScoredDoc(r.query_id, h.doc_id, -h.rank) for r in results for h in r.hits]
    return {m.query_id: float(m.value) for m in ir_measures.iter_calc([nDCG @ 10], qr, run)}


@pytest.mark.parametrize("weight", [1.0, 0.3])
@pytest.mark.parametrize("depth", [10, 20])
def test_each_setting_scores_what_the_pipeline_returns(
    judged: list[JudgedQuery],
    index: Path,
    default_model: CrossEncoder,
    qrels: dict[str, dict[str, int]],
    depth: int,
    weight: float,
) -> None:
    m = ndcg_matrix(judged, qrels, [Candidate(True, depth, weight), Candidate(False)])
    pipe = Pipeline(index, reranker=default_model, rerank_weight=weight)
    queries = read_beir_queries(EXAMPLES / "queries.jsonl")
    want = _ndcg(pipe.search_many(queries, k=10, depth=depth), qrels)
    np.testing.assert_allclose(m[0], [want[q.query_id] for q in judged], atol=1e-9)
    first = _ndcg(pipe.search_many(queries, k=10, rerank=False), qrels)
    np.testing.assert_allclose(m[1], [first[q.query_id] for q in judged], atol=1e-9)


def test_a_run_and_an_index_give_the_same_evidence(
    judged: list[JudgedQuery], index: Path, default_model: CrossEncoder
) -> None:
    # the shipped run is BM25 over the full collection, the index over its 1,000-passage slice:
    # their candidates overlap, and a passage both found gets the same cross-encoder score
    from_run = judged_from_run(
        default_model,
        EXAMPLES / "bm25.top100.trec",
        EXAMPLES / "queries.jsonl",
        EXAMPLES / "corpus.jsonl",
        depth=DEPTH,
    )
    by_id = {q.query_id: q for q in from_run}
    assert set(by_id) == {q.query_id for q in judged}
    for q in judged:
        r = by_id[q.query_id]
        shared = set(q.doc_ids) & set(r.doc_ids)
        assert len(shared) >= 3
        ce_index = dict(zip(q.doc_ids, q.rerank_scores, strict=True))
        ce_run = dict(zip(r.doc_ids, r.rerank_scores, strict=True))
        np.testing.assert_allclose([ce_index[d] for d in shared], [ce_run[d] for d in shared], atol=1e-5)


def test_tune_on_dl19_reranks_and_the_choice_is_evidenced(
    judged: list[JudgedQuery], qrels: dict[str, dict[str, int]]
) -> None:
    report = tune(judged, qrels, model="default")
    assert report.settings.rerank and report.settings.depth in (10, 20)
    assert report.queries == len(judged) == 10
    gain, lo, hi, p = report.cv_gain
    assert lo <= gain <= hi and p < 0.05 and gain > 0.05  # BM25 -> this model is a large gain on DL 2019
    assert report.means["first stage"][0] < report.means[report.chosen][0]
    assert report.rerank_all[0] == pytest.approx(report.means[f"rerank@{DEPTH}"][0])
    evidence = report.settings.evidence
    assert evidence["queries"] == 10 and evidence["chosen"] == report.chosen
    assert "cross-validation" in evidence["method"]


def _matrix(first: np.ndarray, rerank: np.ndarray, candidates: list[Candidate]) -> np.ndarray:
    return np.stack([first if not c.rerank else rerank + 0.001 * c.rerank_weight * (c.depth / 100) for c in candidates])


def test_the_rule_keeps_the_first_stage_when_reranking_is_not_supported() -> None:
    rng = np.random.default_rng(7)
    candidates = candidate_settings(100)
    first = rng.uniform(0.2, 0.8, 30)
    # worse on average: never recommended
    worse = _matrix(first, first - 0.05 + rng.normal(0, 0.05, 30), candidates)
    report = tune_matrix(worse, candidates)
    assert not report.settings.rerank and report.chosen == "first stage" and report.cv_gain[3] > 0.05
    assert "not supported" in report.reason
    # noise around the first stage: not recommended either
    noise = _matrix(first, first + rng.normal(0, 0.1, 30), candidates)
    assert not tune_matrix(noise, candidates).settings.rerank


def test_the_rule_takes_the_shallowest_depth_within_reach_of_the_best() -> None:
    candidates = candidate_settings(100)
    rng = np.random.default_rng(3)
    first = rng.uniform(0.2, 0.6, 30)
    rows = []
    for c in candidates:
        if not c.rerank:
            rows.append(first)
        else:  # gain grows with depth up to 30, then flat; the cross-encoder alone is best
            rows.append(first + 0.2 * min(c.depth, 30) / 30 * c.rerank_weight)
    report = tune_matrix(np.stack(rows), candidates)
    assert report.settings.rerank and report.settings.depth == 30 and report.settings.rerank_weight == 1.0


def test_too_few_judged_queries_are_refused(judged: list[JudgedQuery], qrels: dict[str, dict[str, int]]) -> None:
    with pytest.raises(InputError, match="at least 10 judged queries"):
        tune(judged[:9], qrels)
    with pytest.raises(InputError, match="candidates but"):
        JudgedQuery("q", ["a", "b"], np.zeros(2), np.zeros(3))


def test_settings_files_round_trip_and_bad_ones_are_named(tmp_path: Path) -> None:
    s = SearchSettings(rerank=True, depth=30, rerank_weight=0.7, model="default", evidence={"queries": 30})
    assert load_settings(s.save(tmp_path / "s.json")) == s
    bad = tmp_path / "bad.json"
    for text, words in (
        ("{not json", "not readable JSON"),
        ('{"format": "other/1"}', "is not a crossrank-settings/1 file"),
        ('{"format": "crossrank-settings/1", "depth": 0}', "depth must be an integer >= 1"),
        ('{"format": "crossrank-settings/1", "rerank_weight": 2}', "rerank_weight must be within [0, 1]"),
        ('{"format": "crossrank-settings/1", "deep": 3}', "unknown key(s) ['deep']"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(words)):
            load_settings(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.json")


def test_cli_tune_writes_settings_that_search_loads_and_flags_override(index: Path, tmp_path: Path) -> None:
    out = tmp_path / "settings.json"
    res = crossrank(
        "tune", "--qrels", EXAMPLES / "qrels.tsv", "--queries", EXAMPLES / "queries.jsonl",
        "--run", EXAMPLES / "bm25.top100.trec", "--corpus", EXAMPLES / "corpus.jsonl",
        "--depth", DEPTH, "--output", out, "--json", tmp_path / "report.json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "<- chosen" in res.stderr and "reranking gains" in res.stderr and "Traceback" not in res.stderr
    tuned = load_settings(out)
    assert tuned.rerank and tuned.depth in (10, 20) and tuned.model == "default"
    assert json.loads((tmp_path / "report.json").read_text())["chosen"] == tuned.evidence["chosen"]
    # a hand-made file: no reranking; search obeys it unless --rerank is given
    plain = SearchSettings(rerank=False).save(tmp_path / "plain.json")
    args = ("search", "--index", index, "what is a famous french dish", "--format", "jsonl", "--k", "5")
    got = json.loads(crossrank(*args, "--settings", plain).stdout)
    assert got["reranked"] is False
    got = json.loads(crossrank(*args, "--settings", plain, "--rerank", "--depth", "15").stdout)
    assert got["reranked"] is True and got["depth"] == 15
    got = json.loads(crossrank(*args, "--settings", out).stdout)
    assert got["reranked"] is True and got["depth"] == tuned.depth
    bad = crossrank(*args, "--settings", tmp_path / "nope.json")
    assert bad.returncode != 0 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    # judgments whose ids match no query: one line
    (tmp_path / "other.tsv").write_text("query-id\tcorpus-id\tscore\nnope\tdoc\t1\n")
    res = crossrank(
        "tune", "--qrels", tmp_path / "other.tsv", "--queries", EXAMPLES / "queries.jsonl", "--index", index
    )
    assert res.returncode != 0 and "has a text in" in res.stderr and "Traceback" not in res.stderr


def test_serve_takes_the_settings_for_what_a_search_request_leaves_out(
    index: Path, default_model: CrossEncoder
) -> None:
    from crossrank.serve import create_app
    from test_serve import serving

    app = create_app(default_model, index=index, settings=SearchSettings(rerank=True, depth=15, rerank_weight=0.5))
    with serving(app) as base, httpx.Client(timeout=60) as http:
        body = http.post(f"{base}/v1/search", json={"query": "what is a famous french dish", "k": 5}).json()
        assert body["depth"] == 15 and body["reranked"] is True
        body = http.post(f"{base}/v1/search", json={"query": "what is a famous french dish", "k": 5, "depth": 12})
        assert body.json()["depth"] == 12
        body = http.post(f"{base}/v1/search", json={"query": "what is a famous french dish", "k": 5, "rerank": False})
        assert body.json()["reranked"] is False
    pipe = Pipeline(index, reranker=default_model, settings=SearchSettings(rerank=True, depth=15, rerank_weight=0.5))
    direct = pipe.search("what is a famous french dish", k=5)
    assert direct.depth == 15
    blended = Pipeline(index, reranker=default_model, rerank_weight=0.5).search(
        "what is a famous french dish", k=5, depth=15
    )
    assert [h.doc_id for h in direct.hits] == [h.doc_id for h in blended.hits]


def test_ray_serving_reads_the_settings_file_before_any_replica_starts(tmp_path: Path) -> None:
    from crossrank.scale.serving import build_application

    with pytest.raises(ConfigError, match="does not exist; write one with `crossrank tune`"):
        build_application("default", settings=tmp_path / "missing.json")
    app = build_application("default", settings=SearchSettings(rerank=False).save(tmp_path / "plain.json"))
    assert SearchSettings(rerank=False) in app._bound_deployment.init_args  # bound for every replica, already read


def test_tune_reads_the_judge_pages_file_and_its_sidecar_without_a_queries_file(
    index: Path, tmp_path: Path, qrels: dict[str, dict[str, int]]
) -> None:
    from crossrank.serve.judge import JudgeSession

    # ten queries judged through the judge session (the page's API), grades taken from the shipped qrels
    session = JudgeSession(tmp_path / "judged.qrels", read_beir_queries(EXAMPLES / "queries.jsonl"), depth=DEPTH)
    run = {q: [d for d, _ in docs] for q, docs in read_trec_run(EXAMPLES / "bm25.top100.trec").items()}
    for q in session.queries():
        session.set_pool(q["id"], run[q["id"]][:DEPTH], run[q["id"]][DEPTH : 2 * DEPTH])
        for doc, _ in session.pool(q["id"]):
            session.judge_document(q["id"], doc, min(qrels[q["id"]].get(doc, 0), 2))
    res = crossrank(
        "tune", "--qrels", tmp_path / "judged.qrels", "--run", EXAMPLES / "bm25.top100.trec",
        "--corpus", EXAMPLES / "corpus.jsonl", "--depth", DEPTH, "--output", tmp_path / "s.json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "on 10 judged queries" in res.stderr and load_settings(tmp_path / "s.json").evidence["queries"] == 10
    (tmp_path / "plain.qrels").write_text("1 0 d 1\n")
    res = crossrank("tune", "--qrels", tmp_path / "plain.qrels", "--index", index)
    assert res.returncode != 0 and "pass --queries FILE" in res.stderr and "Traceback" not in res.stderr
