"""Quality on real data: every engine path reranks the BM25 top-100 of TREC DL 2019.

The converted fp32 model on the torch backend is the reference (on the first 10 queries: 1,000
pairs; its 43-query figure comes from ``bench/rerank_speed.py``). The engine ``auto`` picks is held
to its documented 43-query nDCG@10; the other fast paths (int8, bf16) must agree with fp32 on each
query's order (mean Kendall tau >= 0.9).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ir_measures
import numpy as np
import pytest
from ir_measures import nDCG

from crossrank import CrossEncoder, ScoringConfig
from crossrank.cpu import int8_dot_product
from crossrank.evaluate.agreement import agreement
from crossrank.io import read_beir_corpus, read_beir_queries, read_qrels, read_trec_run

pytestmark = pytest.mark.slow

Run = dict[str, dict[str, float]]


@pytest.fixture(scope="module")
def candidates(dl19: Path) -> tuple[list[str], list[str], list[list[dict[str, str]]]]:
    corpus = read_beir_corpus(dl19 / "corpus.jsonl")
    queries = read_beir_queries(dl19 / "queries.jsonl")
    run = read_trec_run(dl19 / "runs" / "bm25.top100.trec")
    qids = [q for q in run if q in queries]
    assert len(qids) == 43
    return qids, [queries[q] for q in qids], [[corpus[d] for d, _ in run[q][:100]] for q in qids]


@pytest.fixture(scope="module")
def qrels(dl19: Path) -> dict[str, dict[str, int]]:
    return read_qrels(dl19 / "qrels" / "test.tsv")


def _run(ce: CrossEncoder, candidates: tuple[list[str], list[str], list[list[dict[str, str]]]]) -> Run:
    qids, texts, docs = candidates
    rankings = ce.rerank_many(texts, docs, query_ids=qids)
    assert sum(len(r) for r in rankings) == sum(len(d) for d in docs)
    return {str(r.query_id): {h.doc_id: h.score for h in r.hits} for r in rankings}


@pytest.fixture(scope="module")
def fp32_run(fp32_folder: Path, candidates: tuple[list[str], list[str], list[list[dict[str, str]]]]) -> Run:
    """The fp32 reference on the first 10 queries (the slow torch engine runs 1,000 pairs, not 4,300)."""
    return _run(CrossEncoder(fp32_folder, backend="torch"), _first(candidates))


def _ndcg10(run: Run, qrels: dict[str, dict[str, int]]) -> float:
    # over the run's queries only: ir_measures counts a judged query missing from the run as 0
    qr = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() if q in run for d, g in docs.items()]
    sd = [ir_measures.ScoredDoc(q, d, s) for q, docs in run.items() for d, s in docs.items()]
    return float(ir_measures.calc_aggregate([nDCG @ 10], qr, sd)[nDCG @ 10])


def test_bm25_alone_matches_reference(dl19: Path, qrels: dict[str, dict[str, int]]) -> None:
    run = {q: dict(docs) for q, docs in read_trec_run(dl19 / "runs" / "bm25.top100.trec").items()}
    assert round(_ndcg10(run, qrels), 4) == 0.5058


# The figures docs/benchmarks.md quotes for DL 2019, read from the bench JSON committed beside it.
# fp32 torch is deterministic; ONNX Runtime's graph is built the same way everywhere; the static
# int8 OpenVINO graph is calibrated on each machine and two builds were not bit-identical
# (+0.0034 and +0.0054 against fp32 in two sessions), hence the wider tolerance there.
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _documented(bench_json: str, system: str) -> float:
    results = json.loads((DOCS / bench_json).read_text())["results"]
    return float(next(r["ndcg10"] for r in results if r["system"] == system))


# sentence-transformers' fp32 torch on the same weights, first 10 queries (the speed bench's sample)
FP32_NDCG10_10Q = _documented("bench-rerank-speed-avx2.json", "st-torch-fp32")
# ONNX Runtime runs different int8 kernels with and without int8 dot products, and their scores are
# not bit-identical (0.7246 on AVX2, 0.7201 on AVX-512 VNNI), so each instruction set has its figure
if int8_dot_product():
    ORT_INT8_NDCG10 = _documented("bench-rerank-quality-vnni.json", "crossrank-onnx")
    OPENVINO_INT8_NDCG10 = _documented("bench-rerank-quality-vnni.json", "crossrank-openvino")
else:
    ORT_INT8_NDCG10 = _documented("bench-rerank-quality-avx2.json", "crossrank-default")
    OPENVINO_INT8_NDCG10 = 0.7250  # the default only with int8 dot products; not measured on AVX2
FAST_NDCG10 = 0.7015
FAST_ORT_NDCG10 = 0.7005


def test_converted_fp32_model_reranks_dl19_as_documented(fp32_run: Run, qrels: dict[str, dict[str, int]]) -> None:
    assert _ndcg10(fp32_run, qrels) == pytest.approx(FP32_NDCG10_10Q, abs=0.0005)


@pytest.fixture(scope="module")
def default_run(
    default_model: CrossEncoder, candidates: tuple[list[str], list[str], list[list[dict[str, str]]]]
) -> Run:
    return _run(default_model, candidates)


def test_default_model_reranks_dl19_as_documented_and_agrees_with_fp32(
    default_model: CrossEncoder, default_run: Run, fp32_run: Run, qrels: dict[str, dict[str, int]]
) -> None:
    # auto: ONNX Runtime dynamic int8 on CPUs without int8 dot products; with them, OpenVINO static
    # int8 once prepared, ONNX Runtime until then
    documented, tolerance = (
        (OPENVINO_INT8_NDCG10, 0.005) if default_model.backend_name == "openvino" else (ORT_INT8_NDCG10, 0.002)
    )
    assert _ndcg10(default_run, qrels) >= 0.72
    assert _ndcg10(default_run, qrels) == pytest.approx(documented, abs=tolerance)
    report = agreement(fp32_run, {q: default_run[q] for q in fp32_run}, qrels)
    assert report.mean_kendall_tau >= 0.9
    change = report.ndcg10_change or 0.0
    assert -0.005 <= change <= 0.01


def _first(candidates: tuple[list[str], list[str], list[list[dict[str, str]]]], n: int = 10) -> Any:
    """The first ``n`` queries with all their candidates: the slower engines are checked on these."""
    qids, texts, docs = candidates
    return qids[:n], texts[:n], docs[:n]


def test_openvino_static_int8_agrees_with_fp32(
    candidates: tuple[list[str], list[str], list[list[dict[str, str]]]], fp32_run: Run
) -> None:
    # the OpenVINO graph's DL 2019 figure (0.7250, bench/rerank_speed.py) is measured on the 43
    # queries by the benchmark; here its order is held to fp32's on 500 pairs
    ce = CrossEncoder("default", backend="openvino")
    sub = _first(candidates, 5)
    report = agreement({q: fp32_run[q] for q in sub[0]}, _run(ce, sub), None)
    assert report.mean_kendall_tau >= 0.9


def test_onnx_runtime_scores_do_not_depend_on_the_session_count(
    default_model: CrossEncoder, candidates: tuple[list[str], list[str], list[list[dict[str, str]]]]
) -> None:
    one = CrossEncoder("default", backend="onnx", config=ScoringConfig(instances=1, threads=2))
    two = CrossEncoder("default", backend="onnx", config=ScoringConfig(instances=2, threads=2))
    _, texts, docs = _first(candidates, 3)
    pairs = [(q, d["text"]) for q, ds in zip(texts, docs, strict=True) for d in ds]
    np.testing.assert_allclose(one.score(pairs), two.score(pairs), atol=1e-6)


def test_an_int8_export_tracks_its_fp32_source_on_real_candidates(
    fp32_folder: Path,
    tmp_path_factory: pytest.TempPathFactory,
    candidates: tuple[list[str], list[str], list[list[dict[str, str]]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`crossrank models export --quantize int8` on the real model: both runtimes keep its order.

    (A tiny random model cannot test this: its logits span about 0.01, below int8's resolution.)
    The static int8 graph calibrates on 150 pairs here, a quarter of the default: the bars below
    hold with room to spare, and the build takes a quarter of the time.
    """
    from crossrank.models.export import export_optimized

    monkeypatch.setenv("CROSSRANK_CALIBRATION_PAIRS", "150")
    folder = export_optimized(fp32_folder, tmp_path_factory.mktemp("int8") / "minilm-int8", quantize="int8")
    qids, texts, docs = candidates
    qids, texts, docs = qids[:10], texts[:10], [d[:30] for d in docs[:10]]

    def logits(ce: CrossEncoder) -> Run:
        return {
            str(r.query_id): {h.doc_id: h.score for h in r.hits} for r in ce.rerank_many(texts, docs, query_ids=qids)
        }

    raw = ScoringConfig(activation="none")
    reference = logits(CrossEncoder(fp32_folder, backend="torch", config=raw))
    for backend in ("openvino", "onnx"):
        got = logits(CrossEncoder(folder, backend=backend, config=raw))  # type: ignore[arg-type]
        report = agreement(reference, got, None)
        assert report.mean_kendall_tau >= 0.85, (backend, report)
        diffs = [abs(got[q][d] - reference[q][d]) for q in got for d in got[q]]
        # the logits span about -11..+11: int8 moves them by a few hundredths on average
        assert float(np.mean(diffs)) < 0.3, (backend, float(np.mean(diffs)))


def test_bf16_agrees_with_fp32(
    fp32_folder: Path,
    tmp_path_factory: pytest.TempPathFactory,
    candidates: tuple[list[str], list[str], list[list[dict[str, str]]]],
    fp32_run: Run,
    qrels: dict[str, dict[str, int]],
) -> None:
    from crossrank.models.export import export_optimized

    folder = export_optimized(fp32_folder, tmp_path_factory.mktemp("bf16") / "minilm-bf16", quantize="bf16")
    ce = CrossEncoder(folder, backend="openvino")
    assert ce.config.precision == "bf16"
    sub = _first(candidates)
    report = agreement({q: fp32_run[q] for q in sub[0]}, _run(ce, sub), None)
    assert report.mean_kendall_tau >= 0.9


def test_converted_folder_loads_in_sentence_transformers(fp32_folder: Path, default_model: CrossEncoder) -> None:
    import numpy as np
    from sentence_transformers import CrossEncoder as STCrossEncoder

    pairs = [
        ("how long do cats live", "Indoor cats live 12 to 18 years on average."),
        ("how long do cats live", "The Eiffel Tower is in Paris."),
        ("define photosynthesis", "Photosynthesis is how plants turn light into chemical energy."),
    ]
    st = STCrossEncoder(str(fp32_folder), device="cpu")
    st_scores = st.predict(pairs, convert_to_numpy=True)
    ours = CrossEncoder(fp32_folder, backend="torch").score(pairs)
    np.testing.assert_allclose(ours, st_scores, atol=1e-4)
    assert np.argsort(default_model.score(pairs)).tolist() == np.argsort(ours).tolist()
    assert np.abs(default_model.score(pairs) - ours).max() < 0.05


def test_fast_model_keeps_most_of_the_defaults_quality_on_dl19(
    default_run: Run,
    candidates: tuple[list[str], list[str], list[list[dict[str, str]]]],
    qrels: dict[str, dict[str, int]],
    tmp_path: Path,
) -> None:
    from crossrank.models.convert import convert_builtin

    fast = CrossEncoder("fast")
    fast_run = _run(fast, candidates)
    # measured 0.7015 on OpenVINO and 0.7005 on ONNX Runtime (bench/fast_model.py), against the
    # default's 0.7250 (96.8%); the first-stage-only model scored 0.6923
    documented = FAST_NDCG10 if fast.backend_name == "openvino" else FAST_ORT_NDCG10
    assert _ndcg10(fast_run, qrels) == pytest.approx(documented, abs=0.005)
    assert agreement(default_run, fast_run, qrels).mean_kendall_tau >= 0.6
    # the fp32 weights behind it (crossrank models convert fast) rank the same way, on 5 queries
    qids, texts, docs = candidates
    torch_fast = CrossEncoder(convert_builtin("fast", tmp_path / "fast-fp32"), backend="torch")
    fp32 = {
        str(r.query_id): {h.doc_id: h.score for h in r.hits}
        for r in torch_fast.rerank_many(texts[:5], docs[:5], query_ids=qids[:5])
    }
    assert agreement(fp32, {q: fast_run[q] for q in fp32}, qrels).mean_kendall_tau >= 0.85
