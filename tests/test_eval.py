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
    assert "1 duplicate" in notes and "1 query has no judgments" in notes and "1 judged query has no results" in notes
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


def test_paired_comparison_on_real_per_query_values(dl19: Path) -> None:
    from scipy.stats import ttest_rel

    from crossrank.evaluate.significance import paired_comparison

    qrels = read_qrels(dl19 / "qrels" / "test.tsv")
    runs = {n: read_run_checked(dl19 / "runs" / f"{n}.top100.trec")[0] for n in ("bm25", "bm25_rm3", "splade_pp_ed")}
    per_query = evaluate(qrels, runs, "nDCG@10").per_query
    qs = sorted(per_query["bm25"]["nDCG@10"])
    vals = {n: [per_query[n]["nDCG@10"][q] for q in qs] for n in runs}
    big = paired_comparison(vals["bm25"], vals["splade_pp_ed"])
    assert big.significant() and big.mean_diff == pytest.approx(0.7308 - 0.5058, abs=1e-4)
    assert big.t_p == pytest.approx(ttest_rel(vals["splade_pp_ed"], vals["bm25"]).pvalue)
    assert big.ci_low > 0 and big.wins + big.ties + big.losses == 43
    small = paired_comparison(vals["bm25"], vals["bm25_rm3"])  # RM3: +0.016, not significant on 43 queries
    assert not small.significant() and small.ci_low < 0 < small.ci_high
    assert abs(small.randomization_p - small.t_p) < 0.1  # the two tests agree on real data
    same = paired_comparison(vals["bm25"], vals["bm25"])
    assert (same.t_p, same.randomization_p, same.ties, same.mean_diff) == (1.0, 1.0, 43, 0.0)


def test_cli_compare_marks_significant_differences(dl19: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    runs = [str(dl19 / "runs" / f"{n}.top100.trec") for n in ("bm25", "bm25_rm3", "splade_pp_ed")]
    res = crossrank(
        "compare", "--qrels", str(dl19 / "qrels" / "test.tsv"), "--run", runs[0], "--run", runs[1],
        "--run", runs[2], "--measures", "nDCG@10", "--json", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "0.7308*" in res.stdout and "0.5216 " in res.stdout and "0.5216*" not in res.stdout  # SPLADE marked, RM3 not
    data = json.loads(out.read_text())
    assert data["baseline"] == "bm25.top100.trec"
    assert data["comparisons"]["splade_pp_ed.top100.trec"]["nDCG@10"]["t_p"] < 0.001
    res = crossrank("compare", "--qrels", str(dl19 / "qrels" / "test.tsv"), "--run", runs[0])
    assert res.returncode == 2 and "at least two" in res.stderr
