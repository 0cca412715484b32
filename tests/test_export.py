"""`crossrank models export`: any Hugging Face cross-encoder to an optimised folder, checked against its source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from crossrank import ConfigError, CrossEncoder
from crossrank.models.export import export_optimized
from test_cli import crossrank


def _pairs(dl19: Path) -> list[tuple[str, str]]:
    docs = [json.loads(x)["text"] for x in (dl19 / "corpus.jsonl").read_text().splitlines()[:60]]
    return [("what is the definition of a cell wall", d) for d in docs]


@pytest.mark.parametrize("quantize", ["int8", "none"])
def test_export_runs_on_both_runtimes_and_tracks_the_source(
    quantize: str, tiny_models: dict[str, Path], tmp_path: Path, dl19: Path
) -> None:
    folder = export_optimized(tiny_models["bert"], tmp_path / "out", quantize=quantize)
    assert {"model.onnx", "model.xml", "model.bin", "tokenizer.json", "crossrank.json"} <= {
        p.name for p in folder.iterdir()
    }
    pairs = _pairs(dl19)
    source = CrossEncoder(tiny_models["bert"], backend="torch").score(pairs, activation="none")
    ov = CrossEncoder(folder, backend="openvino")
    ort = CrossEncoder(folder, backend="onnx")
    assert CrossEncoder(folder).backend_name in ("openvino", "onnx")  # auto: by the CPU's instruction set
    for ce in (ov, ort):
        got = ce.score(pairs, activation="none")
        assert got.shape == source.shape and np.isfinite(got).all()
        if quantize == "none":
            np.testing.assert_allclose(got, source, atol=1e-4)
    if quantize == "int8":
        # the graphs really are int8; how closely int8 tracks fp32 is tested on the real model
        # (test_quality.py): a random tiny model's logits span ~0.01, below int8's resolution
        ops = {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
        assert ops & {"MatMulInteger", "QAttention", "DynamicQuantizeLinear", "QLinearMatMul"}, ops
        assert (
            "FakeQuantize" in (folder / "model.xml").read_text()
            or 'element_type="i8"' in (folder / "model.xml").read_text()
        )


def test_export_rejects_bad_settings(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quantize must be 'int8', 'bf16' or 'none'"):
        export_optimized(tiny_models["bert"], tmp_path / "x", quantize="int4")


def test_export_cli_reports_agreement(tiny_models: dict[str, Path], tmp_path: Path, dl19: Path) -> None:
    out = tmp_path / "cli-out"
    res = crossrank(
        "models",
        "export",
        str(tiny_models["electra"]),
        "--output",
        str(out),
        "--quantize",
        "none",
        "--check-data",
        str(dl19),
        "--check-run",
        str(dl19 / "runs" / "bm25.top100.trec"),
        "--check-queries",
        "3",
        "--depth",
        "10",
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["queries"] == 3 and report["pairs"] == 30
    assert report["max_abs_diff"] < 1e-3 and report["mean_kendall_tau"] > 0.99
    assert report["ndcg10_reference"] is not None and abs(report["ndcg10_change"]) < 1e-6
    assert json.loads((out / "export_check.json").read_text())["pairs"] == 30


def test_int8_export_weights_need_no_second_rounding(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """model.onnx keeps one int8 scale per output column, so OpenVINO's per-channel requantization is exact."""
    import onnx
    from onnx import numpy_helper

    folder = export_optimized(tiny_models["bert"], tmp_path / "out", quantize="int8")
    graph = onnx.load(str(folder / "model.onnx")).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weights = [n.input[1] for n in graph.node if n.op_type == "MatMulInteger"]
    assert len(weights) >= 6  # query, key, value, attention output, FFN in and out per layer
    for name in weights:
        base = name[: -len("_quantized")]
        q, scale, zp = init[name], init[base + "_scale"], init[base + "_zero_point"]
        assert scale.shape == (q.shape[1],) and not zp.any()  # per output column, symmetric
        w = q.astype(np.float32) * scale
        again = np.round(w / (np.abs(w).max(axis=0) / 127)).astype(np.int8)  # NNCF's symmetric per-channel grid
        np.testing.assert_array_equal(again, q)
