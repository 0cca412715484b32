"""`crossrank models export --format vespa`: a folder Vespa's ranking runs, scoring as crossrank does.

The real model is the built-in default, cross-encoder/ms-marco-MiniLM-L-12-v2, as the fp32 Hugging
Face folder the ``fp32_folder`` fixture converts it to (the shipped int8 ONNX weights dequantized:
the real model, with int8 rounding, in torch form; no fp32 original exists offline). crossrank
scores it with the torch backend, raw logits. The pairs are real TREC DL 2019 pairs: the first 4
queries with their top 25 BM25 passages (100 pairs).

The exported graph is run by ONNX Runtime on ids from the exported ``tokenizer.json`` (the
``tokenizers`` library's pair encoding, cut at the max length written in the folder), and on ids
laid out as the schema fragment tells Vespa to lay them out (``customTokenInputIds``,
``tokenAttentionMask``, ``tokenTypeIds``, rebuilt here from Vespa's TokenTransformer semantics,
with query and document tokenized apart without special tokens). No Vespa runs here.

pyvespa 1.2.9 installs (the ``test`` extra pins it): the fragments are checked against the schema
and services.xml that pyvespa's application-package builder renders for the same objects.

Measured (``pytest -s tests/test_export_vespa.py``, which prints them): fp32 max |Δ| vs crossrank
3.9e-06 on the 100 pairs, with either layout; int8 mean |Δ| 0.098, max |Δ| 0.333 on logits spanning
15.5, Kendall tau per query 0.993, 0.973, 1.0, 0.967.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from scipy.stats import kendalltau
from tokenizers import Tokenizer

from crossrank import ConfigError, CrossEncoder, InputError, ScoringConfig
from crossrank.io import read_beir_corpus, read_beir_queries, read_trec_run
from crossrank.models.vespa import export_vespa, pair_layout
from test_cli import crossrank

N_QUERIES, DEPTH = 4, 25


def _pairs(dl19: Path, n_queries: int = N_QUERIES, depth: int = DEPTH) -> list[tuple[str, str]]:
    corpus = read_beir_corpus(dl19 / "corpus.jsonl")
    queries = read_beir_queries(dl19 / "queries.jsonl")
    run = read_trec_run(dl19 / "runs" / "bm25.top100.trec")
    return [(queries[q], corpus[d]["text"]) for q in list(run)[:n_queries] for d, _ in run[q][:depth]]


def _layout(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "crossrank_vespa.json").read_text())  # type: ignore[no-any-return]


def _tokenizer(folder: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _pad(rows: list[list[int]], width: int | None = None) -> np.ndarray:
    width = width or max(map(len, rows))
    return np.array([r + [0] * (width - len(r)) for r in rows], dtype=np.int64)


def pair_inputs(folder: Path, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """The tokenizer's own pair encoding, cut (document only) at the folder's max length, zero-padded."""
    layout = _layout(folder)
    tok = _tokenizer(folder)
    tok.enable_truncation(layout["max_length"], strategy="only_second")
    encs = tok.encode_batch(pairs)
    feeds = {
        "input_ids": _pad([e.ids for e in encs]),
        "attention_mask": _pad([e.attention_mask for e in encs]),
    }
    if layout["token_type_ids"]:
        feeds["token_type_ids"] = _pad([e.type_ids for e in encs])
    return feeds


def vespa_inputs(folder: Path, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """The inputs the schema fragment makes Vespa build, ``d0[1], d1[max_length]`` per pair.

    The tokenizer component embeds without special tokens into the query tensor (cut at its size)
    and the document attribute (cut at ``max_length``); ``customTokenInputIds(start, sep, n, a, b, ...)``
    writes ``start a sep b sep ...``, skipping nothing for an empty segment but its separator.
    """
    layout = _layout(folder)
    n, tok = layout["max_length"], _tokenizer(folder)
    start, sep = layout["start_id"], layout["sep_id"]
    ids, mask, types = [], [], []
    for query, doc in pairs:
        q = tok.encode(query, add_special_tokens=False).ids[: layout["query_tokens"]]
        d = tok.encode(doc, add_special_tokens=False).ids[:n]
        segments = [q, *([[]] if layout["separators"] == 2 else []), d]
        seq = [start]
        for segment in segments:
            seq += [*segment, sep]
        first = 1 + len(q) + 1  # tokenTypeIds: 0 up to the first separator, 1 after it
        length = min(len(seq), n)
        ids.append(seq[:n])
        mask.append([1] * length)
        types.append([0] * min(first, n) + [1] * max(0, length - first))
    feeds = {"input_ids": _pad(ids, n), "attention_mask": _pad(mask, n)}
    if layout["token_type_ids"]:
        feeds["token_type_ids"] = _pad(types, n)
    return feeds


def onnx_scores(folder: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    logits = np.concatenate(
        [
            session.run(["logits"], {k: v[i : i + 16] for k, v in feeds.items()})[0]
            for i in range(0, len(feeds["input_ids"]), 16)
        ]
    )
    return logits[:, _layout(folder)["label_index"]]


@pytest.fixture(scope="module")
def real_pairs(dl19: Path) -> list[tuple[str, str]]:
    return _pairs(dl19)


@pytest.fixture(scope="module")
def real_fp32(fp32_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_vespa(fp32_folder, tmp_path_factory.mktemp("vespa") / "fp32")


@pytest.fixture(scope="module")
def real_reference(fp32_folder: Path, real_fp32: Path, real_pairs: list[tuple[str, str]]) -> np.ndarray:
    config = ScoringConfig(max_length=_layout(real_fp32)["max_length"])
    return CrossEncoder(fp32_folder, backend="torch", config=config).score(real_pairs, activation="none")


def test_the_folder_holds_what_vespa_needs(real_fp32: Path, fp32_folder: Path) -> None:
    assert {p.name for p in real_fp32.iterdir()} == {
        "model.onnx",
        "tokenizer.json",
        "schema-fragment.sd",
        "services-fragment.xml",
        "README.md",
        "crossrank_vespa.json",
    }
    assert (real_fp32 / "tokenizer.json").read_bytes() == (fp32_folder / "tokenizer.json").read_bytes()
    layout = _layout(real_fp32)
    assert layout["max_length"] == 512 and layout["token_type_ids"] and layout["quantize"] == "none"
    assert (layout["start_id"], layout["sep_id"], layout["separators"]) == (101, 102, 1)
    graph = onnx.load(str(real_fp32 / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    for value in graph.input:
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    readme = (real_fp32 / "README.md").read_text()
    assert "Max length: **512 tokens**" in readme and "services-fragment.xml" in readme
    schema = (real_fp32 / "schema-fragment.sd").read_text()
    assert "customTokenInputIds(101, 102, 512, query(crossrank_q), attribute(crossrank_tokens))" in schema
    assert "tokenTypeIds(512, query(crossrank_q), attribute(crossrank_tokens))" in schema
    assert "onnx(crossrank).logits{d0:0,d1:0}" in schema


def test_fp32_scores_dl19_pairs_as_crossrank_does(
    real_fp32: Path, real_pairs: list[tuple[str, str]], real_reference: np.ndarray
) -> None:
    got = onnx_scores(real_fp32, pair_inputs(real_fp32, real_pairs))
    assert got.shape == real_reference.shape == (100,)
    np.testing.assert_allclose(got, real_reference, atol=1e-4, rtol=0)
    # the layout Vespa builds from the fragment: the same ids, so the same scores
    vespa = vespa_inputs(real_fp32, real_pairs)
    plain = pair_inputs(real_fp32, real_pairs)
    for name, value in plain.items():
        np.testing.assert_array_equal(vespa[name][:, : value.shape[1]], value)
        assert not vespa[name][:, value.shape[1] :].any()
    in_vespa = onnx_scores(real_fp32, vespa)
    np.testing.assert_allclose(in_vespa, real_reference, atol=1e-4, rtol=0)
    print(
        f"\nvespa fp32: max |Δ| vs crossrank {np.abs(got - real_reference).max():.2e} (tokenizer ids), "
        f"{np.abs(in_vespa - real_reference).max():.2e} (Vespa layout, padded to 512)"
    )


def test_int8_tracks_fp32_on_dl19_pairs(
    fp32_folder: Path, tmp_path: Path, real_pairs: list[tuple[str, str]], real_reference: np.ndarray
) -> None:
    folder = export_vespa(fp32_folder, tmp_path / "int8", quantize="int8")
    assert _layout(folder)["quantize"] == "int8"
    ops = {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear"}, ops
    got = onnx_scores(folder, pair_inputs(folder, real_pairs))
    shift = np.abs(got - real_reference)
    taus = [kendalltau(got[i : i + DEPTH], real_reference[i : i + DEPTH]).statistic for i in range(0, len(got), DEPTH)]
    print(
        f"\nvespa int8: mean |Δ| {shift.mean():.3f}, max |Δ| {shift.max():.3f} (logits spanning "
        f"{np.ptp(real_reference):.1f}), Kendall tau per query {np.round(taus, 3).tolist()}"
    )
    assert min(taus) >= 0.85 and shift.mean() < 0.3


@pytest.mark.parametrize(
    ("name", "separators", "types"),
    [
        ("roberta", 2, False),
        ("xlm-roberta", 2, False),
        ("modernbert", 1, False),
        ("distilbert", 1, False),
        ("electra", 1, True),
    ],
)
def test_every_encoder_family_exports_and_matches(
    tiny_models: dict[str, Path], tmp_path: Path, dl19: Path, name: str, separators: int, types: bool
) -> None:
    label = "entailment" if name == "xlm-roberta" else None  # a 3-label NLI head
    folder = export_vespa(tiny_models[name], tmp_path / name, relevance_label=label)
    layout = _layout(folder)
    assert (layout["separators"], layout["token_type_ids"]) == (separators, types)
    graph = onnx.load(str(folder / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", *(["token_type_ids"] if types else [])]
    schema = (folder / "schema-fragment.sd").read_text()
    assert ("tokenTypeIds(" in schema) == types and ("crossrank_no_tokens" in schema) == (separators == 2)
    pairs = _pairs(dl19, 2, 15)
    encoder = CrossEncoder(tiny_models[name], backend="torch", config=ScoringConfig(max_length=layout["max_length"]))
    reference = encoder.score(pairs, activation="none")
    if reference.ndim == 2:
        reference = reference[:, layout["label_index"]]
    np.testing.assert_allclose(onnx_scores(folder, pair_inputs(folder, pairs)), reference, atol=1e-4, rtol=0)
    short = [(q, d[:80]) for q, d in pairs]  # pairs that fit: Vespa's layout is the tokenizer's pair encoding
    plain, vespa = pair_inputs(folder, short), vespa_inputs(folder, short)
    for key, value in plain.items():
        np.testing.assert_array_equal(vespa[key][:, : value.shape[1]], value)


def test_the_pair_layout_is_read_from_the_tokenizer(tiny_models: dict[str, Path]) -> None:
    assert pair_layout(tiny_models["bert"] / "tokenizer.json") == (101, 102, 1)
    tok = Tokenizer.from_file(str(tiny_models["roberta"] / "tokenizer.json"))
    assert pair_layout(tiny_models["roberta"] / "tokenizer.json") == (
        tok.token_to_id("<s>"),
        tok.token_to_id("</s>"),
        2,
    )


def _pyvespa_schema(layout: dict[str, Any]) -> str:
    from vespa.package import Document, Field, Function, GlobalPhaseRanking, OnnxModel, RankProfile, Schema

    n = layout["max_length"]
    double = layout["separators"] == 2
    args = ", ".join(
        ["query(crossrank_q)", *(["crossrank_no_tokens"] if double else []), "attribute(crossrank_tokens)"]
    )
    names = ["input_ids", "attention_mask", *(["token_type_ids"] if layout["token_type_ids"] else [])]
    functions = [Function(name="crossrank_no_tokens", expression="tensor<float>(d0[1]):[0]")] if double else []
    functions += [
        Function(
            name="crossrank_input_ids",
            expression=f"customTokenInputIds({layout['start_id']}, {layout['sep_id']}, {n}, {args})",
        ),
        Function(name="crossrank_attention_mask", expression=f"tokenAttentionMask({n}, {args})"),
    ]
    if layout["token_type_ids"]:
        functions.append(Function(name="crossrank_token_type_ids", expression=f"tokenTypeIds({n}, {args})"))
    schema = Schema(
        name="doc",
        document=Document(
            fields=[Field(name="text", type="string", indexing=["index", "summary"], index="enable-bm25")]
        ),
        models=[
            OnnxModel(
                model_name="crossrank",
                model_file_path="models/crossrank/model.onnx",
                inputs={name: f"crossrank_{name}" for name in names},
                outputs={"logits": "logits"},
            )
        ],
        rank_profiles=[
            RankProfile(
                name="crossrank",
                inherits="default",
                inputs=[("query(crossrank_q)", f"tensor<float>(d0[{layout['query_tokens']}])")],
                functions=functions,
                first_phase="bm25(text)",
                global_phase=GlobalPhaseRanking(
                    expression=f"onnx(crossrank).logits{{d0:0,d1:{layout['label_index']}}}", rerank_count=100
                ),
            )
        ],
    )
    schema.add_fields(
        Field(
            name="crossrank_tokens",
            type=f"tensor<float>(d0[{n}])",
            indexing=["input text", "embed crossrank_tokenizer", "attribute"],
            is_document_field=False,
        )
    )
    return str(schema.schema_to_text)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_fragments_are_what_pyvespa_builds(tiny_models: dict[str, Path], tmp_path: Path, name: str) -> None:
    from vespa.package import ApplicationPackage, Component, Parameter

    folder = export_vespa(tiny_models[name], tmp_path / name)
    fragment = _lines((folder / "schema-fragment.sd").read_text())
    # pyvespa writes every model to files/<name>.onnx, since it copies the file into the package itself
    built = [
        "file: models/crossrank/model.onnx" if line == "file: files/crossrank.onnx" else line
        for line in _lines(_pyvespa_schema(_layout(folder)))
    ]
    start = built.index(fragment[0])
    assert built[start : start + len(fragment)] == fragment
    assert built[start + len(fragment) :] == ["}"]  # the fragment runs to the end of pyvespa's schema

    component = Component(
        id="crossrank_tokenizer",
        type="hugging-face-tokenizer",
        parameters=[
            Parameter("model", {"path": "models/crossrank/tokenizer.json"}),
            Parameter(
                "config",
                {"name": "language.huggingface.config.hugging-face-tokenizer"},
                [Parameter("addSpecialTokens", {}, "false")],
            ),
        ],
    )
    services = ApplicationPackage(name="crossrank", components=[component]).services_to_text
    ours = ET.fromstring((folder / "services-fragment.xml").read_text())
    theirs = ET.fromstring(services).find("container/component")
    assert theirs is not None
    assert _canonical(ours) == _canonical(theirs)


def _canonical(element: ET.Element) -> str:
    for e in element.iter():
        e.text = (e.text or "").strip() or None
        e.tail = None
    return ET.tostring(element, encoding="unicode")


def test_a_decoder_is_refused_in_one_line(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = tmp_path / "qwen3-seq-cls"
    tok = Tokenizer.from_file(str(tiny_models["bert"] / "tokenizer.json"))
    config = AutoConfig.for_model(
        "qwen3",
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        num_labels=1,
        pad_token_id=0,
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    shutil.copy2(tiny_models["bert"] / "tokenizer.json", folder / "tokenizer.json")
    with pytest.raises(ConfigError, match=r"cannot export for Vespa .*Qwen3ForSequenceClassification") as err:
        export_vespa(folder, tmp_path / "out")
    assert "\n" not in str(err.value) and "only encoder cross-encoders" in str(err.value)
    assert not (tmp_path / "out").exists()
    res = crossrank("models", "export", str(folder), "--format", "vespa", "--output", str(tmp_path / "cli"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: crossrank cannot")


def test_bad_settings_are_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quantize must be 'none' or 'int8'"):
        export_vespa(tiny_models["bert"], tmp_path / "a", quantize="bf16")
    with pytest.raises(ConfigError, match=r"max_length must be in \[8, 128\]"):
        export_vespa(tiny_models["roberta"], tmp_path / "b", max_length=512)
    with pytest.raises(ConfigError, match=r"has 3 labels .*pass relevance_label"):
        export_vespa(tiny_models["xlm-roberta"], tmp_path / "c")
    with pytest.raises(ConfigError, match="relevance_label 'relevant' is not a label"):
        export_vespa(tiny_models["xlm-roberta"], tmp_path / "c", relevance_label="relevant")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="is not empty"):
        export_vespa(tiny_models["bert"], tmp_path / "full")


def test_cli_writes_the_folder(tiny_models: dict[str, Path], tmp_path: Path, dl19: Path) -> None:
    out = tmp_path / "cli-vespa"
    res = crossrank(
        "models",
        "export",
        str(tiny_models["roberta"]),
        "--format",
        "vespa",
        "--output",
        str(out),
        "--quantize",
        "int8",
        "--max-length",
        "64",
        "--query-tokens",
        "16",
    )
    assert res.returncode == 0, res.stderr
    assert "README.md" in res.stderr and res.stdout == ""
    layout = _layout(out)
    assert (layout["max_length"], layout["query_tokens"], layout["quantize"]) == (64, 16, "int8")
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "tensor<float>(d0[64])" in (out / "schema-fragment.sd").read_text()
    scores = onnx_scores(out, pair_inputs(out, _pairs(dl19, 1, 5)))
    assert scores.shape == (5,) and np.isfinite(scores).all()
    bad = crossrank("models", "export", str(tiny_models["bert"]), "--format", "onnx", "--output", str(tmp_path / "x"))
    assert bad.returncode == 2 and "--format must be 'crossrank' or 'vespa'" in bad.stderr
