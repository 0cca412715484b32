"""The batching plan: every pair exactly once, within the token budget, balanced across workers."""

from __future__ import annotations

import numpy as np
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
