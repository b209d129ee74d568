"""DQN with Double-DQN targets and prioritized replay, as a small subclass of SB3's (vanilla) DQN.

- Double DQN (van Hasselt et al. 2016): the online network picks the next action, the target network values it,
  which removes the max-operator's overestimation bias of the vanilla target max_a Q_target(s', a).
- Prioritized replay: with a `PrioritizedReplayBuffer` the Huber loss is weighted by the importance-sampling
  weights, the sampled transitions' priorities are set to their new |TD error|, and beta is annealed linearly from
  its initial value to 1 over training.
Dueling is a policy choice (`policies.DuelingDQNPolicy`), independent of both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3 import DQN

from gpt_trader.ml.rl.replay import PrioritizedReplayBuffer, PrioritizedReplayBufferSamples


def vanilla_dqn_target(
    rewards: th.Tensor, dones: th.Tensor, gamma: float | th.Tensor, next_q_target: th.Tensor
) -> th.Tensor:
    """r + gamma * (1 - done) * max_a Q_target(s', a); shapes (B, 1), (B, 1), -, (B, A) -> (B, 1)."""
    return rewards + (1 - dones) * gamma * next_q_target.max(dim=1, keepdim=True).values


def double_dqn_target(
    rewards: th.Tensor,
    dones: th.Tensor,
    gamma: float | th.Tensor,
    next_q_online: th.Tensor,
    next_q_target: th.Tensor,
) -> th.Tensor:
    """r + gamma * (1 - done) * Q_target(s', argmax_a Q_online(s', a)) -> (B, 1)."""
    best = next_q_online.argmax(dim=1, keepdim=True)
    return rewards + (1 - dones) * gamma * th.gather(next_q_target, 1, best)


class EnhancedDQN(DQN):
    """SB3 DQN plus Double-DQN targets (`double=True`) and prioritized-replay loss weighting/priority updates."""

    def __init__(self, *args: Any, double: bool = True, per_beta0: float = 0.4, **kwargs: Any) -> None:
        self.double = double
        self.per_beta0 = per_beta0
        super().__init__(*args, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """One round of gradient steps (overrides SB3's to change the target and weight the loss)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        buffer = self.replay_buffer
        prioritized = isinstance(buffer, PrioritizedReplayBuffer)
        if prioritized:
            progress = 1.0 - self._current_progress_remaining
            buffer.beta = self.per_beta0 + (1.0 - self.per_beta0) * progress  # type: ignore[union-attr]
        losses = []
        for _ in range(gradient_steps):
            data = buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma
            with th.no_grad():
                next_q_target = self.q_net_target(data.next_observations)
                if self.double:
                    target = double_dqn_target(
                        data.rewards, data.dones, discounts, self.q_net(data.next_observations), next_q_target
                    )
                else:
                    target = vanilla_dqn_target(data.rewards, data.dones, discounts, next_q_target)
            current = th.gather(self.q_net(data.observations), 1, data.actions.long())
            elementwise = F.smooth_l1_loss(current, target, reduction="none")
            if isinstance(data, PrioritizedReplayBufferSamples):
                loss = (elementwise * data.weights).mean()
                td = (current - target).detach().cpu().numpy()
                buffer.update_priorities(data.indices, td)  # type: ignore[union-attr]
            else:
                loss = elementwise.mean()
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))
        if prioritized:
            self.logger.record("train/per_beta", buffer.beta)  # type: ignore[union-attr]
