"""Single-asset trading environment: discrete target exposures (short / flat / long at configurable fractions).

Timing: the observation at decision index t holds feature rows t-window+1..t (data up to t only) plus the
account state; the action trades at close_t, paying the one cost model (commission + half-spread + slippage +
square-root impact on participation |shares traded| / volume_t with the bar's sigma); the account is then marked
at close_{t+1} and the reward is computed. Choosing the action already held is a hold: no trade, no cost.

Accounting is in cash and shares, so equity = cash + shares * price holds exactly. Buys are cut so cash never
falls below -(max_gross_leverage - 1) * equity (no borrowing without leverage). Short sale proceeds sit in cash;
borrow fees are not modelled. The episode is truncated at the end of its window and terminated if equity <= 0.

Everything `step` reads is precomputed at construction: prices, volumes and sigmas as lists of Python floats
(plain float math is several times faster than numpy scalars) and the observation rows as one float32 matrix
(`observation_matrix`). `step` itself is scalar float math with no pandas and no per-step array allocation: its
observation is the next row of a block copied from that matrix `OBS_BLOCK` rows at a time, with the two account
state entries written in. Each block row is handed out once and never written again, so an observation a caller
keeps never changes under it (as when each was a fresh array); it is a view, so a kept one keeps its block alive.
The trades (`env.trades`) follow `gpt_trader.trading.backtest.simulate(fill_at="close", rebalance="on_change")`
exactly: tests/model/test_cost_parity.py replays the same decisions through both and the paper broker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from gpt_trader.ml.rl.config import EnvConfig, RewardConfig
from gpt_trader.ml.rl.market import MarketArrays
from gpt_trader.ml.rl.reward import MIN_GROWTH, RewardShaper
from gpt_trader.trading.costs import CostModel

N_STATE = 2  # appended to the feature window: current exposure (fraction of equity) and drawdown
# Finite observation bounds (SB3/gymnasium checkers warn on infinite ones); standardized features are clipped to 10.
OBS_BOUND = 1e9
# Observation rows copied per block: one vectorized copy per this many steps instead of an allocation per step;
# small enough that a kept observation pins little memory (a block is OBS_BLOCK x obs dim float32s).
OBS_BLOCK = 64
# `tuple.__new__(EnvTrade, fields)` builds the same EnvTrade as `EnvTrade(*fields)` without the Python-level
# `__new__` NamedTuple generates: a trade is recorded on up to every step, and that call is half the cost.
_new_tuple = tuple.__new__


def window_matrix(features: npt.NDArray[np.float32], window: int) -> npt.NDArray[np.float32]:
    """Row k holds feature rows k..k+window-1 flattened (oldest first): the observation for decision k+window-1."""
    n, f = features.shape
    view = np.lib.stride_tricks.sliding_window_view(features, (window, f))[:, 0]
    return np.ascontiguousarray(view.reshape(n - window + 1, window * f), dtype=np.float32)


def observation_matrix(features: npt.NDArray[np.float32], window: int) -> npt.NDArray[np.float32]:
    """`window_matrix` with N_STATE zero columns appended: row k is decision k+window-1's observation less the
    account state, which `step` writes into its copy."""
    windows = window_matrix(features, window)
    out = np.zeros((windows.shape[0], windows.shape[1] + N_STATE), dtype=np.float32)
    out[:, : windows.shape[1]] = windows
    return out


class EnvTrade(NamedTuple):
    """One trade: decision index t, signed shares at close_t, participation, sigma, cash cost (price + commission)."""

    t: int
    shares: float
    price: float
    participation: float
    sigma: float
    cost: float


@dataclass(frozen=True, slots=True)
class AccountTerms:
    """What a `TradingEnv`'s account step depends on besides the bars: target fraction per action (capped), the
    cost model's base rate and impact coefficient, the cash floor as a fraction of equity, initial cash, and the
    flat action (None: no action targets 0)."""

    fractions: tuple[float, ...]
    base_rate: float
    impact_coef: float
    cash_floor_frac: float
    initial_cash: float
    flat_action: int | None


class TradingEnv(gym.Env[npt.NDArray[np.float32], int]):
    """Gymnasium env over one asset's decision indices [start, stop - 1); action i targets `position_fractions[i]`."""

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention is a class-level dict

    def __init__(
        self,
        market: MarketArrays,
        *,
        start: int | None = None,
        stop: int | None = None,
        env_config: EnvConfig | None = None,
        reward_config: RewardConfig | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        super().__init__()
        if len(market.symbols) != 1:
            raise ValueError(f"TradingEnv is single-asset; got symbols {market.symbols} (use PortfolioEnv)")
        self.config = env_config or EnvConfig()
        self.reward_config = reward_config or RewardConfig()
        self.cost_model = cost_model or CostModel()
        w = self.config.window_size
        n = market.n_rows
        self.start = w - 1 if start is None else start
        self.stop = n if stop is None else stop
        if self.start < w - 1:
            raise ValueError(f"start {self.start} leaves less than window_size {w} rows of history")
        if not self.start < self.stop - 1 <= n - 1:
            raise ValueError(f"decision range [{self.start}, {self.stop - 1}) is empty or beyond {n} rows")
        self.market = market
        lo = self.start - w + 1
        # Only the rows this env can see are windowed: index t of the episode maps to row t - start.
        self._windows = observation_matrix(market.features[lo : self.stop, 0, :], w)
        self._k = self._windows.shape[1] - N_STATE  # observation entries before the account state
        self._close = market.close[:, 0].tolist()
        self._volume = market.volume[:, 0].tolist()
        self._sigma = market.sigma[:, 0].tolist()
        lev = self.config.max_gross_leverage
        cap = min(self.config.max_position, lev)
        self._fractions = [max(-cap, min(cap, f)) for f in self.config.position_fractions]
        # The cost model's rate is base + impact_coef * sigma * sqrt(participation); its constants are read once so
        # step stays scalar math (tests check equality with CostModel.rebalance_cost).
        self._base_rate = float(self.cost_model.cost_rate(0.0, 0.0))
        self._impact_coef = float(self.cost_model.config.impact_coef)
        self._cash_floor_frac = -(lev - 1.0)
        self._initial_cash = float(self.config.initial_cash_usd)
        self._flat_action = self._fractions.index(0.0) if 0.0 in self._fractions else None
        self._n_actions = len(self._fractions)
        self._last_t = self.stop - 1  # the episode ends when t reaches it
        self.action_space = spaces.Discrete(self._n_actions)  # type: ignore[assignment]
        dim = self._windows.shape[1]
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (dim,), np.float32)
        self._shaper = RewardShaper(self.reward_config)
        # A log-return reward is stateless: step spells out its arithmetic (see RewardShaper.log_return_terms).
        terms = self._shaper.log_return_terms()
        self._log_reward = terms is not None
        self._reward_scale, self._reward_penalty = terms or (0.0, 0.0)
        self._reset_account()

    @property
    def account_terms(self) -> AccountTerms:
        """The constants `step`'s account arithmetic uses, for code that replays it (`StreamingAccounts`)."""
        return AccountTerms(
            tuple(self._fractions), self._base_rate, self._impact_coef, self._cash_floor_frac, self._initial_cash,
            self._flat_action,
        )  # fmt: skip

    @property
    def n_steps(self) -> int:
        """Decisions in one episode (one pass over the window)."""
        return self.stop - 1 - self.start

    def _reset_account(self) -> None:
        self._t = self.start
        self._cash = self._initial_cash
        self._shares = 0.0
        self._equity = self._initial_cash
        self._peak = self._initial_cash
        self._drawdown = 0.0
        self._held = self._flat_action  # action index whose target is held; None = initial flat book
        self._trades = 0
        self._costs_paid = 0.0
        self._last_cost = 0.0
        # The episode's trades, for parity checks against the backtest and the paper broker (not observed).
        self.trades: list[EnvTrade] = []
        self._shaper.reset()
        self._drop_block()

    def _drop_block(self) -> None:
        """Forget the observation block: the next `step` copies a fresh one. Whatever moves `_t` back or rewrites
        `_windows` calls this, so a block row is never handed out twice nor stale."""
        self._block = self._windows[:0]
        self._block_t0 = 0  # decision index of the block's first row
        self._block_stop = 0  # one past the decision index of its last row (0: empty, any t refills)

    def _fill_block(self, t: int) -> None:
        """Copy the observation rows of decisions t.. t+OBS_BLOCK-1 (within the episode) into a fresh block."""
        row = t - self.start
        self._block = self._windows[row : row + OBS_BLOCK].copy()
        self._block_t0 = t
        self._block_stop = t + len(self._block)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Start a pass over the window with a flat book of `initial_cash_usd`."""
        super().reset(seed=seed)
        self._reset_account()
        return self._observation(), self._info()

    def trade_cost(self, shares: float, t: int) -> float:
        """Cash cost of trading `shares` (signed) at bar t through the cost model's rate."""
        return self._cost(shares, t)[0]

    def _cost(self, shares: float, t: int) -> tuple[float, float]:
        """(`trade_cost`, participation |shares| / volume_t) of trading `shares` at bar t. A bar with no recorded
        volume is full participation (the worst impact, not free)."""
        qty = abs(shares)
        vol = self._volume[t]
        participation = qty / vol if vol > 0 else 1.0
        if shares == 0.0:
            return 0.0, participation
        rate = self._base_rate + self._impact_coef * self._sigma[t] * math.sqrt(participation)
        return qty * self._close[t] * rate, participation

    def step(self, action: int | np.integer[Any]) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Trade to the action's target at close_t (unless held), mark at close_{t+1}, return the reward."""
        # Hot path (millions of calls in training): state lives in locals, and the cost, the log-return reward, the
        # observation and the info are spelled out here rather than called for (the same arithmetic, in the same
        # order, as `_cost`, `RewardShaper.reward`, `_observation` and `_info`, which tests pin them to).
        a = int(action)
        if not 0 <= a < self._n_actions:
            raise ValueError(f"action {action!r} outside Discrete({len(self._fractions)})")
        t = self._t
        if t >= self._last_t:
            raise RuntimeError("step() called after the episode ended; call reset()")
        close = self._close
        price = close[t]
        equity = self._equity
        cash = self._cash
        shares = self._shares
        cost = 0.0
        if a != self._held:
            delta = self._fractions[a] * equity / price - shares
            qty = abs(delta)
            vol = self._volume[t]
            participation = qty / vol if vol > 0 else 1.0
            if delta != 0.0:
                rate = self._base_rate + self._impact_coef * self._sigma[t] * math.sqrt(participation)
                cost = qty * price * rate
            floor = self._cash_floor_frac * equity
            if delta > 0 and cash - delta * price - cost < floor:
                # Cut the buy so cash + cost stays above the floor; a smaller trade never costs a higher rate.
                room = cash - floor
                delta = max(0.0, room / (price + cost / delta))
                cost, participation = self._cost(delta, t)
            if delta != 0.0:
                cash -= delta * price + cost
                shares += delta
                self._cash = cash
                self._shares = shares
                self._trades += 1
                self._costs_paid += cost
                self.trades.append(_new_tuple(EnvTrade, (t, delta, price, participation, self._sigma[t], cost)))
            self._held = a
        self._last_cost = cost
        t += 1
        self._t = t
        value = shares * close[t]
        new_equity = cash + value
        growth = new_equity / equity if equity > 0 else 0.0
        self._equity = new_equity
        peak = self._peak
        if new_equity > peak:
            peak = self._peak = new_equity
        dd = 1.0 - new_equity / peak
        if self._log_reward:  # RewardShaper.reward, inline; the conditional is max(growth, MIN_GROWTH), NaN too
            reward = self._reward_scale * math.log(MIN_GROWTH if growth < MIN_GROWTH else growth)
            increase = dd - self._drawdown
            if increase > 0.0 and self._reward_penalty:
                reward -= self._reward_penalty * increase
        else:
            reward = self._shaper.reward(growth, dd - self._drawdown)
        self._drawdown = dd
        terminated = new_equity <= 0.0
        truncated = not terminated and t >= self._last_t
        position = value / new_equity if new_equity > 0 else 0.0
        if t >= self._block_stop:
            self._fill_block(t)
        obs = self._block[t - self._block_t0]
        k = self._k
        obs[k] = position
        obs[k + 1] = dd
        info = {
            "t": t,
            "equity": new_equity,
            "cash": cash,
            "shares": shares,
            "position_value": value,
            "position": position,
            "drawdown": dd,
            "trades": self._trades,
            "step_cost": cost,
            "costs_paid": self._costs_paid,
        }
        return obs, reward, terminated, truncated, info

    @classmethod
    def streaming(
        cls,
        n_features: int,
        *,
        env_config: EnvConfig,
        reward_config: RewardConfig | None = None,
        cost_model: CostModel | None = None,
    ) -> TradingEnv:
        """An env over a two-bar horizon for live use: `advance` feeds it one bar at a time (see there)."""
        w = env_config.window_size
        ones = np.ones((w + 1, 1), dtype=np.float64)
        market = MarketArrays(
            ts=np.zeros(w + 1, dtype="datetime64[us]"),
            symbols=("LIVE",),
            feature_names=tuple(f"f{i}" for i in range(n_features)),
            features=np.zeros((w + 1, 1, n_features), dtype=np.float32),
            close=ones,
            volume=ones,
            sigma=np.zeros_like(ones),
        )
        return cls(
            market, start=w - 1, stop=w + 1, env_config=env_config, reward_config=reward_config, cost_model=cost_model
        )

    def advance(
        self, window: npt.NDArray[np.float32], close: float, volume: float, sigma: float, action: int | None
    ) -> tuple[npt.NDArray[np.float32], bool]:
        """Move a `streaming` env one bar on and return (the new bar's observation, terminated).

        `window` is the new bar's flattened feature window (as `window_matrix` builds it); `action` the decision
        taken at the previous bar, traded at the previous close and marked at this one by `step` itself, so the
        account evolves exactly as over a whole series. None at the first bar: the book starts flat.
        """
        s = self.start
        if self.stop != s + 2:
            raise RuntimeError("advance() needs an env built by TradingEnv.streaming()")
        k = self._k
        self._windows[0, :k] = self._windows[1, :k]
        self._windows[1, :k] = window
        self._drop_block()
        for values, value in ((self._close, close), (self._volume, max(volume, 0.0)), (self._sigma, max(sigma, 0.0))):
            values[s] = values[s + 1]
            values[s + 1] = value
        if action is None:
            self._t = s + 1
            return self._observation(), False
        self._t = s
        # A live env runs for months: keep only this bar's trade, not a log growing with every bar.
        self.trades.clear()
        obs, _, terminated, _, _ = self.step(action)
        return obs, terminated

    # The account fields a `streaming` env carries from bar to bar (what a restart must restore).
    ACCOUNT_FIELDS = ("cash", "shares", "equity", "peak", "drawdown", "held")

    def account_state(self) -> dict[str, float | int | None]:
        """The simulated account, JSON-friendly (see `ACCOUNT_FIELDS`)."""
        return {name: getattr(self, f"_{name}") for name in self.ACCOUNT_FIELDS}

    def load_account_state(
        self, state: dict[str, Any], window: npt.NDArray[np.float32], close: float, volume: float, sigma: float
    ) -> npt.NDArray[np.float32]:
        """Put a `streaming` env back where `account_state` left it, at the bar `window`/`close`/... describe
        (the last one it had advanced to); returns that bar's observation."""
        missing = [name for name in self.ACCOUNT_FIELDS if name not in state]
        if missing:
            raise ValueError(f"account state lacks {missing}")
        s = self.start
        self._windows[1, : self._k] = window
        self._drop_block()
        for values, value in ((self._close, close), (self._volume, max(volume, 0.0)), (self._sigma, max(sigma, 0.0))):
            values[s + 1] = value
        for name in ("cash", "shares", "equity", "peak", "drawdown"):
            setattr(self, f"_{name}", float(state[name]))
        self._held = None if state["held"] is None else int(state["held"])
        self._t = s + 1
        return self._observation()

    def _observation(self) -> npt.NDArray[np.float32]:
        """The observation at `_t` as a fresh array (reset and the streaming calls; `step` builds its own)."""
        k = self._k
        obs = self._windows[self._t - self.start].copy()
        obs[k] = self._shares * self._close[self._t] / self._equity if self._equity > 0 else 0.0
        obs[k + 1] = self._drawdown
        return obs

    def _info(self) -> dict[str, Any]:
        """The info dict at `_t` (reset; `step` builds the same dict inline)."""
        equity = self._equity
        value = self._shares * self._close[self._t]
        return {
            "t": self._t,
            "equity": equity,
            "cash": self._cash,
            "shares": self._shares,
            "position_value": value,
            "position": value / equity if equity > 0 else 0.0,
            "drawdown": self._drawdown,
            "trades": self._trades,
            "step_cost": self._last_cost,
            "costs_paid": self._costs_paid,
        }
