"""One result family: a reranking and a search return the same kind of hit and list."""

from __future__ import annotations

import io

from crossrank import CrossEncoder
from crossrank.io import write_trec_run
from crossrank.pipeline import Pipeline, SearchHit, SearchResult
from crossrank.ranking import Hit, Ranking
from crossrank.rerank.testing import FakeScorer
from crossrank.retrieve.testing import DictFirstStage

DOCS = {
    "d1": "black cats sleep all day",
    "d2": "a black cat and a black dog",
    "d3": "dogs chase cats",
    "d4": "the cat is black",
}


def test_a_search_hit_is_a_hit_and_a_search_result_is_a_ranking() -> None:
    stage = DictFirstStage(dict(DOCS))
    ce = CrossEncoder(FakeScorer())
    result = Pipeline(stage, reranker=ce).search("black cat", k=3, depth=4, query_id="q1")
    ranking = ce.rerank("black cat", [{"id": d, "text": t} for d, t in DOCS.items()], k=3, query_id="q1")

    assert isinstance(result, SearchResult) and isinstance(result, Ranking)
    assert all(isinstance(h, SearchHit) and isinstance(h, Hit) for h in result.hits)
    assert type(ranking) is Ranking and all(type(h) is Hit for h in ranking.hits)
    # both count rank from 1 and index from 0, in the list each ranked
    assert [h.rank for h in result.hits] == [1, 2, 3] == [h.rank for h in ranking.hits]
    assert all(h.index == h.first_stage_rank - 1 for h in result.hits)
    candidates = stage.retrieve(["black cat"], k=4)[0].doc_ids
    assert [candidates[h.index] for h in result.hits] == result.doc_ids()
    texts = list(DOCS.values())
    assert (
        [texts[h.index] for h in ranking.hits]
        == [DOCS[d] for d in ranking.doc_ids()]
        == [DOCS[d] for d in ("d2", "d4", "d1")]
    )
    assert result.num_truncated == 0 and len(result) == 3


def test_one_writer_writes_a_search_and_a_reranking_of_the_same_order_alike() -> None:
    stage = DictFirstStage(dict(DOCS))
    ce = CrossEncoder(FakeScorer())
    result = Pipeline(stage, reranker=ce).search("black cat", k=3, depth=4, query_id="q1")
    ids = list(result.doc_ids())
    # rerank the same candidates, given in the search's final order, with the same scorer
    ranking = ce.rerank("black cat", [{"id": d, "text": DOCS[d]} for d in ids], k=3, query_id="q1")
    a, b = io.StringIO(), io.StringIO()
    assert write_trec_run([result], a) == write_trec_run([ranking], b) == 3
    assert a.getvalue() == b.getvalue()
    assert a.getvalue().splitlines()[0].split()[:4] == ["q1", "Q0", ids[0], "1"]


def test_to_dict_keeps_what_each_kind_reports() -> None:
    ce = CrossEncoder(FakeScorer())
    ranking = ce.rerank("black cat", [{"id": "x", "text": "a black cat"}], query_id="q")
    assert ranking.to_dict() == {
        "query_id": "q",
        "num_truncated": 0,
        "hits": [
            {
                "doc_id": "x",
                "rank": 1,
                "score": ranking.hits[0].score,
                "index": 0,
                "truncated": False,
                "document": {"id": "x", "text": "a black cat"},
            }
        ],
    }
    hit = Pipeline(DictFirstStage(dict(DOCS)), reranker=None).search("black cat", k=1).hits[0]
    assert set(hit.to_dict()) == {
        "doc_id",
        "rank",
        "score",
        "first_stage_rank",
        "first_stage_score",
        "rerank_score",
        "truncated",
        "document",
    }


def test_a_runs_candidates_are_cut_at_depth_before_missing_ids_are_dropped(tmp_path) -> None:
    from crossrank.io import read_run_candidates, run_top_ids
    from crossrank.train.data import first_stage_candidates

    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 3.0 r\nq1 Q0 gone 2 2.0 r\nq1 Q0 d3 3 1.0 r\nq2 Q0 d2 1 5.0 r\n", encoding="utf-8")
    (tmp_path / "corpus.jsonl").write_text(
        "".join(f'{{"_id": "{d}", "text": "text of {d}"}}\n' for d in ("d1", "d2", "d3")), encoding="utf-8"
    )
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "one"}\n{"_id": "q2", "text": "two"}\n')
    corpus = {"d1", "d2", "d3"}
    assert run_top_ids(run, 2) == {"q1": ["d1", "gone"], "q2": ["d2"]}
    # a missing document never lets a deeper one in
    assert run_top_ids(run, 2, corpus=corpus) == {"q1": ["d1"], "q2": ["d2"]}
    assert run_top_ids(run, 2, queries=["q3", "q2"], corpus=corpus) == {"q3": [], "q2": ["d2"]}
    # training and reranking read the same candidates from the same run
    assert first_stage_candidates(run, {}, depth=2) == run_top_ids(run, 2)
    got = read_run_candidates(run, tmp_path / "queries.jsonl", tmp_path / "corpus.jsonl", depth=2, skip_missing=True)
    assert [[r["id"] for r in recs] for recs in got.documents] == [["d1"], ["d2"]]
    assert got.ranked == {"q1": ("d1", "gone"), "q2": ("d2",)} and got.missing_docs == ("gone",)
