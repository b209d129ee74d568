"""The trained SB3 policy as an MLflow pyfunc model.

Two flavours share the agent-zip artifact (the custom classes `EnhancedDQN`, `DuelingDQNPolicy` import from the
installed `gpt_trader` package when the model loads):

- `TradingPolicyModel` (single-asset, discrete agents; what training registers): the common model interface of
  GPT-Trader. Input is a features frame exactly like the transformer's (bars + feature columns, one or more
  symbols); output is one row per (ts, symbol) with the raw `action` and the target `position` in [-1, 1].
- `SB3PolicyModel` (portfolio agents): raw observations in, actions or weights out.

Serving semantics of `TradingPolicyModel`. The policy observes a window of standardized features *and its own
account state* (current exposure and drawdown). A frame carries no account, so the model simulates one: per
symbol, it starts flat at the first bar with a full feature window, asks the policy for an action, trades to the
action's target through the training environment (same cost model, same accounting) and moves one bar on, until
the last bar of the frame. The position at bar t is the policy's target exposure decided at close t, held until
close t+1. The answer therefore depends on how much history precedes a bar: give the same lookback to compare
two calls (scoring gives `registry.promotion.lookback_bars` bars before its window; serving should give a
fixed-length trailing window). Features are standardized with the mean/std of the *training rows only*, bundled
in the model, so no statistics of the scored data leak in.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mlflow.pyfunc import PythonModel

from gpt_trader.core.errors import DataError
from gpt_trader.core.frames import to_polars
from gpt_trader.ml.rl.market import FEATURE_CLIP, MarketArrays, market_arrays

# Agent classes by name, resolved lazily so loading a PPO model does not need the DQN extensions and vice versa.
AGENT_CLASSES = {
    "ppo": ("stable_baselines3", "PPO"),
    "dqn": ("gpt_trader.ml.rl.dqn", "EnhancedDQN"),
}


def agent_class(kind: str) -> Any:
    """The SB3 algorithm class for `kind` ("ppo" or "dqn")."""
    from importlib import import_module

    if kind not in AGENT_CLASSES:
        raise ValueError(f"unknown agent kind {kind!r}; expected one of {sorted(AGENT_CLASSES)}")
    module, name = AGENT_CLASSES[kind]
    return getattr(import_module(module), name)


class SB3PolicyModel(PythonModel):
    """pyfunc wrapper: `predict(observations)` -> DataFrame of actions (`action`, or `weight_<i>` for portfolios)."""

    def __init__(self, kind: str, n_outputs: int, discrete: bool) -> None:
        self.kind = kind
        self.n_outputs = n_outputs
        self.discrete = discrete
        self.model: Any = None

    def load_context(self, context: Any) -> None:
        """Load the agent zip on CPU."""
        self.model = agent_class(self.kind).load(context.artifacts["agent"], device="cpu")

    # Left unannotated on purpose: MLflow 3 turns type hints on `predict` into a (here unwanted) schema.
    def predict(self, context, model_input, params=None):
        """Deterministic actions for a batch of observations (rows = observations)."""
        import pandas as pd

        obs = np.asarray(model_input, dtype=np.float32)
        if obs.ndim == 1:
            obs = obs[None, :]
        actions, _ = self.model.predict(obs, deterministic=True)
        return action_frame(np.asarray(actions), self.discrete, self.n_outputs, pd)


@dataclass(frozen=True, slots=True)
class ObservationSpec:
    """Everything needed to rebuild the training observations from a features frame (JSON-friendly)."""

    window_size: int
    feature_names: tuple[str, ...]
    sigma_column: str
    scaler_mean: tuple[float, ...]
    scaler_std: tuple[float, ...]
    env: dict[str, Any]
    reward: dict[str, Any]
    costs: dict[str, Any]

    @classmethod
    def fit(
        cls,
        market: MarketArrays,
        fit_rows: range,
        *,
        env: dict[str, Any],
        reward: dict[str, Any],
        costs: dict[str, Any],
        sigma_column: str,
    ) -> ObservationSpec:
        """Scaler fitted on `fit_rows` of a single-asset, *unscaled* market, as `MarketArrays.standardized` does."""
        fit = market.features[fit_rows.start : fit_rows.stop, 0].astype(np.float64)
        mean = fit.mean(axis=0)
        std = fit.std(axis=0)
        std[std < 1e-12] = 1.0
        return cls(
            window_size=int(env["window_size"]),
            feature_names=tuple(market.feature_names),
            sigma_column=sigma_column,
            scaler_mean=tuple(float(v) for v in mean),
            scaler_std=tuple(float(v) for v in std),
            env=env,
            reward=reward,
            costs=costs,
        )

    def scale(self, market: MarketArrays) -> MarketArrays:
        """Standardize a market's features with the training statistics (clipped like training)."""
        mean = np.asarray(self.scaler_mean, dtype=np.float64)
        std = np.asarray(self.scaler_std, dtype=np.float64)
        scaled = np.clip((market.features - mean) / std, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)
        return replace(market, features=scaled)

    def input_columns(self) -> list[str]:
        """Columns the model reads besides `ts` and `symbol`."""
        extra = [c for c in ("close", "volume", self.sigma_column) if c not in self.feature_names]
        return [*extra, *self.feature_names]


class TradingPolicyModel(PythonModel):
    """pyfunc: features frame in -> per (ts, symbol) `action` and `position` (see the module docstring)."""

    def __init__(self, kind: str, spec: ObservationSpec) -> None:
        self.kind = kind
        self.spec = spec
        self.model: Any = None

    def load_context(self, context: Any) -> None:
        """Load the agent zip on CPU."""
        self.model = agent_class(self.kind).load(context.artifacts["agent"], device="cpu")

    # Left unannotated on purpose: MLflow 3 turns type hints on `predict` into a (here unwanted) schema.
    def predict(self, context, model_input, params=None):
        """Simulate the policy over each symbol's rows, starting flat; one row per bar with a full window."""
        import pandas as pd
        import polars as pl

        frame = to_polars(model_input)
        outputs = [
            self._simulate(frame.filter(pl.col("symbol") == symbol), str(symbol))
            for symbol in frame["symbol"].unique(maintain_order=True).to_list()
        ]
        if not outputs:
            return pd.DataFrame(
                {
                    "ts": pd.Series([], dtype="datetime64[ns]"),
                    "symbol": pd.Series([], dtype=object),
                    "action": pd.Series([], dtype=np.int64),
                    "position": pd.Series([], dtype=np.float64),
                }
            )
        return pd.concat(outputs, ignore_index=True)

    def _simulate(self, frame: Any, symbol: str) -> Any:
        import pandas as pd

        from gpt_trader.ml.rl.config import EnvConfig, RewardConfig
        from gpt_trader.ml.rl.env import TradingEnv
        from gpt_trader.trading.config import CostConfig
        from gpt_trader.trading.costs import CostModel

        spec = self.spec
        market = market_arrays(
            frame.sort("ts"), list(spec.feature_names), symbols=[symbol], sigma_column=spec.sigma_column
        )
        w, n = spec.window_size, market.n_rows
        if n < w + 1:
            raise DataError(f"{symbol}: {n} rows; the policy needs window_size + 1 = {w + 1} rows to act")
        env_config = EnvConfig.model_validate(spec.env)
        env = TradingEnv(
            spec.scale(market),
            start=w - 1,
            stop=n,
            env_config=env_config,
            reward_config=RewardConfig.model_validate(spec.reward),
            cost_model=CostModel(CostConfig.model_validate(spec.costs)),
        )
        fractions = np.clip(np.asarray(env_config.position_fractions, dtype=np.float64), -1.0, 1.0)
        actions = np.zeros(n - (w - 1), dtype=np.int64)
        obs, _ = env.reset()
        for i, t in enumerate(range(w - 1, n)):
            action, _ = self.model.predict(obs[None, :], deterministic=True)
            actions[i] = int(np.asarray(action).reshape(-1)[0])
            if t == n - 1:
                break
            # After the last decision step the env returns the observation of bar n - 1 (truncated=True).
            obs, _, terminated, _, _ = env.step(actions[i])
            if terminated:  # equity wiped out: the simulated book stays flat from here on
                flat = env_config.position_fractions.index(0.0) if 0.0 in env_config.position_fractions else 0
                actions[i + 1 :] = flat
                break
        ts = pd.to_datetime(market.ts[w - 1 :])
        if getattr(ts, "tz", None) is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        return pd.DataFrame(
            {"ts": ts, "symbol": symbol, "action": actions, "position": fractions[actions].astype(np.float64)}
        )


def log_trading_policy(agent_path: Path, kind: str, spec: ObservationSpec, features: Any) -> Any:
    """Log the agent as a features-frame pyfunc named `policy` (signature and input example from `features`)."""
    import polars as pl

    from gpt_trader.data.features import CALENDAR_COLUMNS

    wrapper = TradingPolicyModel(kind, spec)
    frame = to_polars(features).sort("ts").tail(spec.window_size + 4)
    example = frame.select(
        pl.col("ts").dt.replace_time_zone(None) if isinstance(frame.schema["ts"], pl.Datetime) else pl.col("ts"),
        pl.col("symbol").cast(pl.Utf8),
        *(pl.col(c).cast(pl.Int64 if c in CALENDAR_COLUMNS else pl.Float64) for c in spec.input_columns()),
    ).to_pandas()
    wrapper.model = agent_class(kind).load(agent_path, device="cpu")
    output = wrapper.predict(None, example)
    wrapper.model = None  # the agent travels as the artifact, not inside the pickled wrapper
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)
    try:
        return _log(wrapper, agent_path, example, output)
    finally:
        pyfunc_log.setLevel(level)


def action_frame(actions: npt.NDArray[Any], discrete: bool, n_outputs: int, pd: Any) -> Any:
    """Actions as a DataFrame: int64 `action` column, or float `weight_<i>` columns."""
    if discrete:
        return pd.DataFrame({"action": actions.reshape(-1).astype(np.int64)})
    a = actions.reshape(-1, n_outputs).astype(np.float64)
    return pd.DataFrame({f"weight_{i}": a[:, i] for i in range(n_outputs)})


def log_policy(
    agent_path: Path, kind: str, observations: npt.NDArray[np.float32], discrete: bool, n_outputs: int
) -> Any:
    """Log the agent as a pyfunc model named `policy` in the active run, with a signature and input example."""
    import pandas as pd

    wrapper = SB3PolicyModel(kind, n_outputs, discrete)
    example = observations[: min(5, len(observations))].astype(np.float32)
    zeros = np.zeros((len(example), n_outputs))
    output = action_frame(zeros[:, 0] if discrete else zeros, discrete, n_outputs, pd)
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    # MLflow warns on every pickled python_model; the wrapper is our own class, imported from the package.
    pyfunc_log.setLevel(logging.ERROR)
    try:
        return _log(wrapper, agent_path, example, output)
    finally:
        pyfunc_log.setLevel(level)


# What loading and predicting imports (beside gpt_trader itself); pinned to the versions installed when logging.
POLICY_REQUIREMENTS = (
    "stable-baselines3",
    "gymnasium",
    "torch",
    "mlflow",
    "cloudpickle",
    "numpy",
    "pandas",
    "polars",
    "pydantic",
)


def policy_requirements() -> list[str]:
    """Pinned pip requirements of the policy pyfunc (given explicitly: MLflow's inference re-imports the model
    in a subprocess, which takes seconds per logged seed)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in POLICY_REQUIREMENTS:
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return reqs


def _log(wrapper: PythonModel, agent_path: Path, example: Any, output: Any) -> Any:
    import mlflow
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        # MLflow warns that int columns cannot hold missing values: actions never are missing.
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.pyfunc.log_model(
            name="policy",
            python_model=wrapper,
            artifacts={"agent": str(agent_path)},
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=policy_requirements(),
        )
