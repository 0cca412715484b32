"""Bi-encoders: parity with sentence-transformers, pooling and prompts read from the model's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import beir
from crossrank.engine import choose_backend
from crossrank.errors import ConfigError
from crossrank.io import read_beir_corpus
from crossrank.models.source import resolve
from crossrank.retrieve.embed import BiEncoder


def _texts(n: int = 40) -> list[str]:
    corpus = read_beir_corpus(beir("cacm") / "corpus.jsonl")
    return [f"{d['title']} {d['text']}".strip() for d in list(corpus.values())[:n]]


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    from crossrank.models.registry import lookup

    model = lookup("all-MiniLM-L6-v2")
    assert model is not None
    return model.folder()


def test_minilm_matches_sentence_transformers(minilm_folder: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = _texts()
    st = SentenceTransformer(str(minilm_folder), device="cpu")
    want = st.encode(texts, batch_size=7, normalize_embeddings=False)
    enc = BiEncoder(str(minilm_folder))  # read as a plain folder: pooling and normalisation from its files
    assert (enc.settings.pooling, enc.settings.normalize, enc.settings.max_length) == ("mean", True, 256)
    got = enc.encode_documents(texts)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # the built-in name gives the same vectors
    np.testing.assert_allclose(BiEncoder("all-MiniLM-L6-v2").encode_documents(texts[:5]), got[:5], atol=1e-6)


def test_prompts_and_cls_pooling_from_sentence_transformers_files(minilm_folder: Path, tmp_path: Path) -> None:
    """A folder that says CLS pooling, no Normalize and query/document prompts is read that way."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "cls-model"
    shutil.copytree(minilm_folder, folder)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    modules = [m for m in json.loads((folder / "modules.json").read_text()) if not m["type"].endswith("Normalize")]
    (folder / "modules.json").write_text(json.dumps(modules))
    st_cfg = json.loads((folder / "config_sentence_transformers.json").read_text())
    st_cfg["prompts"] = {"query": "query: ", "document": "passage: "}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_cfg))

    enc = BiEncoder(str(folder))
    s = enc.settings
    assert (s.pooling, s.normalize, s.query_prompt, s.document_prompt) == ("cls", False, "query: ", "passage: ")
    st = SentenceTransformer(str(folder), device="cpu")
    texts = _texts(12)
    np.testing.assert_allclose(enc.encode_queries(texts), st.encode(texts, prompt_name="query"), atol=2e-5)
    np.testing.assert_allclose(enc.encode_documents(texts), st.encode(texts, prompt_name="document"), atol=2e-5)


def test_default_dense_model_applies_bge_query_instruction() -> None:
    enc = BiEncoder("bge-small-en")
    assert enc.backend_name == choose_backend(resolve("bge-small-en"), "auto")[0]  # by the CPU's instruction set
    assert enc.dim == 384 and enc.settings.pooling == "cls"
    q = "how do libraries classify books"
    prompted = enc.encode_queries([q])
    np.testing.assert_allclose(prompted, enc.encode_documents([enc.settings.query_prompt + q]), atol=1e-6)
    assert not np.allclose(prompted, enc.encode_documents([q]), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(prompted, axis=1), 1.0, atol=1e-5)
    # vectors do not depend on batch-mates or order
    texts = _texts(20)
    a = enc.encode_documents(texts)
    b = enc.encode_documents(texts[::-1])[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(enc.encode_documents(texts[3:4]), a[3:4], atol=1e-5)
    # the other engine (ONNX Runtime's fused fp32 graph, or OpenVINO's static int8 one) is
    # batch-independent too, and the two agree
    other = BiEncoder("bge-small-en", backend="openvino" if enc.backend_name == "onnx" else "onnx")
    c = other.encode_documents(texts)
    np.testing.assert_allclose(other.encode_documents(texts[::-1])[::-1], c, atol=1e-5)
    assert float((a * c).sum(axis=1).min()) > 0.98


def test_overrides_and_bad_input() -> None:
    enc = BiEncoder("bge-small-en", query_prompt="", max_length=32, pooling="mean")
    assert enc.settings.query_prompt == "" and enc.settings.max_length == 32
    long = "library " * 400
    enc.encode_documents([long, "short"])
    assert enc.num_truncated == 1
    from crossrank.errors import InputError

    with pytest.raises(InputError, match="list of texts"):
        enc.encode_documents("one string")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not a string"):
        enc.encode_documents(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="pooling"):
        BiEncoder("bge-small-en", pooling="median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cross-encoder"):
        BiEncoder("default")
    from crossrank import CrossEncoder

    with pytest.raises(ConfigError, match="bi-encoder"):
        CrossEncoder("bge-small-en")
