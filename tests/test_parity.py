"""Parity: crossrank's torch and ONNX scores equal transformers' logits (fp32) on tiny models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from crossrank import CrossEncoder, ScoringConfig
from crossrank.models.export import export_onnx

ARCHS = ["bert", "electra", "distilbert", "roberta", "xlm-roberta", "modernbert"]


def _pairs(dl19: Path, n: int = 40) -> list[tuple[str, str]]:
    queries = [json.loads(x)["text"] for x in (dl19 / "queries.jsonl").read_text().splitlines()]
    docs = [json.loads(x)["text"] for x in (dl19 / "corpus.jsonl").read_text().splitlines()[:n]]
    rng = random.Random(7)
    return [(rng.choice(queries), d) for d in docs]


def _reference(folder: Path, pairs: list[tuple[str, str]], max_length: int) -> np.ndarray:
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = tok(
        [q for q, _ in pairs],
        [d for _, d in pairs],
        padding=True,
        truncation="only_second",
        max_length=max_length,
        return_tensors="pt",
    )
    with torch.inference_mode():
        return model(**batch).logits.float().numpy()


@pytest.fixture(scope="module")
def exported(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    return {arch: export_onnx(folder, root / arch) for arch, folder in tiny_models.items()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_scores_equal_transformers_logits(
    arch: str, backend: str, tiny_models: dict[str, Path], exported: dict[str, Path], dl19: Path
) -> None:
    assert arch in tiny_models, f"the tiny {arch} model could not be built with this transformers (tiny_models.py)"
    pairs = _pairs(dl19)
    folder = tiny_models[arch] if backend == "torch" else exported[arch]
    first = CrossEncoder(folder, backend=backend, config=ScoringConfig(activation="none"))
    expected = _reference(tiny_models[arch], pairs, first.config.max_length)
    got = first.score(pairs)
    if expected.shape[1] == 1:
        expected = expected[:, 0]
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    # a check that can fail: the scores must actually differ between pairs
    assert np.ptp(expected, axis=0).min() > 1e-3
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # whatever the batch size and input order
    perm = np.random.default_rng(3).permutation(len(pairs))
    for size in (1, 3, 64):
        ce = CrossEncoder(folder, backend=backend, config=ScoringConfig(activation="none", max_batch_size=size))
        shuffled = ce.score([pairs[i] for i in perm])
        np.testing.assert_allclose(shuffled, expected[perm], atol=1e-4, rtol=0)


def test_truncation_is_exercised(tiny_models: dict[str, Path], dl19: Path) -> None:
    ce = CrossEncoder(tiny_models["roberta"], backend="torch")
    details = ce.score_details(_pairs(dl19))
    assert ce.config.max_length == 128  # 130 positions minus RoBERTa's padding offset
    assert 0 < details.num_truncated < len(details.truncated)
    assert details.num_tokens.max() == 128
