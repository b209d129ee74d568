"""Sum tree and prioritized replay: proportional sampling, IS weights, priority updates."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from scipy.stats import chisquare

from gpt_trader.ml.rl.replay import PrioritizedReplayBuffer, SumTree, importance_weights


def test_sum_tree_total_after_updates_equals_sum_of_priorities() -> None:
    tree = SumTree(5)
    tree.update([0, 1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0, 5.0])
    tree.update([2, 2], [0.5, 7.0])  # duplicate index: last write wins
    assert tree.total == pytest.approx(1 + 2 + 7 + 4 + 5)
    np.testing.assert_allclose(tree.get([0, 2, 4]), [1.0, 7.0, 5.0])


def test_sum_tree_find_prefix_sums_returns_owning_leaf() -> None:
    tree = SumTree(4)
    tree.update([0, 1, 2, 3], [1.0, 0.0, 2.0, 1.0])
    np.testing.assert_array_equal(tree.find([0.0, 0.99, 1.0, 2.99, 3.0, 3.99]), [0, 0, 2, 2, 3, 3])


def test_sum_tree_sample_many_draws_proportional_to_priority() -> None:
    priorities = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 10.0, 5.0])
    tree = SumTree(len(priorities))
    tree.update(np.arange(len(priorities)), priorities)
    rng = np.random.default_rng(0)
    draws = np.concatenate([tree.sample(32, rng) for _ in range(2_000)])
    counts = np.bincount(draws, minlength=len(priorities))
    assert counts[4] == 0  # zero priority is never sampled
    nonzero = priorities > 0
    expected = priorities[nonzero] / priorities.sum() * draws.size
    # Stratified sampling is, if anything, closer to proportional than i.i.d.; chi-square must not reject.
    assert chisquare(counts[nonzero], expected).pvalue > 0.01


def test_sum_tree_bad_input_raises() -> None:
    tree = SumTree(3)
    with pytest.raises(IndexError, match="indices"):
        tree.update([3], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        tree.update([0], [-1.0])
    with pytest.raises(ValueError, match="all zero"):
        tree.sample(4, np.random.default_rng(0))


def test_importance_weights_hand_computed_normalized_by_max() -> None:
    probs = np.array([0.5, 0.25, 0.125])
    w = importance_weights(probs, size=8, beta=0.5)
    raw = (8 * probs) ** -0.5
    np.testing.assert_allclose(w, raw / raw.max(), rtol=1e-6)
    assert w.max() == pytest.approx(1.0)


def _buffer(n_envs: int = 2) -> PrioritizedReplayBuffer:
    obs_space = spaces.Box(-1, 1, (3,), np.float32)
    return PrioritizedReplayBuffer(
        16, obs_space, spaces.Discrete(3), device="cpu", n_envs=n_envs, alpha=1.0, beta=1.0, seed=0
    )


def _fill(buf: PrioritizedReplayBuffer, steps: int) -> None:
    for i in range(steps):
        obs = np.full((buf.n_envs, 3), i, np.float32)
        buf.add(
            obs, obs + 0.5, np.zeros(buf.n_envs), np.full(buf.n_envs, float(i)), np.zeros(buf.n_envs), [{}] * buf.n_envs
        )


def test_per_buffer_sample_returns_weights_and_matching_transitions() -> None:
    buf = _buffer()
    _fill(buf, 5)
    batch = buf.sample(8)
    assert batch.weights.shape == (8, 1)
    assert float(batch.weights.max()) == pytest.approx(1.0)
    # Observation i was stored with reward i: sampled rows must stay consistent.
    np.testing.assert_allclose(batch.observations[:, 0].numpy(), batch.rewards[:, 0].numpy())
    assert batch.indices.max() < 5 * buf.n_envs


def test_per_buffer_update_priorities_shifts_sampling_and_weights() -> None:
    buf = _buffer(n_envs=1)
    _fill(buf, 4)
    buf.update_priorities([0, 1, 2, 3], [0.0, 0.0, 0.0, 9.0])
    batch = buf.sample(16)
    # Index 3 holds almost all the mass ((9 + eps) vs eps); everything sampled is index 3.
    assert set(batch.indices.tolist()) == {3}
    assert buf.max_priority == pytest.approx(9.0 + buf.eps)
    probs = buf.tree.get([0, 3]) / buf.tree.total
    np.testing.assert_allclose(probs[1], 1.0, atol=1e-5)
