"""The backend contract: every backend, built in or registered from outside, passes the same tests.

Parity with transformers' fp32 logits, input order kept, a pair's score independent of its
batch-mates, and a ModelError on a broken graph. The backends are ONNX Runtime, OpenVINO and torch,
the public fake (``crossrank.engine.testing.FakeBackend``), and ``NumpyBertBackend`` below: a BERT
written in numpy in this file and registered by name, without touching ``src/``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank import CrossEncoder, ScoringConfig
from crossrank.engine import available_backends, load_backend, register_backend, unregister_backend
from crossrank.engine.testing import FakeBackend, fake_logit
from crossrank.errors import ConfigError, ModelError
from crossrank.models.source import ModelFiles, resolve
from test_parity import _pairs, _reference

# ---------------------------------------------------------------- a backend from outside src/


class NumpyBertBackend:
    """BERT for sequence classification in plain numpy, read from the folder's safetensors."""

    def __init__(self, weights: dict[str, np.ndarray], config: Mapping[str, Any]) -> None:
        self.w = weights
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.num_labels = int(weights["classifier.weight"].shape[0])
        self.parallelism = 1

    @classmethod
    def load(cls, files: ModelFiles, *, task: str, threads: int | None = None, **options: Any) -> NumpyBertBackend:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        if files.config.get("model_type") != "bert" or task != "sequence-classification":
            raise ModelError(f"the numpy backend runs BERT classifiers only (got {files.config.get('model_type')})")
        try:
            weights = load_file(str(files.folder / "model.safetensors"))
        except (OSError, SafetensorError) as err:
            raise ModelError(f"numpy cannot read {files.folder / 'model.safetensors'} ({err})") from err
        return cls({k.removeprefix("bert."): v.astype(np.float64) for k, v in weights.items()}, files.config)

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        types = inputs.get("token_type_ids", np.zeros_like(ids))
        e = "embeddings."
        x = self.w[e + "word_embeddings.weight"][ids] + self.w[e + "token_type_embeddings.weight"][types]
        x = self._norm(x + self.w[e + "position_embeddings.weight"][np.arange(ids.shape[1])], e + "LayerNorm")
        n, length, width = x.shape
        d = width // self.heads
        bias = np.where(mask[:, None, None, :] == 1, 0.0, np.finfo(np.float64).min)
        erf = np.vectorize(math.erf)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(n, length, self.heads, d).transpose(0, 2, 1, 3)

            q, k, v = (split(self._dense(x, p + f"attention.self.{m}")) for m in ("query", "key", "value"))
            att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            ctx = (att / att.sum(-1, keepdims=True) @ v).transpose(0, 2, 1, 3).reshape(n, length, width)
            x = self._norm(x + self._dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = self._dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            x = self._norm(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = np.tanh(self._dense(x[:, 0], "pooler.dense"))
        return self._dense(pooled, "classifier").astype(np.float32)


# ---------------------------------------------------------------- fixtures

BACKENDS = ["onnx", "openvino", "torch", "fake", "numpy"]
#: what the tests register: name -> "module:Class"
REGISTERED = {"fake": "crossrank.engine.testing:FakeBackend", "numpy": "test_backend_contract:NumpyBertBackend"}


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    for name, target in REGISTERED.items():
        register_backend(name, target, requires=("safetensors",) if name == "numpy" else ())
    yield
    for name in REGISTERED:
        unregister_backend(name)


@pytest.fixture(scope="module")
def bert_onnx(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crossrank.models.export import export_onnx

    return export_onnx(tiny_models["bert"], tmp_path_factory.mktemp("contract") / "bert-onnx")


def _folder(backend: str, tiny_models: dict[str, Path], bert_onnx: Path) -> Path:
    return bert_onnx if backend in ("onnx", "openvino") else tiny_models["bert"]


def _encoder(backend: str, folder: Path, **config: Any) -> CrossEncoder:
    # OpenVINO's "auto" precision is bf16 on CPUs that have it; the contract is about fp32
    cfg = ScoringConfig(activation="none", precision="fp32", **config)
    return CrossEncoder(folder, backend=backend, config=cfg, calibration=None)


def _expected(backend: str, folder: Path, pairs: list[tuple[str, str]], max_length: int) -> np.ndarray:
    if backend != "fake":
        return _reference(folder, pairs, max_length)[:, 0]
    # the fake's documented logit, on the token ids transformers' own tokenizer gives
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(folder)(
        [q for q, _ in pairs], [d for _, d in pairs], truncation="only_second", max_length=max_length
    )
    return np.array(
        [fake_logit(np.array(i), np.array(t)) for i, t in zip(batch["input_ids"], batch["token_type_ids"], strict=True)]
    )


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("backend", BACKENDS)
def test_scores_equal_the_reference(backend: str, tiny_models: dict[str, Path], bert_onnx: Path, dl19: Path) -> None:
    pairs = _pairs(dl19, 24)
    ce = _encoder(backend, _folder(backend, tiny_models, bert_onnx))
    expected = _expected(backend, tiny_models["bert"], pairs, ce.config.max_length)
    got = ce.score(pairs)
    assert ce.backend_name == backend
    assert got.dtype == np.float32 and got.shape == (len(pairs),)
    assert np.ptp(expected) > 1e-3  # a check that can fail: the pairs score differently
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_order_is_kept(backend: str, tiny_models: dict[str, Path], bert_onnx: Path, dl19: Path) -> None:
    pairs = _pairs(dl19, 24)
    ce = _encoder(backend, _folder(backend, tiny_models, bert_onnx))
    first = ce.score(pairs)
    perm = np.random.default_rng(5).permutation(len(pairs))
    np.testing.assert_allclose(ce.score([pairs[i] for i in perm]), first[perm], atol=1e-5, rtol=0)
    np.testing.assert_allclose(ce.score(pairs[::-1]), first[::-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_score_does_not_depend_on_batch_mates(
    backend: str, tiny_models: dict[str, Path], bert_onnx: Path, dl19: Path
) -> None:
    pairs = _pairs(dl19, 16)
    folder = _folder(backend, tiny_models, bert_onnx)
    alone = np.array([_encoder(backend, folder, max_batch_size=1).score([p])[0] for p in pairs[:4]])
    together = _encoder(backend, folder, max_batch_size=64).score(pairs)
    # the short pairs share batches with long ones: padding must not leak into their scores
    np.testing.assert_allclose(together[:4], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "fake"])  # the fake reads no graph
def test_a_broken_graph_is_a_model_error(
    backend: str, tiny_models: dict[str, Path], bert_onnx: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(_folder(backend, tiny_models, bert_onnx), folder)
    graph = folder / ("model.onnx" if backend in ("onnx", "openvino") else "model.safetensors")
    graph.write_bytes(graph.read_bytes()[:300])  # a download cut short
    with pytest.raises(ModelError, match="broken"):
        _encoder(backend, folder)


# ---------------------------------------------------------------- the registry


def test_an_unknown_backend_lists_what_is_available_and_installed() -> None:
    with pytest.raises(ConfigError) as err:
        CrossEncoder("default", backend="tpu")
    text = str(err.value)
    assert "unknown backend 'tpu'" in text
    for name, installed in available_backends().items():
        assert (f"{name} (installed)" if installed else f"{name} (not installed") in text
    assert available_backends()["onnx"] is True


def test_a_registered_name_is_not_taken_twice() -> None:
    with pytest.raises(ConfigError, match="taken"):
        register_backend("onnx", "somewhere:Else")
    with pytest.raises(ConfigError, match="module:Class"):
        register_backend("nowhere", "no_class_named")


def test_the_fake_runs_the_real_tokenizer_through_rerank() -> None:
    ce = CrossEncoder("default", backend="fake", calibration=None)
    ranking = ce.rerank("what is a cat", ["Paris is in France.", "what is a cat? a cat is a cat"])
    assert [h.index for h in ranking.hits] == [1, 0]


def test_load_backend_serves_both_tasks() -> None:
    files = resolve("bge-small-en")
    vectors = load_backend(files, task="feature-extraction", backend="onnx")
    ids = np.array([[101, 2054, 2003, 102]])
    out = vectors.run({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    assert out.dtype == np.float32 and out.shape[0] == 1 and out.shape[-1] == vectors.num_labels == 384
    with pytest.raises(ConfigError, match="task must be"):
        load_backend(files, task="translation", backend="onnx")  # type: ignore[arg-type]
    assert isinstance(load_backend(files, task="feature-extraction", backend="fake"), FakeBackend)
