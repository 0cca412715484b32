"""The diagnostics report: numbers checked against ir-measures, files written, and the HTML in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from browser import CHROMIUM_ARGS, chromium_path
from crossrank.errors import InputError
from crossrank.evaluate.diagnostics import DiagnosticsConfig, diagnose
from crossrank.evaluate.metrics import evaluate
from crossrank.evaluate.report import write_report
from crossrank.io import read_beir_corpus, read_beir_queries, read_qrels

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "examples" / "dl19"
CANDIDATES = 30  # the run is cut here, so the sweep must stop at 30


def _run(path: Path, keep: int) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        q, _, d, _, s, _ = line.split()
        out.setdefault(q, []).append((d, float(s)))
    return {q: sorted(v, key=lambda t: -t[1])[:keep] for q, v in out.items()}


@pytest.fixture(scope="module")
def inputs() -> dict[str, object]:
    return {
        "qrels": read_qrels(SLICE / "qrels.tsv"),
        "queries": read_beir_queries(SLICE / "queries.jsonl"),
        "corpus": read_beir_corpus(SLICE / "corpus.jsonl"),
        "run": _run(SLICE / "bm25.top100.trec", CANDIDATES),
    }


@pytest.fixture(scope="module")
def diag(default_model, inputs):  # type: ignore[no-untyped-def]
    cfg = DiagnosticsConfig(depth=20, depths=(10, 20, 50, 100), rel=2, measures="nDCG@10 RR@10 R@30 AP")
    return diagnose(default_model, **inputs, config=cfg, title="DL19 slice", first_stage="bm25")  # type: ignore[arg-type]


def test_sweep_stops_where_the_candidates_end_and_names_the_knee(diag) -> None:  # type: ignore[no-untyped-def]
    depths = [p["depth"] for p in diag.depth_sweep]
    assert depths == [10, 20, CANDIDATES]
    for p in diag.depth_sweep:
        assert p["latency_ms_p50"] > 0 and p["pairs_per_s"] > 0
    best = max(p["measures"]["nDCG@10"] for p in diag.depth_sweep)
    within = [p["depth"] for p in diag.depth_sweep if p["measures"]["nDCG@10"] >= best - diag.config.tolerance]
    assert diag.knee == min(within)


def test_measures_equal_ir_measures_on_the_reranked_runs(diag, inputs, default_model) -> None:  # type: ignore[no-untyped-def]
    run, queries, corpus, qrels = inputs["run"], inputs["queries"], inputs["corpus"], inputs["qrels"]
    reranked: dict[str, dict[str, float]] = {}
    for q, cands in run.items():
        if q not in qrels:
            continue
        top = [{"id": d, **corpus[d]} for d, _ in cands[:20]]
        order = [h.doc_id for h in default_model.rerank(queries[q], top).hits] + [d for d, _ in cands[20:]]
        reranked[q] = {d: float(len(order) - i) for i, d in enumerate(order)}
    first = {q: {d: s for d, s in v} for q, v in run.items() if q in qrels}
    direct = evaluate({q: qrels[q] for q in first}, {"bm25": first, "ce": reranked}, "nDCG@10 AP", rel=2)
    main = diag.measures[0]
    assert diag.aggregate["rerank@20"][main] == pytest.approx(direct.aggregate["ce"]["nDCG@10"], abs=1e-9)
    assert diag.aggregate["bm25"][main] == pytest.approx(direct.aggregate["bm25"]["nDCG@10"], abs=1e-9)
    deltas = [v["delta"] for v in diag.per_query.values()]
    cmp = diag.comparison[main]
    assert cmp["mean_diff"] == pytest.approx(sum(deltas) / len(deltas), abs=1e-9)
    assert cmp["wins"] + cmp["ties"] + cmp["losses"] == len(deltas) == diag.queries
    assert cmp["ci_low"] <= cmp["mean_diff"] <= cmp["ci_high"]
    assert 0.0 <= cmp["t_p"] <= 1.0 and 0.0 <= cmp["randomization_p"] <= 1.0
    assert cmp["significant"] == (cmp["t_p"] < 0.05 and cmp["randomization_p"] < 0.05)


def test_recall_ceiling_counts_relevant_documents_in_the_first_stage(diag, inputs) -> None:  # type: ignore[no-untyped-def]
    run, qrels = inputs["run"], inputs["qrels"]
    for point in diag.recall:
        shares = []
        for q in run:
            rel = {d for d, g in qrels.get(q, {}).items() if g >= 2}
            if rel:
                shares.append(len(rel & {d for d, _ in run[q][: point["depth"]]}) / len(rel))
        assert point["recall"] == pytest.approx(sum(shares) / len(shares))
    assert [p["recall"] for p in diag.recall] == sorted(p["recall"] for p in diag.recall)


def test_failure_cases_show_demoted_relevant_and_promoted_nonrelevant_texts(diag, inputs) -> None:  # type: ignore[no-untyped-def]
    losses = sorted(v["delta"] for v in diag.per_query.values() if v["delta"] < 0)
    assert [f.reranked - f.first_stage for f in diag.failures] == pytest.approx(losses[: len(diag.failures)])
    qrels, corpus = inputs["qrels"], inputs["corpus"]
    for f in diag.failures:
        for d in f.demoted:
            assert qrels[f.query_id][d.doc_id] >= 2 and d.reranked_rank > d.first_rank
            assert d.text.endswith(corpus[d.doc_id]["text"])
        for d in f.promoted:
            assert qrels[f.query_id].get(d.doc_id, 0) < 2 and d.reranked_rank < d.first_rank <= CANDIDATES
            assert d.text.endswith(corpus[d.doc_id]["text"])


def test_truncation_duplicates_and_scores_are_counted(diag) -> None:  # type: ignore[no-untyped-def]
    t = diag.truncation
    assert t["pairs"] == sum(min(CANDIDATES, 30) for _ in range(diag.queries))
    assert 0 <= t["truncated"] <= t["pairs"]
    s = diag.scores
    assert s["counts"]["relevant"] > 0 and s["counts"]["non-relevant"] > 0
    assert sum(sum(h) for h in s["histograms"].values()) == t["pairs"]
    assert s["means"]["relevant"] > s["means"]["non-relevant"]
    assert s["reliability"] and 0.0 <= s["ece"] <= 1.0


def test_truncated_pairs_and_duplicate_texts_show_up(default_model, inputs) -> None:  # type: ignore[no-untyped-def]
    from crossrank import CrossEncoder
    from crossrank.rerank.config import ScoringConfig

    short = CrossEncoder("default", config=ScoringConfig(max_length=48))
    corpus = dict(inputs["corpus"])  # type: ignore[call-overload]
    run = {q: v[:10] for q, v in inputs["run"].items()}  # type: ignore[attr-defined]
    q0 = sorted(q for q in run if q in inputs["qrels"])[0]  # type: ignore[operator]
    a, b = run[q0][0][0], run[q0][1][0]
    corpus[b] = dict(corpus[a])  # same text under two ids
    cfg = DiagnosticsConfig(depth=10, depths=(10,), rel=2, measures="nDCG@10")
    d = diagnose(short, inputs["qrels"], inputs["queries"], corpus, run, config=cfg)  # type: ignore[arg-type]
    assert d.truncation["truncated"] > 0 and d.truncation["max_length"] == 48
    assert d.duplicates["identical_text_groups"] >= 1
    assert any(set(e["doc_ids"]) >= {a, b} for e in d.duplicates["examples"])


def test_unknown_queries_and_documents_are_counted_in_notes(default_model, inputs) -> None:  # type: ignore[no-untyped-def]
    run = {q: v[:10] for q, v in inputs["run"].items()}  # type: ignore[attr-defined]
    run["no-such-query"] = [("x", 1.0)]
    q0 = sorted(q for q in run if q in inputs["qrels"])[0]  # type: ignore[operator]
    run[q0] = [("no-such-doc", 99.0), *run[q0]]
    cfg = DiagnosticsConfig(depth=10, depths=(10,), rel=2, measures="nDCG@10")
    d = diagnose(default_model, inputs["qrels"], inputs["queries"], inputs["corpus"], run, config=cfg)  # type: ignore[arg-type]
    notes = " ".join(d.notes)
    assert "1 query of the run has no judgments and is left out" in notes
    assert "1 candidate has no text in the corpus and was dropped" in notes
    with pytest.raises(InputError, match="query ids"):
        diagnose(default_model, {"z": {"a": 1}}, inputs["queries"], inputs["corpus"], run, config=cfg)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def written(diag, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("report")
    write_report(diag, json_path=out / "r.json", markdown_path=out / "r.md", html_path=out / "r.html")
    return out


def test_report_files_json_markdown_and_self_contained_html(diag, written) -> None:  # type: ignore[no-untyped-def]
    data = json.loads((written / "r.json").read_text(encoding="utf-8"))
    assert data["knee"] == diag.knee and len(data["depth_sweep"]) == 3 and data["failures"] is not None
    md = (written / "r.md").read_text(encoding="utf-8")
    figs = sorted(p.name for p in (written / "r-figures").iterdir())
    assert figs == ["depth_sweep.png", "per_query.png", "recall.png", "reliability.png", "scores.png"]
    for name in figs:
        assert f"r-figures/{name}" in md
        assert (written / "r-figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (written / "r.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert html.count("data:image/png;base64,") == 5


def test_html_report_renders_in_headless_chromium(written, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    page_url = (written / "r.html").as_uri()
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(),
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})

            def block(route):  # type: ignore[no-untyped-def]
                url = route.request.url
                if url.startswith(("file:", "data:")):
                    return route.continue_()
                outside.append(url)
                return route.abort()

            page.route("**/*", block)
            page.goto(page_url)
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.id, e.complete, e.naturalWidth, e.naturalHeight])"
            )
            tables = page.eval_on_selector_all("table", "els => els.map(e => [e.className, e.rows.length])")
            headline = page.inner_text("#headline")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert outside == []
    assert sorted(i[0] for i in images) == [
        "fig-depth_sweep",
        "fig-per_query",
        "fig-recall",
        "fig-reliability",
        "fig-scores",
    ]
    assert all(done and w > 300 and h > 150 for _, done, w, h in images), images
    classes = dict(tables)
    assert set(classes) >= {"summary", "comparison", "sweep", "recall"}
    assert classes["sweep"] == 1 + 3 and classes["recall"] == 1 + 3
    assert "nDCG@10" in headline
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_cli_eval_writes_the_report_and_refuses_html_without_rerank(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from crossrank.cli.app import app

    runner = CliRunner()
    run = tmp_path / "bm25.trec"
    lines = (SLICE / "bm25.top100.trec").read_text(encoding="utf-8").splitlines()
    run.write_text("\n".join(x for x in lines if int(x.split()[3]) <= 10) + "\n", encoding="utf-8")
    bad = runner.invoke(app, ["eval", "--qrels", str(SLICE / "qrels.tsv"), "--run", str(run), "--html", "x.html"])
    assert bad.exit_code == 2 and "--rerank" in bad.output
    cfg = tmp_path / "pipe.toml"
    cfg.write_text(f'run = "{run.name}"\nmodel = "default"\ndepth = 10\nrel = 2\nmeasures = "nDCG@10 AP"\n')
    ok = runner.invoke(
        app,
        ["eval", "--data", str(SLICE), "--pipeline", str(cfg), "--depths", "5 10", "--json", str(tmp_path / "r.json")],
    )
    assert ok.exit_code == 0, ok.output
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert [p["depth"] for p in data["depth_sweep"]] == [5, 10]
    assert data["config"]["rel"] == 2 and data["measures"][0] == "nDCG@10"
