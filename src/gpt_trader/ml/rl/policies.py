"""Dueling Q-network (Wang et al. 2016) as an SB3 `DQNPolicy`: Q(s, a) = V(s) + A(s, a) - mean_a A(s, a).

Subtracting the mean advantage makes the split identifiable (the advantages of a state sum to zero), so V learns
the state's value and A only the relative merit of actions.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork


class DuelingQNetwork(QNetwork):
    """QNetwork with separate value and advantage streams, each an MLP of `net_arch` over the shared features."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        n_actions = int(self.action_space.n)
        # The parent's single head is replaced by the two streams.
        self.q_net = th.nn.Sequential()  # empty: an identity
        self.value_net = th.nn.Sequential(*create_mlp(self.features_dim, 1, self.net_arch, self.activation_fn))
        self.advantage_net = th.nn.Sequential(
            *create_mlp(self.features_dim, n_actions, self.net_arch, self.activation_fn)
        )

    def forward(self, obs: th.Tensor) -> th.Tensor:  # type: ignore[override]
        """Q-values (batch, n_actions)."""
        features = self.extract_features(obs, self.features_extractor)
        return dueling_combine(self.value_net(features), self.advantage_net(features))


def dueling_combine(value: th.Tensor, advantage: th.Tensor) -> th.Tensor:
    """V + A - mean(A): the identifiable dueling aggregation."""
    return value + advantage - advantage.mean(dim=1, keepdim=True)


class DuelingDQNPolicy(DQNPolicy):
    """DQNPolicy whose online and target networks are `DuelingQNetwork`s."""

    def make_q_net(self) -> DuelingQNetwork:
        """Build a fresh dueling network with its own features extractor."""
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return DuelingQNetwork(**net_args).to(self.device)
