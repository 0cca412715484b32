"""Evaluation: trec_eval's numbers on the shared TREC DL runs, and runs with problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrank.errors import InputError
from crossrank.evaluate.metrics import evaluate, read_run_checked
from crossrank.io import read_qrels
from test_cli import crossrank


def test_metrics_equal_trec_eval_on_dl19(dl19: Path) -> None:
    import ir_measures

    qrels = read_qrels(dl19 / "qrels" / "test.tsv")
    runs, checks = {}, {}
    for name in ("bm25", "splade_pp_ed"):
        runs[name], checks[name] = read_run_checked(dl19 / "runs" / f"{name}.top100.trec")
    result = evaluate(qrels, runs, "nDCG@10 RR@10 R@100 AP", rel=2, checks=checks)
    # published (Anserini / Pyserini) values, as checked in ../shared/data/SOURCES.md
    assert round(result.aggregate["bm25"]["nDCG@10"], 4) == 0.5058
    assert round(result.aggregate["splade_pp_ed"]["nDCG@10"], 4) == 0.7308
    # every measure equals ir-measures' own aggregate (pytrec_eval, i.e. trec_eval) to 4 decimals
    for name in runs:
        qrel_list = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
        docs = [ir_measures.ScoredDoc(q, d, s) for q, hits in runs[name].items() for d, s in hits.items()]
        ms = [ir_measures.parse_measure(m) for m in ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "AP(rel=2)")]
        want = ir_measures.calc_aggregate(ms, qrel_list, docs)
        for m in ms:
            assert result.aggregate[name][str(m)] == pytest.approx(want[m], abs=5e-5)
    assert result.measures == ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "AP(rel=2)"]
    assert len(result.queries) == 43 and not checks["bm25"].notes()


def test_problem_runs_are_reported_never_silent(dl19: Path, tmp_path: Path) -> None:
    qrels = read_qrels(dl19 / "qrels" / "test.tsv")
    lines = (dl19 / "runs" / "bm25.top100.trec").read_text().splitlines()
    first_q = lines[0].split()[0]
    kept = [ln for ln in lines if ln.split()[0] != first_q]  # one judged query has no results
    extra = ["999999 Q0 D1 1 5.0 x", "999999 Q0 D2 2 4.0 x"]  # a query nobody judged
    dup = kept[0]  # the same (query, document) twice
    bad = tmp_path / "run.trec"
    bad.write_text("\n".join([*kept, dup, *extra]) + "\n")
    with pytest.raises(InputError, match=r"run.trec:\d+ repeats document"):
        read_run_checked(bad)
    run, check = read_run_checked(bad, duplicates="skip")
    skip = evaluate(qrels, {"r": run}, "nDCG@10", checks={"r": check})
    zero = evaluate(qrels, {"r": run}, "nDCG@10", missing="zero")
    notes = " ".join(skip.checks["r"].notes())
    assert (
        "1 duplicate" in notes
        and "1 queries have no judgments" in notes
        and "1 judged queries have no results" in notes
    )
    assert len(skip.per_query["r"]["nDCG@10"]) == 42 and len(zero.per_query["r"]["nDCG@10"]) == 43
    assert zero.aggregate["r"]["nDCG@10"] == pytest.approx(skip.aggregate["r"]["nDCG@10"] * 42 / 43)
    malformed = tmp_path / "malformed.trec"
    malformed.write_text("1 Q0 D1 1 x tag\n")
    with pytest.raises(InputError, match=r"malformed\.trec:1 has a non-numeric rank or score"):
        read_run_checked(malformed)
    with pytest.raises(InputError, match="unknown measure"):
        evaluate(qrels, {"r": run}, "nDCG@ten")
    with pytest.raises(InputError, match="none of its"):
        evaluate(qrels, {"r": {"x": {"d": 1.0}}}, "nDCG@10")


def test_cli_eval_side_by_side(dl19: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    res = crossrank(
        "eval",
        "--qrels", str(dl19 / "qrels" / "test.tsv"),
        "--run", str(dl19 / "runs" / "bm25.top100.trec"),
        "--run", str(dl19 / "runs" / "tasb.top100.trec"),
        "--measures", "nDCG@10 R@100",
        "--rel", "2",
        "--json", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "0.5058" in res.stdout and "0.7210" in res.stdout
    data = json.loads(out.read_text())
    assert data["aggregate"]["tasb.top100.trec"]["nDCG@10"] == pytest.approx(0.7210, abs=5e-5)
    assert len(data["per_query"]["bm25.top100.trec"]["R(rel=2)@100"]) == 43
    res = crossrank("eval", "--qrels", str(dl19 / "qrels" / "test.tsv"), "--run", str(tmp_path / "none.trec"))
    assert res.returncode == 2 and "cannot open run" in res.stderr
