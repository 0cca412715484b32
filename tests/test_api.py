"""The public API: score and rerank contracts on the real default model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crossrank
from crossrank import ConfigError, CrossEncoder, InputError, ScoringConfig

DOCS = [
    "A cat is a small domesticated carnivorous mammal.",
    "Paris is the capital and most populous city of France.",
    "Cats sleep for 12 to 16 hours a day.",
    "The stock market fell sharply on Monday.",
    "Kittens are young cats.",
]


def test_public_api_is_flat_and_listed() -> None:
    for name in crossrank.__all__:
        assert getattr(crossrank, name) is not None, name
    assert set(crossrank.__all__) >= {"CrossEncoder", "Hit", "Ranking", "ScoringConfig", "CrossrankError"}


def test_import_is_light() -> None:
    code = (
        "import sys, crossrank\n"
        "names = ('torch', 'transformers', 'onnxruntime', 'openvino', 'bm25s', 'usearch', 'fastapi', 'uvicorn')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_score_is_float32_in_input_order(default_model: CrossEncoder) -> None:
    pairs = [("what is a cat", d) for d in DOCS]
    scores = default_model.score(pairs)
    assert scores.dtype == np.float32 and scores.shape == (5,)
    assert ((scores >= 0) & (scores <= 1)).all()  # sigmoid by default for one logit
    reversed_scores = default_model.score(pairs[::-1])
    np.testing.assert_allclose(reversed_scores[::-1], scores, atol=1e-6)
    assert scores[0] > 0.5 > scores[1]
    raw = default_model.score(pairs, activation="none")
    np.testing.assert_allclose(1 / (1 + np.exp(-raw.astype(np.float64))), scores, atol=1e-6)


def test_rerank_orders_best_first_and_carries_records(default_model: CrossEncoder) -> None:
    records = [{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(DOCS)]
    ranking = default_model.rerank("what is a cat", records, k=3, query_id="q1", return_text=True)
    assert ranking.query_id == "q1" and len(ranking) == 3
    assert ranking.hits[0].doc_id in {"d0", "d4", "d2"}
    scores = [h.score for h in ranking.hits]
    assert scores == sorted(scores, reverse=True)
    for hit in ranking.hits:
        assert hit.document is records[hit.index]  # carried through untouched, same object
        assert hit.text == DOCS[hit.index]
    full = default_model.rerank("what is a cat", DOCS)
    assert [h.doc_id for h in full.hits] == [str(h.index) for h in full.hits]
    assert full.hits[-1].doc_id in {"1", "3"}


def test_titles_are_scored_with_text(default_model: CrossEncoder) -> None:
    with_title = default_model.rerank(
        "capital of france", [{"id": "a", "title": "Paris", "text": "It is a city."}], return_text=True
    )
    assert with_title.hits[0].text == "Paris It is a city."


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(DOCS), min_size=1, max_size=12), st.integers(min_value=1, max_value=15))
def test_rerank_is_a_sorted_stable_permutation(default_model: CrossEncoder, docs: list[str], k: int) -> None:
    records = [{"id": str(i), "text": t} for i, t in enumerate(docs)]
    ranking = default_model.rerank("cats", records, k=k)
    idx = [h.index for h in ranking.hits]
    assert len(idx) == min(k, len(docs)) and len(set(idx)) == len(idx)
    full = default_model.rerank("cats", records)
    assert sorted(h.index for h in full.hits) == list(range(len(docs)))
    for a, b in zip(full.hits, full.hits[1:], strict=False):
        assert a.score >= b.score
        if a.score == b.score:  # equal texts score equally: ties keep input order
            assert a.index < b.index
    assert [h.index for h in full.hits[:k]] == idx


def test_duplicate_texts_tie_in_input_order(default_model: CrossEncoder) -> None:
    docs = [DOCS[1], DOCS[0], DOCS[1], DOCS[0]]
    ranking = default_model.rerank("what is a cat", docs)
    assert [h.index for h in ranking.hits] == [1, 3, 0, 2]


def test_rerank_many_matches_rerank(default_model: CrossEncoder) -> None:
    many = default_model.rerank_many(
        ["what is a cat", "capital of france"], [DOCS, DOCS[:3]], k=2, query_ids=["a", "b"]
    )
    assert [r.query_id for r in many] == ["a", "b"]
    one = default_model.rerank("capital of france", DOCS[:3], k=2)
    assert many[1].doc_ids() == one.doc_ids()
    # static int8: a pair's score does not depend on its batch-mates
    np.testing.assert_allclose([h.score for h in many[1].hits], [h.score for h in one.hits], atol=1e-6)


def test_scores_do_not_depend_on_batching(default_model: CrossEncoder) -> None:
    pairs = [("what is a cat", d) for d in DOCS * 8]
    together = default_model.score(pairs)
    alone = np.array([default_model.score([p])[0] for p in pairs[:5]])
    np.testing.assert_allclose(together[:5], alone, atol=1e-6)


def test_score_cache_memory_and_disk(tmp_path: Path) -> None:
    pairs = [("what is a cat", d) for d in DOCS]
    ce = CrossEncoder("default", config=ScoringConfig(cache_size=3, cache_dir=str(tmp_path)))
    assert ce.cache is not None
    first = ce.score(pairs)
    assert (ce.cache.hits, ce.cache.misses, len(ce.cache)) == (0, 5, 3)  # LRU keeps the 3 newest
    np.testing.assert_array_equal(ce.score(pairs), first)
    assert ce.cache.hits == 5  # 3 from memory, 2 from disk
    fresh = CrossEncoder("default", config=ScoringConfig(cache_dir=str(tmp_path)))
    np.testing.assert_array_equal(fresh.score(pairs, activation="none"), default_model_logits(pairs))
    assert fresh.cache is not None and fresh.cache.hits == 5
    details = fresh.score_details([("what is a cat", "word " * 600)])
    assert details.num_truncated == 1  # truncation is still reported for a cached pair
    assert fresh.score_details([("what is a cat", "word " * 600)]).num_truncated == 1


def default_model_logits(pairs: list[tuple[str, str]]) -> np.ndarray:
    return CrossEncoder("default").score(pairs, activation="none")


def test_truncation_is_counted_and_windows_see_the_whole_document(default_model: CrossEncoder) -> None:
    filler = " ".join(["The committee discussed budgets, roads and parking permits at length."] * 80)
    needle = "Cats are small carnivorous mammals that people keep as pets."
    long_doc = filler + " " + needle
    details = default_model.score_details([("what is a cat", long_doc), ("what is a cat", needle)])
    assert details.truncated.tolist() == [True, False]
    assert details.num_truncated == 1 and details.num_tokens[0] == 512
    assert details.scores[0] < 0.01 < 0.9 < details.scores[1]  # the answer sits past token 512

    def windowed(**kw: object) -> CrossEncoder:
        return CrossEncoder("default", config=ScoringConfig(max_length=48, long_documents="window", **kw))  # type: ignore[arg-type]

    result = windowed(window_stride=8).score_details([("what is a cat", long_doc), ("what is a cat", needle)])
    assert result.num_truncated == 0
    assert result.num_tokens[0] > 1000  # every window was read
    cut = CrossEncoder("default", config=ScoringConfig(max_length=48)).score([("what is a cat", long_doc)])[0]
    # the window holding the answer wins: a likely match (0.49 with ONNX Runtime int8, 0.5x with
    # OpenVINO int8) where the cut document scores as no match at all
    assert result.scores[0] > 0.25 and cut < 0.01
    first = windowed(window_aggregate="first").score([("what is a cat", long_doc)])[0]
    assert first == pytest.approx(cut, abs=1e-3)  # the first window is the truncated document
    mean = windowed(window_stride=8, window_aggregate="mean").score([("what is a cat", long_doc)])[0]
    assert cut < mean < result.scores[0]


def test_multilabel_head_uses_id2label_and_softmax(tiny_models: dict[str, Path]) -> None:
    nli = CrossEncoder(tiny_models["xlm-roberta"], backend="torch")
    assert nli.labels == ("contradiction", "entailment", "neutral")
    assert nli.activation == "softmax"
    probs = nli.score([("A man is eating.", "Someone eats."), ("A man is eating.", "Nobody eats.")])
    assert probs.shape == (2, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ConfigError, match="relevance_label"):
        nli.rerank("A man is eating.", ["Someone eats.", "Nobody eats."])
    ranker = CrossEncoder(
        tiny_models["xlm-roberta"], backend="torch", config=ScoringConfig(relevance_label="entailment")
    )
    ranking = ranker.rerank("A man is eating.", ["Someone eats.", "Nobody eats."])
    assert [h.score for h in ranking.hits] == sorted(probs[:, 1].tolist(), reverse=True)


def test_config_validates_itself() -> None:
    with pytest.raises(ConfigError, match="token_budget"):
        ScoringConfig(token_budget=3)
    with pytest.raises(ConfigError, match="activation"):
        ScoringConfig(activation="relu")  # type: ignore[arg-type]
    cfg = ScoringConfig(max_length=256, long_documents="window")
    assert ScoringConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        ScoringConfig.from_dict({"max_len": 3})


def test_empty_input_gives_empty_output(default_model: CrossEncoder) -> None:
    assert default_model.score([]).shape == (0,)
    assert len(default_model.rerank("cats", [])) == 0
    with pytest.raises(InputError):
        default_model.rerank("cats", "a single string")  # type: ignore[arg-type]
