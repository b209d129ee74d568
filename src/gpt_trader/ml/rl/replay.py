"""Prioritized experience replay (Schaul et al. 2016): a numpy sum tree and an SB3 `ReplayBuffer` subclass.

Transition i is sampled with probability P(i) = p_i^alpha / sum_k p_k^alpha, where p_i = |TD error| + eps (new
transitions get the largest priority seen so far, so each is replayed at least once soon). The bias this
introduces is corrected with importance-sampling weights w_i = (N * P(i))^-beta, normalized by the batch maximum
so they only ever scale the loss down; beta is annealed towards 1 by the agent.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class SumTree:
    """Binary tree whose internal nodes hold the sum of their children: O(log n) update and prefix-sum search.

    Vectorized over batches: `update` and `find` take arrays and walk the levels together.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"sum tree capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._leaves = 1 << max(0, (capacity - 1).bit_length())  # power of two >= capacity
        self._tree = np.zeros(2 * self._leaves, dtype=np.float64)  # node 1 is the root; leaves at [L, 2L)

    @property
    def total(self) -> float:
        """Sum of all priorities."""
        return float(self._tree[1])

    def get(self, indices: npt.ArrayLike) -> FloatArray:
        """Priorities stored at leaf `indices`."""
        return self._tree[np.asarray(indices, dtype=np.int64) + self._leaves]

    def update(self, indices: npt.ArrayLike, priorities: npt.ArrayLike) -> None:
        """Set leaf priorities (non-negative, finite) and refresh the sums above them."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        pri = np.broadcast_to(np.asarray(priorities, dtype=np.float64).reshape(-1), idx.shape)
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise IndexError(f"sum tree indices must lie in [0, {self.capacity}), got {idx.min()}..{idx.max()}")
        if not np.isfinite(pri).all() or (pri < 0).any():
            raise ValueError("priorities must be finite and non-negative")
        nodes = idx + self._leaves
        self._tree[nodes] = pri  # with duplicate indices the last write wins, as a loop would
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            self._tree[nodes] = self._tree[2 * nodes] + self._tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def find(self, mass: npt.ArrayLike) -> IntArray:
        """Leaf index of each prefix-sum `mass` in [0, total): the first leaf whose cumulative sum exceeds it."""
        u = np.asarray(mass, dtype=np.float64).copy()
        node = np.ones(u.shape, dtype=np.int64)
        for _ in range(self._leaves.bit_length() - 1):  # every path has the same depth
            left = self._tree[2 * node]
            right = u >= left
            u -= np.where(right, left, 0.0)
            node = 2 * node + right
        # Float round-off can walk into an empty leaf past the last filled one; clamp back into range.
        return np.minimum(node - self._leaves, self.capacity - 1)

    def sample(self, batch_size: int, rng: np.random.Generator, size: int | None = None) -> IntArray:
        """Stratified proportional sample: one uniform draw inside each of `batch_size` equal slices of the mass."""
        total = self.total
        if total <= 0:
            raise ValueError("cannot sample from a sum tree whose priorities are all zero")
        mass = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        leaves = self.find(np.minimum(mass, np.nextafter(total, 0)))
        if size is not None:
            leaves = np.minimum(leaves, size - 1)
        return leaves


class PrioritizedReplayBufferSamples(NamedTuple):
    """SB3's replay samples plus importance-sampling weights and the flat indices to update priorities at."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    weights: th.Tensor
    indices: IntArray


class PrioritizedReplayBuffer(ReplayBuffer):
    """SB3 `ReplayBuffer` sampling transitions in proportion to priority^alpha (one tree over all env slots)."""

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        if optimize_memory_usage:
            raise ValueError("PrioritizedReplayBuffer does not support optimize_memory_usage")
        super().__init__(
            buffer_size, observation_space, action_space, device, n_envs, False, handle_timeout_termination
        )
        self.alpha = alpha
        self.beta = beta
        self.eps = eps
        self.tree = SumTree(self.buffer_size * self.n_envs)
        self.max_priority = 1.0
        self.rng = np.random.default_rng(seed)

    def add(self, *args: Any, **kwargs: Any) -> None:
        """Store a transition per env with the maximum priority seen so far."""
        slots = self.pos * self.n_envs + np.arange(self.n_envs)
        super().add(*args, **kwargs)
        self.tree.update(slots, self.max_priority**self.alpha)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> PrioritizedReplayBufferSamples:  # type: ignore[override]
        """Sample proportionally to priority; returns IS weights (max 1) and the flat indices sampled."""
        size = (self.buffer_size if self.full else self.pos) * self.n_envs
        if size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        flat = self.tree.sample(batch_size, self.rng, size)
        probs = self.tree.get(flat) / self.tree.total
        weights = importance_weights(probs, size, self.beta)
        batch_inds, env_inds = flat // self.n_envs, flat % self.n_envs
        dones = self.dones[batch_inds, env_inds] * (1 - self.timeouts[batch_inds, env_inds])
        # Box observations only: _normalize_obs returns arrays here, never dicts.
        data: tuple[Any, ...] = (
            self._normalize_obs(self.observations[batch_inds, env_inds, :], env),
            self.actions[batch_inds, env_inds, :],
            self._normalize_obs(self.next_observations[batch_inds, env_inds, :], env),
            dones.reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_inds].reshape(-1, 1), env),
        )
        obs, actions, next_obs, dones_t, rewards = (self.to_torch(x) for x in data)
        return PrioritizedReplayBufferSamples(
            obs, actions, next_obs, dones_t, rewards, None, self.to_torch(weights.reshape(-1, 1)), flat
        )

    def update_priorities(self, indices: npt.ArrayLike, td_errors: npt.ArrayLike) -> None:
        """Set priorities of sampled transitions to (|TD error| + eps)^alpha."""
        p = np.abs(np.asarray(td_errors, dtype=np.float64).reshape(-1)) + self.eps
        self.max_priority = max(self.max_priority, float(p.max()))
        self.tree.update(indices, p**self.alpha)


def importance_weights(probs: npt.ArrayLike, size: int, beta: float) -> npt.NDArray[np.float32]:
    """(N * P(i))^-beta normalized by the batch maximum, as float32."""
    w = (size * np.asarray(probs, dtype=np.float64)) ** (-beta)
    return (w / w.max()).astype(np.float32)
