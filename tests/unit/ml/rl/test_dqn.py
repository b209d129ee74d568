"""Double-DQN targets, the dueling head and the DQN subclass training with prioritized replay."""

from __future__ import annotations

import torch as th

from gpt_trader.ml.rl.dqn import double_dqn_target, vanilla_dqn_target
from gpt_trader.ml.rl.policies import DuelingQNetwork, dueling_combine


def test_double_dqn_target_crafted_case_differs_from_vanilla_and_matches_hand() -> None:
    rewards = th.tensor([[1.0], [0.5]])
    dones = th.tensor([[0.0], [1.0]])
    online = th.tensor([[2.0, 5.0, 1.0], [0.0, 1.0, 2.0]])  # online picks action 1 for the first sample
    target = th.tensor([[3.0, 1.0, 4.0], [9.0, 9.0, 9.0]])  # target's own max is action 2 (4.0)
    gamma = 0.9
    double = double_dqn_target(rewards, dones, gamma, online, target)
    vanilla = vanilla_dqn_target(rewards, dones, gamma, target)
    # Hand: 1 + 0.9 * Q_target(s', argmax online = 1) = 1 + 0.9 * 1 = 1.9; vanilla 1 + 0.9 * 4 = 4.6.
    th.testing.assert_close(double, th.tensor([[1.9], [0.5]]))
    th.testing.assert_close(vanilla, th.tensor([[4.6], [0.5]]))


def test_dueling_combine_advantage_mean_zero_so_mean_q_equals_value() -> None:
    value = th.tensor([[2.0], [-1.0]])
    adv = th.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    q = dueling_combine(value, adv)
    th.testing.assert_close(q.mean(dim=1, keepdim=True), value)
    # The ordering of actions is the advantages' ordering.
    assert th.equal(q.argmax(dim=1), adv.argmax(dim=1))


def test_dueling_network_forward_identity_holds_for_random_inputs() -> None:
    import numpy as np
    from gymnasium import spaces
    from stable_baselines3.common.torch_layers import FlattenExtractor

    obs_space = spaces.Box(-1, 1, (5,), np.float32)
    net = DuelingQNetwork(obs_space, spaces.Discrete(3), FlattenExtractor(obs_space), 5, net_arch=[8])
    x = th.randn(4, 5)
    features = net.extract_features(x, net.features_extractor)
    q = net(x)
    th.testing.assert_close(q.mean(dim=1, keepdim=True), net.value_net(features))
