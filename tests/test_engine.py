"""The batching plan: every pair exactly once, within the token budget, balanced across workers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossrank.engine import plan_batches


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=3, max_value=512), min_size=0, max_size=300),
    st.integers(min_value=64, max_value=20000),
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=1, max_value=4),
)
def test_plan_covers_each_pair_once_within_budget(lengths: list[int], budget: int, max_bs: int, workers: int) -> None:
    arr = np.array(lengths, dtype=np.int32)
    batches = list(plan_batches(arr, token_budget=budget, max_batch_size=max_bs, parallelism=workers))
    seen = np.concatenate(batches) if batches else np.zeros(0, dtype=np.intp)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= b.size <= max_bs
        assert b.size == 1 or b.size * int(arr[b].max()) <= budget
    # longest first: padding only ever up to pairs of similar length
    firsts = [int(arr[b].max()) for b in batches]
    assert firsts == sorted(firsts, reverse=True)


def test_hundred_pairs_split_evenly_over_two_streams() -> None:
    lengths = np.full(100, 90, dtype=np.int32)
    sizes = [b.size for b in plan_batches(lengths, token_budget=8192, max_batch_size=16, parallelism=2)]
    assert sizes == [13] * 7 + [9]  # 8 batches: a multiple of 2 workers, not 16 * 6 + 4
    assert [b.size for b in plan_batches(lengths, token_budget=8192, max_batch_size=64, parallelism=2)] == [50, 50]


def test_openvino_pins_no_cores_when_it_uses_fewer_than_all_of_them() -> None:
    # several processes with one thread each (Ray workers, replicas) must not all pin to core 0
    from crossrank import CrossEncoder, ScoringConfig
    from crossrank.engine import default_threads

    one = CrossEncoder("default", backend="openvino", config=ScoringConfig(threads=1))
    assert one.backend._compiled.get_property("ENABLE_CPU_PINNING") is (default_threads() <= 1)
    scores = one.score([("what is a cat", "A cat is a small feline."), ("what is a cat", "Paris is in France.")])
    assert scores[0] > 0.5 > scores[1]


def test_each_tensor_is_padded_with_its_own_value_on_either_side() -> None:
    from crossrank.engine import pad_batch

    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
    lengths = np.array([3, 2], dtype=np.int32)
    idx = np.array([1, 0])
    right = pad_batch(ids, idx, lengths, width=5, value=-1)
    left = pad_batch(ids, idx, lengths, width=5, value=-1, side="left")
    assert right.tolist() == [[8, 9, 0, 0, -1], [5, 6, 7, 0, -1]]  # as before: the tokenizer's own padding kept
    assert left.tolist() == [[-1, -1, -1, 8, 9], [-1, -1, 5, 6, 7]]  # real tokens end at the last column
    assert left.dtype == ids.dtype


@pytest.mark.parametrize("parallelism", [1, 3])
def test_left_and_right_padding_give_the_fake_the_same_rows_in_input_order(parallelism: int) -> None:
    from crossrank.engine import run_encoded
    from crossrank.engine.testing import FakeBackend
    from crossrank.errors import ConfigError

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 40, size=50).astype(np.int32)
    ids = np.zeros((50, 40), dtype=np.int64)
    types = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, 30, size=n)
        types[i, n // 2 : n] = 1
    mask = (np.arange(40)[None, :] < lengths[:, None]).astype(np.int64)
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    fake = FakeBackend(num_labels=2, parallelism=parallelism)
    out = {
        side: run_encoded(
            fake, inputs, lengths, token_budget=256, max_batch_size=8, pad_values={"input_ids": 99}, padding_side=side
        )
        for side in ("right", "left")
    }
    np.testing.assert_array_equal(out["right"], out["left"])
    assert out["right"].shape == (50, 2) and fake.calls >= 2 * 7 and max(fake.batch_sizes) <= 8
    np.testing.assert_allclose(out["right"][:, 1], 2 * out["right"][:, 0])
    with pytest.raises(ConfigError, match="padding_side"):
        run_encoded(fake, inputs, lengths, token_budget=256, max_batch_size=8, padding_side="middle")  # type: ignore[arg-type]
