"""Deep reinforcement learning: trading environments, DQN variants and PPO on Stable-Baselines3."""
