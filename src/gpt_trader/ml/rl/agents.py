"""Build SB3 agents from `RLConfig`: PPO (discrete or portfolio env) and DQN with double/dueling/prioritized replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from gpt_trader.ml.rl.config import RLConfig
from gpt_trader.ml.rl.dqn import EnhancedDQN
from gpt_trader.ml.rl.policies import DuelingDQNPolicy
from gpt_trader.ml.rl.replay import PrioritizedReplayBuffer

AGENT_TYPES = ("ppo", "dqn")


def build_ppo(make_env: Callable[[], gym.Env[Any, Any]], config: RLConfig, seed: int) -> PPO:
    """PPO with our settings on `ppo.n_envs` copies of any env: ours, or a peer's for a like-for-like comparison."""
    p = config.ppo
    venv = make_vec_env(make_env, n_envs=p.n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    return PPO(
        "MlpPolicy",
        venv,
        learning_rate=config.learning_rate,
        gamma=config.gamma,
        n_steps=p.n_steps,
        batch_size=p.batch_size,
        n_epochs=p.n_epochs,
        gae_lambda=p.gae_lambda,
        clip_range=p.clip_range,
        ent_coef=p.ent_coef,
        policy_kwargs={"net_arch": list(p.net_arch)},
        seed=seed,
        device="cpu",
        verbose=0,
    )


def build_agent(
    agent_type: str, make_env: Callable[[], gym.Env[Any, Any]], config: RLConfig, seed: int
) -> BaseAlgorithm:
    """A fresh, seeded agent on CPU. PPO runs `ppo.n_envs` copies of the env (DummyVecEnv); DQN one."""
    if agent_type == "ppo":
        return build_ppo(make_env, config, seed)
    if agent_type == "dqn":
        d = config.dqn
        env = make_vec_env(make_env, n_envs=1, seed=seed, vec_env_cls=DummyVecEnv)
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError("DQN needs a discrete action space (the single-asset TradingEnv)")
        replay: dict[str, Any] = {}
        if d.prioritized:
            replay = {
                "replay_buffer_class": PrioritizedReplayBuffer,
                "replay_buffer_kwargs": {"alpha": d.per_alpha, "beta": d.per_beta0, "eps": d.per_eps, "seed": seed},
            }
        return EnhancedDQN(
            DuelingDQNPolicy if d.dueling else "MlpPolicy",
            env,
            double=d.double,
            per_beta0=d.per_beta0,
            learning_rate=config.learning_rate,
            gamma=config.gamma,
            buffer_size=d.buffer_size,
            learning_starts=d.learning_starts,
            batch_size=d.batch_size,
            train_freq=d.train_freq,
            gradient_steps=d.gradient_steps,
            target_update_interval=d.target_update_interval,
            exploration_fraction=d.exploration_fraction,
            exploration_final_eps=d.exploration_final_eps,
            policy_kwargs={"net_arch": list(d.net_arch)},
            seed=seed,
            device="cpu",
            verbose=0,
            **replay,
        )
    raise ValueError(f"unknown agent_type {agent_type!r}; expected one of {AGENT_TYPES}")
