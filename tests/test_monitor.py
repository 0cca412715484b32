"""Label-free signals, reference profiles, drift and the verdict: hand-built cases, then the real model and data.

The server tests run the real default model behind a real socket (``serving`` from test_serve.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from conftest import beir
from crossrank import CrossEncoder, Pipeline
from crossrank.drift import KS_P_THRESHOLD, MIN_QUERIES, PSI_THRESHOLD, Profile, drift, ks_2samp, psi
from crossrank.errors import ConfigError, InputError
from crossrank.evaluate.monitor import index_signals, run_signals, verdict
from crossrank.io import read_beir_queries
from crossrank.retrieve.index import Index
from crossrank.serve import create_app
from crossrank.signals import QuerySignals, kendall_tau, query_signals, query_signals_many, rank_biased_overlap
from test_serve import EXAMPLES, HTTP_TIMEOUT, metric, serving

DL19 = beir("trec-dl-2019-passage")
CISI = beir("cisi")
#: candidates reranked per query in the drift tests: enough for the score distribution, cheap on two cores
DEPTH = 20


def texts(n: int) -> list[str]:
    return [f"passage number {i} about something long enough" for i in range(n)]


# ---------------------------------------------------------------------- signals on hand-built cases


def test_identity_order_agrees_fully() -> None:
    s = query_signals(np.linspace(1.0, 0.0, 30), query="what is a cat", texts=texts(30))
    assert s.kendall_tau == 1.0 and s.rbo == pytest.approx(1.0) and not s.top_changed
    assert s.displacement == 0.0 and s.depth == 30 and s.query_words == 4
    assert s.duplicates == 0 and s.short_share == 0.0 and s.truncated_share == 0.0 and s.above_threshold is None


def test_reversed_order_disagrees_fully() -> None:
    s = query_signals(np.linspace(0.0, 1.0, 10), query="q", texts=texts(10))
    assert s.kendall_tau == -1.0 and s.top_changed
    assert s.displacement == pytest.approx(5.0)  # |9 - 2j| over j = 0..9
    assert s.rbo == pytest.approx(rbo_reference(list(range(9, -1, -1)), 10, 0.9))


def test_ties_keep_first_stage_order() -> None:
    s = query_signals(np.full(12, 0.5), query="q", texts=texts(12))
    assert s.kendall_tau == 1.0 and not s.top_changed and s.margin == 0.0 and s.score_std == 0.0


def rbo_reference(order: list[int], k: int, p: float) -> float:
    """Extrapolated RBO written out from Webber et al. (2010), eq. 32, one depth at a time."""
    first = list(range(k))
    total = 0.0
    for d in range(1, k + 1):
        total += len(set(order[:d]) & set(first[:d])) / d * p**d
    x_k = len(set(order[:k]) & set(first))
    return x_k / k * p**k + (1 - p) / p * total


def test_kendall_and_rbo_equal_the_references_on_random_rankings() -> None:
    rng = np.random.default_rng(7)
    for n in (2, 5, 10, 40, 100):
        for _ in range(20):
            scores = rng.random(n)
            order = np.argsort(-scores, kind="stable")
            k = min(10, n)
            want_tau = stats.kendalltau(order[:k], np.arange(k)).statistic if k > 1 else 1.0
            assert kendall_tau(order, 10) == pytest.approx(want_tau)
            assert rank_biased_overlap(order, 10) == pytest.approx(rbo_reference(order.tolist(), k, 0.9))
            s = query_signals(scores, query="q", texts=texts(n))
            assert s.kendall_tau == pytest.approx(want_tau)
            assert s.top_score == pytest.approx(scores.max())
            assert s.score_std == pytest.approx(scores.std())
            q1, q3 = np.percentile(scores, [25, 75])
            assert s.score_iqr == pytest.approx(q3 - q1)
            if n > 1:
                assert s.margin == pytest.approx(np.sort(scores)[-1] - np.sort(scores)[-2])


def test_input_health_signals() -> None:
    docs = ["a real passage about cats", "a real passage about cats", "", "   tiny  ", "another real passage here"]
    s = query_signals(
        [0.9, 0.8, 0.1, 0.2, 0.6],
        query="  cats and   dogs ",
        texts=docs,
        truncated=[True, False, False, False, True],
        threshold=0.5,
    )
    assert s.duplicates == 1 and s.short_share == pytest.approx(2 / 5) and s.truncated_share == pytest.approx(2 / 5)
    assert s.query_words == 3 and s.above_threshold == pytest.approx(3 / 5)
    assert QuerySignals.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    batch = query_signals_many(
        [[0.9, 0.1], [0.2, 0.8, 0.5]], queries=["a", "b c"], texts=[["x", "y"], ["x", "y", "z"]], threshold=0.5
    )
    assert batch == [
        query_signals([0.9, 0.1], query="a", texts=["x", "y"], threshold=0.5),
        query_signals([0.2, 0.8, 0.5], query="b c", texts=["x", "y", "z"], threshold=0.5),
    ]
    with pytest.raises(InputError, match="one per query"):
        query_signals_many([[0.1]], queries=["a", "b"], texts=[["x"]])
    with pytest.raises(InputError, match="2 texts"):
        query_signals([0.1, 0.2, 0.3], query="q", texts=["a", "b"])
    with pytest.raises(InputError, match="at least one"):
        query_signals([], query="q", texts=[])


def test_psi_and_ks() -> None:
    rng = np.random.default_rng(3)
    ref, same, moved = rng.normal(0, 1, 400), rng.normal(0, 1, 300), rng.normal(1.0, 1, 300)
    assert psi(ref, ref) == 0.0 and psi(ref, same) < 0.1 and psi(ref, moved) > PSI_THRESHOLD
    for sample in (same, moved, rng.normal(0.2, 1, 40)):
        want = stats.ks_2samp(ref, sample, method="asymp")
        d, p = ks_2samp(ref, sample)
        assert d == pytest.approx(want.statistic)
        assert p == pytest.approx(want.pvalue, abs=0.02)
    assert ks_2samp(ref, moved)[1] < KS_P_THRESHOLD < ks_2samp(ref, same)[1]


# ---------------------------------------------------------------------- the library attaches them


def test_rerank_and_search_carry_the_signals(default_model: CrossEncoder, tmp_path: Path) -> None:
    queries = read_beir_queries(EXAMPLES / "queries.jsonl")
    query = next(iter(queries.values()))
    index = Index.build(tmp_path / "idx", EXAMPLES / "corpus.jsonl", retriever="bm25")
    result = Pipeline(index, reranker=default_model).search(query, k=3, depth=15)
    assert result.signals is not None and result.signals.depth == 15
    candidates = index.first_stage("bm25").retrieve([query], 15)[0].doc_ids
    records = [dict(r) for r in index.get(list(candidates)) if r is not None]
    ranking = default_model.rerank(query, records, k=3)
    assert len(ranking.hits) == 3 and ranking.signals == result.signals  # all 15 candidates, not the top 3
    scores = default_model.score([(query, t) for t in _texts(records)])
    assert ranking.signals == query_signals(scores, query=query, texts=_texts(records))
    assert ranking.signals.top_changed == (ranking.hits[0].index != 0)
    assert Pipeline(index, reranker=default_model).search(query, k=3, rerank=False).signals is None


def _texts(records: list[dict[str, Any]]) -> list[str]:
    from crossrank.documents import record_text

    return [record_text(r) for r in records]


# ---------------------------------------------------------------------- profiles, drift, the verdict


@pytest.fixture(scope="module")
def dl19_signals(default_model: CrossEncoder) -> dict[str, QuerySignals]:
    """Every DL 2019 query's signals, reranking the top 20 of its BM25 run."""
    return run_signals(
        default_model,
        run=DL19 / "runs" / "bm25.top100.trec",
        queries=DL19 / "queries.jsonl",
        corpus=DL19 / "corpus.jsonl",
        depth=DEPTH,
    )


@pytest.fixture(scope="module")
def dl19_profile(default_model: CrossEncoder, dl19_signals: dict[str, QuerySignals]) -> Profile:
    return Profile.from_signals(list(dl19_signals.values()), model=default_model.name, depth=DEPTH)


def test_a_profile_round_trips(dl19_profile: Profile, tmp_path: Path) -> None:
    path = dl19_profile.save(tmp_path / "profile.json")
    loaded = Profile.load(path)
    assert loaded == dl19_profile and loaded.num_queries == 43
    assert set(loaded.values) >= {"kendall_tau", "top_score", "score_std", "query_words"}
    path.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a crossrank profile"):
        Profile.load(path)


def test_the_profiles_own_queries_do_not_drift(dl19_profile: Profile, dl19_signals: dict[str, QuerySignals]) -> None:
    window = list(dl19_signals.values())
    for start in (0, 13):
        report = drift(dl19_profile, window[start : start + MIN_QUERIES])
        assert report.num_queries == MIN_QUERIES and not report.drifted, report.to_dict()
    assert not drift(dl19_profile, window[:10]).drifted  # too few queries to judge


@pytest.fixture(scope="module")
def dl21_signals(default_model: CrossEncoder) -> dict[str, QuerySignals]:
    """Every DL 2021 query's signals, reranking the top 20 of its BM25 run (in the run's order)."""
    dl21 = beir("trec-dl-2021-passage")
    return run_signals(
        default_model,
        run=dl21 / "runs" / "bm25.top100.trec",
        queries=dl21 / "queries.jsonl",
        corpus=dl21 / "corpus.jsonl",
        depth=DEPTH,
    )


def test_dl21_traffic_does_not_drift_from_a_dl19_profile(
    dl19_profile: Profile, dl21_signals: dict[str, QuerySignals]
) -> None:
    first = list(dl21_signals.values())[:MIN_QUERIES]
    report = drift(dl19_profile, first)
    assert report.num_queries == MIN_QUERIES and not report.drifted, report.to_dict()
    # DL 2021's queries are about twice as long: the input signal moves, and is reported without a flag
    assert report.drifted_inputs == ["query_words"]
    # helping against a trusted profile it does not drift from; without one, confidence alone is not evidence
    result = verdict(first, reference=dl19_profile)
    assert result.label == "helping" and result.drift is not None and not result.drift.drifted, result.to_dict()
    alone = verdict(first)
    assert alone.label == "unclear" and "no reference profile" in alone.reason


def test_server_keeps_the_drift_flag_down_on_dl21_traffic_against_a_dl19_profile(
    default_model: CrossEncoder, dl19_profile: Profile, tmp_path: Path
) -> None:
    from crossrank.documents import record_text
    from crossrank.io import read_run_candidates

    dl21 = beir("trec-dl-2021-passage")
    cands = read_run_candidates(
        dl21 / "runs" / "bm25.top100.trec", dl21 / "queries.jsonl", dl21 / "corpus.jsonl", depth=DEPTH
    )
    path = dl19_profile.save(tmp_path / "dl19.json")
    with serving(create_app(default_model, profile=path)) as base:
        states = []
        for query, docs in list(zip(cands.queries, cands.documents, strict=True))[:MIN_QUERIES]:
            body = {"query": query, "documents": [record_text(d) for d in docs]}
            assert httpx.post(f"{base}/v1/rerank", json=body, timeout=HTTP_TIMEOUT).status_code == 200
            states.append(httpx.get(f"{base}/v1/monitor", timeout=HTTP_TIMEOUT).json()["drift"])
        summary = httpx.get(f"{base}/v1/monitor", timeout=HTTP_TIMEOUT).json()
    assert states == [False] * MIN_QUERIES and summary["drift"] is False
    report = summary["windows"]["last_100"]["drift"]
    assert report["num_queries"] == MIN_QUERIES and report["drifted_signals"] == [], report


def test_verdict_says_helping_on_dl19_against_a_dl21_reference(
    default_model: CrossEncoder,
    dl19_profile: Profile,
    dl19_signals: dict[str, QuerySignals],
    dl21_signals: dict[str, QuerySignals],
) -> None:
    reference = Profile.from_signals(
        list(dl21_signals.values()), model=default_model.name, depth=DEPTH, source="DL 2021"
    )
    result = verdict(dl19_profile, reference=reference)
    assert result.label == "helping", result.to_dict()
    assert result.to_dict()["reference"] == "DL 2021" and result.to_dict()["drift"]["drifted"] is False
    few = verdict(list(dl19_signals.values())[:15], reference=reference)
    assert few.label == "unclear" and "too few" in few.reason
    with pytest.raises(ConfigError, match="probabilities"):
        verdict(list(dl19_signals.values()), activation="none")


def test_the_shipped_reference_is_the_default_models_dl19_profile() -> None:
    from crossrank.evaluate.monitor import builtin_reference

    shipped = builtin_reference("default")
    assert shipped is not None and shipped.num_queries == 43 and shipped.depth == 100
    assert builtin_reference("ms-marco-MiniLM-L-12-v2") == shipped
    assert builtin_reference("fast") is None and builtin_reference("/some/folder") is None


def test_cli_profile_then_verdict(tmp_path: Path) -> None:
    from crossrank.cli.app import app

    out = tmp_path / "profile.json"
    args = ["monitor", "profile", "--queries", str(DL19 / "queries.jsonl"), "--run"]
    args += [str(DL19 / "runs" / "bm25.top100.trec"), "--corpus", str(DL19 / "corpus.jsonl")]
    result = CliRunner().invoke(app, [*args, "--depth", "10", "--limit", "4", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["num_queries"] == 4
    assert Profile.load(out).depth == 10
    result = CliRunner().invoke(app, ["monitor", "verdict", "--profile", str(out)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.splitlines()[-1])
    assert body["verdict"] in ("helping", "unclear", "likely hurting") and body["num_queries"] == 4
    assert body["reference"] is not None and body["reference"].startswith("trec-dl-2019-passage")  # the shipped one
    result = CliRunner().invoke(app, ["monitor", "verdict", "--profile", str(out), "--reference", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["verdict"] != "helping"  # 4 queries are too few to compare
    result = CliRunner().invoke(app, ["monitor", "profile", "--queries", str(DL19 / "queries.jsonl"), "-o", str(out)])
    assert result.exit_code != 0 and "--index DIR" in result.output


# ---------------------------------------------------------------------- the server


def test_server_counts_rerankings_in_monitor_and_metrics(default_model: CrossEncoder, tmp_path: Path) -> None:
    index = Index.build(tmp_path / "idx", EXAMPLES / "corpus.jsonl", retriever="bm25")
    docs = ["A cat is a small feline.", "Paris is in France.", "Cats purr when content."]
    with serving(create_app(default_model, index=index)) as base:
        post = [
            ("/v1/rerank", {"query": "what is a cat", "documents": docs}),
            ("/v2/rerank", {"query": "what is a cat", "documents": docs, "top_n": 1}),
            ("/rerank", {"query": "what is a cat", "texts": docs, "raw_scores": True}),
            ("/v1/search", {"query": "what is a cat", "k": 2, "depth": 5}),
            ("/v1/score", {"pairs": [["what is a cat", docs[0]]]}),  # scores, no reranking: not counted
        ]
        for path, body in post:
            assert httpx.post(f"{base}{path}", json=body, timeout=HTTP_TIMEOUT).status_code == 200, path
        summary = httpx.get(f"{base}/v1/monitor", timeout=HTTP_TIMEOUT).json()
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    assert summary["total"] == 4 and summary["drift"] is False and summary["profile"] is None
    last = summary["windows"]["last_100"]
    assert last["count"] == 4 and "drift" not in last
    assert 0.0 <= last["signals"]["top_score"]["p50"] <= 1.0  # raw-score requests are read as probabilities
    want = default_model.rerank("what is a cat", docs).signals
    assert want is not None and last["signals"]["query_words"]["mean"] == want.query_words
    assert metric(text, "crossrank_monitor_queries_total") == 4
    assert metric(text, "crossrank_signal_top_score_count") == 4
    assert metric(text, "crossrank_signal_kendall_tau_count") == 4
    assert metric(text, "crossrank_drift") == 0


@pytest.fixture(scope="module")
def cisi_candidates(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, list[str]]]:
    """(query, BM25's top 20 texts) for the first CISI queries, BM25 over all of CISI."""
    from crossrank.documents import record_text

    index = Index.build(tmp_path_factory.mktemp("cisi") / "bm25", CISI / "corpus.jsonl", retriever="bm25")
    queries = list(read_beir_queries(CISI / "queries.jsonl").values())[:MIN_QUERIES]
    found = index.first_stage("bm25").retrieve(queries, DEPTH)
    return [
        (q, [record_text(r) for r in index.get(list(f.doc_ids)) if r is not None])
        for q, f in zip(queries, found, strict=True)
    ]


def test_server_flags_drift_from_cisi_traffic_against_a_dl19_profile(
    default_model: CrossEncoder,
    dl19_profile: Profile,
    cisi_candidates: list[tuple[str, list[str]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = dl19_profile.save(tmp_path / "dl19.json")
    caplog.set_level(logging.INFO, logger="crossrank.serve")
    with serving(create_app(default_model, profile=path)) as base:
        states = []
        for query, docs in cisi_candidates:
            r = httpx.post(f"{base}/v1/rerank", json={"query": query, "documents": docs}, timeout=HTTP_TIMEOUT)
            assert r.status_code == 200
            states.append(httpx.get(f"{base}/v1/monitor", timeout=HTTP_TIMEOUT).json()["drift"])
        summary = httpx.get(f"{base}/v1/monitor", timeout=HTTP_TIMEOUT).json()
        text = httpx.get(f"{base}/metrics", timeout=HTTP_TIMEOUT).text
    assert states[: MIN_QUERIES - 1] == [False] * (MIN_QUERIES - 1)  # judged from MIN_QUERIES queries on
    assert states[-1] is True and summary["drift"] is True
    # as confident as on DL, but drifted from the profile where reranking helped: not "helping"
    cisi = [default_model.rerank(q, docs).signals for q, docs in cisi_candidates]
    judged = verdict([x for x in cisi if x is not None], reference=dl19_profile)
    assert judged.label != "helping" and judged.drift is not None and judged.drift.drifted, judged.to_dict()
    report = summary["windows"]["last_100"]["drift"]
    assert report["drift"] and report["num_queries"] == MIN_QUERIES
    assert {"top_score", "margin"} <= set(report["drifted_signals"])  # the model is less sure on CISI
    assert report["drifted_inputs"] == ["query_words"]  # CISI's queries are long statements: reported, no flag
    assert summary["profile"]["num_queries"] == 43
    assert metric(text, "crossrank_drift") == 1
    assert metric(text, "crossrank_drift_psi", signal="top_score") > PSI_THRESHOLD
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("drift:")]
    assert len(lines) == 1 and "top_score" in lines[0]


def test_index_signals_come_from_the_pipeline(default_model: CrossEncoder, tmp_path: Path) -> None:
    index = Index.build(tmp_path / "idx", EXAMPLES / "corpus.jsonl", retriever="bm25")
    found = index_signals(default_model, index=index, queries=EXAMPLES / "queries.jsonl", depth=8, limit=3)
    queries = read_beir_queries(EXAMPLES / "queries.jsonl")
    assert list(found) == list(queries)[:3]
    pipe = Pipeline(index, reranker=default_model)
    for qid, signals in found.items():
        assert signals == pipe.search(queries[qid], k=1, depth=8).signals


def test_a_missing_or_foreign_profile_stops_the_server_at_start(default_model: CrossEncoder, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        create_app(default_model, profile=tmp_path / "missing.json")
    (tmp_path / "calibration.json").write_text('{"format": "crossrank-calibration"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a crossrank profile"):
        create_app(default_model, profile=tmp_path / "calibration.json")
