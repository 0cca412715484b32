"""Calibration: fit on TREC DL 2021 judgments, measure on DL 2019; rankings never change."""

from __future__ import annotations

import doctest
import itertools
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import crossrank.evaluate.calibrate
from conftest import beir
from crossrank import ConfigError, CrossEncoder, InputError
from crossrank.evaluate.calibrate import (
    CALIBRATION_FILE,
    Calibration,
    LabelledPairs,
    default_calibration_path,
    expected_calibration_error,
    fit_calibration,
    labelled_pairs,
    model_fingerprint,
    reliability_curve,
)
from crossrank.io import read_beir_corpus, read_beir_queries, read_trec_run
from crossrank.models import resolve
from crossrank.models.registry import lookup
from crossrank.models.source import ModelFiles

DEPTH = 30  # shallower than the usual 100 to keep the file fast; the CLI figures in the report use 100
REL = 2  # TREC DL: relevant = grade >= 2


def crossrank_cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from crossrank.cli.app import main; sys.argv = ['crossrank', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def sigmoid(z: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


@dataclass
class Scored:
    fit: LabelledPairs
    fit_logits: npt.NDArray[np.float32]
    test: LabelledPairs
    test_logits: npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def dl21() -> Path:
    return beir("trec-dl-2021-passage")


@pytest.fixture(scope="module")
def scored(dl21: Path, dl19: Path, default_model: CrossEncoder) -> Scored:
    """Raw logits of the judged pairs in BM25's top 30: DL 2021 to fit, DL 2019 to measure."""
    fit = labelled_pairs(dl21, dl21 / "runs" / "bm25.top100.trec", depth=DEPTH, rel=REL)
    test = labelled_pairs(dl19, dl19 / "runs" / "bm25.top100.trec", depth=DEPTH, rel=REL)
    return Scored(
        fit,
        default_model.score(fit.pairs(), activation="none"),
        test,
        default_model.score(test.pairs(), activation="none"),
    )


@pytest.fixture(scope="module")
def isotonic(scored: Scored) -> Calibration:
    fitted = fit_calibration(scored.fit_logits, scored.fit.labels, method="isotonic")
    return replace(fitted, model="default", fingerprint=model_fingerprint(resolve("default")))


def test_labelled_pairs_keep_judged_candidates_with_text(scored: Scored, dl21: Path) -> None:
    fit = scored.fit
    assert len(fit) == len(fit.queries) == len(fit.documents) == len(fit.doc_ids) and len(fit) > 500
    assert fit.labels.dtype == np.int8 and set(np.unique(fit.labels).tolist()) == {0, 1}
    assert fit.skipped_unjudged > 0 and fit.skipped_queries == 0
    assert fit.summary()["queries"] == 53 and fit.summary()["rel"] == REL
    # the first pair is the first judged candidate of the run's first query, with the corpus text
    run = read_trec_run(dl21 / "runs" / "bm25.top100.trec")
    q = fit.query_ids[0]
    corpus = read_beir_corpus(dl21 / "corpus.jsonl")
    assert fit.doc_ids[0] in [d for d, _ in run[q][:DEPTH]]
    assert fit.queries[0] == read_beir_queries(dl21 / "queries.jsonl")[q]
    assert fit.documents[0] == corpus[fit.doc_ids[0]]["text"]  # DL passages have no title


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_fitted_on_dl21_lowers_ece_on_dl19(scored: Scored, method: str) -> None:
    cal = fit_calibration(scored.fit_logits, scored.fit.labels, method=method)  # type: ignore[arg-type]
    before = expected_calibration_error(sigmoid(scored.test_logits), scored.test.labels)
    after = expected_calibration_error(cal.apply(scored.test_logits), scored.test.labels)
    # the model's sigmoid is far too confident on DL judgments (about 0.35 here); calibration cuts it
    assert before > 0.2
    assert after < before / 2, (method, before, after)
    probs = cal.apply(np.sort(scored.test_logits))
    assert probs.dtype == np.float32 and (np.diff(probs) >= 0).all()  # monotone: never reorders
    assert ((probs >= 0) & (probs <= 1)).all()


def test_rerank_order_is_identical_with_and_without_calibration(
    dl19: Path, default_model: CrossEncoder, isotonic: Calibration, tmp_path: Path
) -> None:
    assert default_model.calibration is None, "a calibration file leaked into the test cache"
    path = isotonic.save(tmp_path / "cal.json")
    calibrated = CrossEncoder("default", calibration=path)
    assert calibrated.calibration == isotonic and calibrated.activation == "calibrated"
    run = read_trec_run(dl19 / "runs" / "bm25.top100.trec")
    corpus = read_beir_corpus(dl19 / "corpus.jsonl")
    queries = read_beir_queries(dl19 / "queries.jsonl")
    qids = list(run)[:4]
    cands = [[corpus[d] for d, _ in run[q]] for q in qids]
    texts = [queries[q] for q in qids]
    plain = default_model.rerank_many(texts, cands, query_ids=qids)
    with_cal = calibrated.rerank_many(texts, cands, query_ids=qids)
    ties = 0
    for a, b in zip(plain, with_cal, strict=True):
        assert len(a) == 100 and a.doc_ids() == b.doc_ids()
        scores = [h.score for h in b.hits]
        assert scores == sorted(scores, reverse=True)
        ties += sum(x == y for x, y in itertools.pairwise(scores))
    assert ties > 0  # the isotonic steps tie documents the model tells apart: order must not use them
    # hits are in raw-logit order and carry the calibrated value of their logit
    pairs = [(texts[0], cands[0][h.index]["text"]) for h in with_cal[0].hits]
    raw = calibrated.score(pairs, activation="none")
    assert (np.diff(raw) <= 0).all()
    np.testing.assert_allclose([h.score for h in with_cal[0].hits], isotonic.apply(raw), atol=1e-6)
    np.testing.assert_allclose(calibrated.score(pairs[:5], activation="sigmoid"), default_model.score(pairs[:5]))


def test_saved_calibration_round_trips_and_is_found_beside_a_folder_model(
    scored: Scored, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a writable folder model: the built-in's int8 graph and tokenizer, plus its config
    builtin = lookup("default")
    assert builtin is not None
    folder = tmp_path / "minilm"
    folder.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        (folder / name).symlink_to(builtin.folder() / name)
    (folder / "config.json").write_text(json.dumps(builtin.hf_config), encoding="utf-8")
    files = resolve(folder)
    target = default_calibration_path(files)
    assert target == folder / CALIBRATION_FILE

    plain = CrossEncoder(folder)
    assert plain.calibration is None and plain.activation == "sigmoid"
    platt = fit_calibration(scored.fit_logits, scored.fit.labels, method="platt")
    platt = replace(platt, model=str(folder), fingerprint=model_fingerprint(files))
    assert platt.save(target) == target
    assert Calibration.load(target) == platt
    assert Calibration.from_dict(json.loads(target.read_text(encoding="utf-8"))) == platt

    with caplog.at_level(logging.INFO, logger="crossrank.rerank.cross_encoder"):
        auto = CrossEncoder(folder)
    assert auto.calibration == platt and auto.activation == "calibrated"
    assert str(target) in caplog.text
    pairs = scored.test.pairs()[:8]
    raw = auto.score(pairs, activation="none")
    np.testing.assert_allclose(auto.score(pairs), platt.apply(raw), atol=1e-6)
    np.testing.assert_allclose(auto.score(pairs, activation="sigmoid"), plain.score(pairs), atol=1e-6)
    assert CrossEncoder(folder, calibration=None).calibration is None

    # a calibration fitted for other weights is not applied automatically
    replace(platt, fingerprint="sha256:0000000000000000").save(target)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        stale = CrossEncoder(folder)
    assert stale.calibration is None and "fitted for other weights" in caplog.text

    target.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"crossrank-calibration\.json is not valid JSON.*crossrank calibrate"):
        CrossEncoder(folder)
    with pytest.raises(ConfigError, match=r"calibration must be 'auto', a path"):
        CrossEncoder(folder, calibration=42)  # type: ignore[arg-type]


def test_default_calibration_path_puts_builtins_and_hub_models_in_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CROSSRANK_CACHE", str(tmp_path / "cache"))
    files = resolve("default")
    assert default_calibration_path(files) == (
        tmp_path / "cache" / "calibration" / "ms-marco-MiniLM-L-12-v2" / CALIBRATION_FILE
    )
    assert model_fingerprint(files).startswith("sha256:")
    hub = ModelFiles(
        name="cross-encoder/ms-marco-MiniLM-L-6-v2",
        folder=tmp_path / "hf" / "snapshots" / "abc",
        tokenizer_file=tmp_path / "hf" / "snapshots" / "abc" / "tokenizer.json",
        onnx_file=None,
        has_weights=True,
    )
    assert default_calibration_path(hub) == (
        tmp_path / "cache" / "calibration" / "hub" / "cross-encoder--ms-marco-MiniLM-L-6-v2" / CALIBRATION_FILE
    )


def test_ece_and_reliability_curve_by_hand_and_against_scikit_learn() -> None:
    probs = [0.05, 0.15, 0.95, 1.0]
    labels = [0, 1, 1, 1]
    curve = reliability_curve(probs, labels)
    assert [(b["low"], b["high"], b["count"]) for b in curve] == [(0.0, 0.1, 1), (0.1, 0.2, 1), (0.9, 1.0, 2)]
    assert curve[2]["mean_predicted"] == pytest.approx(0.975) and curve[2]["fraction_positive"] == 1.0
    assert expected_calibration_error(probs, labels) == pytest.approx((0.05 + 0.85 + 2 * 0.025) / 4)

    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(7)
    p = rng.random(5000)
    y = (rng.random(5000) < p**2).astype(int)
    ours = reliability_curve(p, y, bins=15)
    frac, mean = calibration_curve(y, p, n_bins=15, strategy="uniform")
    np.testing.assert_allclose([b["fraction_positive"] for b in ours], frac, atol=1e-12)
    np.testing.assert_allclose([b["mean_predicted"] for b in ours], mean, atol=1e-12)
    assert expected_calibration_error(p, (rng.random(5000) < p).astype(int)) < 0.03  # calibrated by construction


@pytest.mark.parametrize(
    ("logits", "labels", "error", "fragment"),
    [
        ([], [], InputError, r"logits is empty"),
        ([0.1, 0.2], [1, 1], InputError, r"labels are all relevant \(2 pairs\); calibration needs both classes"),
        ([0.1, float("nan")], [0, 1], InputError, r"logits hold 1 NaN"),
        ([0.1, 0.2], [0, 2], InputError, r"labels must be 0 or 1 \(got 2\); binarise graded judgments"),
        ([0.1, 0.2, 0.3], [0, 1], InputError, r"got 2 labels for 3 scores"),
        ([3.0, 2.0, 1.0], [0, 0, 1], InputError, r"scores do not increase with relevance"),
        ([1.0, 1.0], [0, 1], InputError, r"all 2 logits are equal"),
    ],
)
def test_fit_calibration_rejects_bad_input(
    logits: list[float], labels: list[int], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        fit_calibration(logits, labels)


def test_bad_settings_and_files_get_clear_errors(tmp_path: Path, default_model: CrossEncoder, dl19: Path) -> None:
    with pytest.raises(ConfigError, match=r"method must be one of \('platt', 'isotonic'\) \(got 'beta'\)"):
        fit_calibration([0.0, 1.0], [0, 1], method="beta")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"probs must be probabilities in \[0, 1\] \(got 1\.5\)"):
        expected_calibration_error([0.2, 1.5], [0, 1])
    with pytest.raises(InputError, match=r"bins must be an int >= 1 \(got 0\)"):
        reliability_curve([0.2], [1], bins=0)
    with pytest.raises(ConfigError, match=r"Platt slope a must be > 0 .*got a=-1"):
        Calibration("platt", a=-1.0)
    with pytest.raises(ConfigError, match=r"y must be non-decreasing"):
        Calibration("isotonic", x=(0.0, 1.0), y=(0.6, 0.4))
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"format": "crossrank-calibration", "version": 1, "method": "platt"}), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{bad.name} is not a valid calibration: 'parameters' must be an object"):
        Calibration.load(bad)
    with pytest.raises(ConfigError, match=r"no calibration file at .*crossrank calibrate"):
        Calibration.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match=r"activation 'calibrated' needs a calibration.*crossrank calibrate --model"):
        default_model.score([("q", "d")], activation="calibrated")
    with pytest.raises(InputError, match=r"rel must be an int >= 1.*\(got 0\); TREC DL uses 2"):
        labelled_pairs(dl19, dl19 / "runs" / "bm25.top100.trec", depth=10, rel=0)
    with pytest.raises(InputError, match=r"no judgments in .* for split 'dev': .*qrels/dev\.tsv.*splits there: test"):
        labelled_pairs(dl19, dl19 / "runs" / "bm25.top100.trec", depth=10, rel=2, split="dev")
    other = beir("cisi")
    with pytest.raises(InputError, match=r"no judged candidate with text .*same query and document ids"):
        labelled_pairs(other, dl19 / "runs" / "bm25.top100.trec", depth=10, rel=1)


def test_module_example_runs() -> None:
    result = doctest.testmod(crossrank.evaluate.calibrate, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _small_run(src: Path, out: Path, queries: int, depth: int) -> Path:
    run = read_trec_run(src)
    qids = list(run)[:queries]
    out.write_text(
        "".join(f"{q} Q0 {d} {r} {s} bm25\n" for q in qids for r, (d, s) in enumerate(run[q][:depth], start=1)),
        encoding="utf-8",
    )
    return out


def test_cli_calibrate_fits_measures_held_out_and_saves(dl21: Path, dl19: Path, tmp_path: Path) -> None:
    fit_run = _small_run(dl21 / "runs" / "bm25.top100.trec", tmp_path / "dl21.trec", 12, 20)
    held_run = _small_run(dl19 / "runs" / "bm25.top100.trec", tmp_path / "dl19.trec", 10, 20)
    out, report = tmp_path / "cal" / "platt.json", tmp_path / "report.json"
    args = ["calibrate", "--data", str(dl21), "--run", str(fit_run), "--depth", "20", "--rel", "2"]
    res = crossrank_cli(
        *args,
        "--heldout-data",
        str(dl19),
        "--heldout-run",
        str(held_run),
        "--output",
        str(out),
        "--json",
        str(report),
    )
    assert res.returncode == 0, res.stderr
    assert "ECE before" in res.stdout and "held-out" in res.stdout
    assert f"saved the calibration to {out}" in res.stderr and "optimistic" not in res.stderr
    figures = json.loads(report.read_text(encoding="utf-8"))
    assert figures["saved_to"] == str(out) and figures["calibration"]["method"] == "platt"
    held = figures["heldout"]
    assert held["pairs"] == figures["heldout_data"]["pairs"] > 50
    assert held["ece_after"] < held["ece_before"]
    cal = Calibration.load(out)
    assert cal.fingerprint == model_fingerprint(resolve("default")) and cal.fitted_on["rel"] == 2

    res = crossrank_cli(*args, "--method", "isotonic", "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert "ECE on the fitting data is optimistic" in res.stderr
    assert Calibration.load(out).method == "isotonic"

    res = crossrank_cli(*args, "--heldout-data", str(dl19))
    assert res.returncode == 2 and "--heldout-data and --heldout-run go together" in res.stderr
