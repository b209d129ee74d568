"""The simulated accounts of many symbols, carried bar to bar as `TradingEnv.advance` carries one, advanced together.

Live serving keeps one RL account per symbol (the policy observes its own exposure and drawdown). Stepping a
`TradingEnv` per symbol costs ~7 us of Python each, so 50 symbols pay ~0.35 ms per bar; here a bar of N symbols is
a few numpy operations on account arrays. The arithmetic is `TradingEnv.step`'s, operation for operation in the
same order on float64 (numpy's elementwise IEEE arithmetic and `sqrt` round exactly as Python's floats and
`math.sqrt`), so the accounts are bit-identical to the env's: `tests/unit/ml/rl/test_accounts.py` drives both with
the same random bars and actions and requires equality.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from gpt_trader.ml.rl.env import TradingEnv

_NONE = -1  # `held` / action: no action yet (the env's None)
_FIELDS = ("cash", "shares", "equity", "peak", "drawdown")


def _at_least_zero(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Python's `max(x, 0.0)` elementwise (NaN stays NaN, as there)."""
    return np.where(x < 0.0, 0.0, x)


class StreamingAccounts:
    """Accounts in slots (`add`), each starting as a fresh `TradingEnv.streaming` env with the same configuration."""

    def __init__(self, template: TradingEnv) -> None:
        terms = template.account_terms
        self._fractions = np.asarray(terms.fractions, dtype=np.float64)
        self._base_rate = terms.base_rate
        self._impact_coef = terms.impact_coef
        self._floor_frac = terms.cash_floor_frac
        self._initial = terms.initial_cash
        self._flat = _NONE if terms.flat_action is None else terms.flat_action
        self._n = 0
        self._values = np.zeros((len(_FIELDS), 0), dtype=np.float64)  # one row per field of `_FIELDS`
        self._held = np.zeros(0, dtype=np.int64)
        # The previous bar's close, volume and sigma per slot (a fresh env's are 1, 1, 0).
        self._prev = np.zeros((3, 0), dtype=np.float64)

    def add(self) -> int:
        """A new account (the env's reset state); returns its slot."""
        if self._n == self._held.shape[0]:
            size = max(8, 2 * self._n)
            self._values = np.concatenate([self._values, np.zeros((len(_FIELDS), size - self._n))], axis=1)
            self._held = np.concatenate([self._held, np.zeros(size - self._n, dtype=np.int64)])
            self._prev = np.concatenate([self._prev, np.zeros((3, size - self._n))], axis=1)
        slot = self._n
        self._n += 1
        self._values[:, slot] = (self._initial, 0.0, self._initial, self._initial, 0.0)
        self._held[slot] = self._flat
        self._prev[:, slot] = (1.0, 1.0, 0.0)
        return slot

    def advance(
        self,
        slots: npt.NDArray[np.intp],
        close: npt.NDArray[np.float64],
        volume: npt.NDArray[np.float64],
        sigma: npt.NDArray[np.float64],
        actions: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Move accounts `slots` (distinct) one bar on: the new bar's close/volume/sigma, and each one's action at
        the previous bar (-1: none yet, the book stays as it is). Returns the new bar's exposure and drawdown (the
        observation's account entries) and whether each account was wiped out (`TradingEnv.advance`)."""
        cash, shares, equity, peak, drawdown = (self._values[i, slots] for i in range(len(_FIELDS)))
        held = self._held[slots]
        price, prev_volume, prev_sigma = (self._prev[i, slots] for i in range(3))
        self._prev[0, slots] = close
        self._prev[1, slots] = _at_least_zero(volume)
        self._prev[2, slots] = _at_least_zero(sigma)

        stepping = actions != _NONE
        trade = stepping & (actions != held)
        target = self._fractions[np.where(trade, actions, 0)]
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(trade, target * equity / price - shares, 0.0)
            cost = self._cost(delta, price, prev_volume, prev_sigma)
            floor = self._floor_frac * equity
            cut = trade & (delta > 0) & (cash - delta * price - cost < floor)
            if cut.any():
                # Cut the buy so cash + cost stays above the floor (the env's branch, same expressions).
                shrunk = (cash - floor) / (price + cost / delta)
                delta = np.where(cut, np.where(shrunk > 0.0, shrunk, 0.0), delta)
                cost = np.where(cut, self._cost(delta, price, prev_volume, prev_sigma), cost)
            moved = trade & (delta != 0.0)
            cash = np.where(moved, cash - (delta * price + cost), cash)
            shares = np.where(moved, shares + delta, shares)
            held = np.where(trade, actions, held)

            value = shares * close
            marked = cash + value
            new_peak = np.where(stepping & (marked > peak), marked, peak)
            dd = np.where(stepping, 1.0 - marked / new_peak, drawdown)
            new_equity = np.where(stepping, marked, equity)
            # Stepped: exposure at the new close over the new equity; not stepped: the env's `_observation`.
            exposure = np.where(
                stepping,
                np.where(marked > 0, value / marked, 0.0),
                np.where(equity > 0, shares * close / equity, 0.0),
            )
        for i, column in enumerate((cash, shares, new_equity, new_peak, dd)):
            self._values[i, slots] = column
        self._held[slots] = held
        return exposure, dd, stepping & (new_equity <= 0.0)

    def _cost(
        self,
        delta: npt.NDArray[np.float64],
        price: npt.NDArray[np.float64],
        volume: npt.NDArray[np.float64],
        sigma: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """`TradingEnv._cost`'s cash cost of trading `delta` shares at the previous bar."""
        qty = np.abs(delta)
        participation = np.where(volume > 0, qty / np.where(volume > 0, volume, 1.0), 1.0)
        rate = self._base_rate + self._impact_coef * sigma * np.sqrt(participation)
        return np.where(delta != 0.0, qty * price * rate, 0.0)

    def account_state(self, slot: int) -> dict[str, float | int | None]:
        """`TradingEnv.account_state` of one account (JSON-friendly, the same keys)."""
        state: dict[str, float | int | None] = {f: float(self._values[i, slot]) for i, f in enumerate(_FIELDS)}
        held = int(self._held[slot])
        state["held"] = None if held == _NONE else held
        return state

    def load_account_state(self, slot: int, state: dict[str, Any], close: float, volume: float, sigma: float) -> None:
        """`TradingEnv.load_account_state` for one account, at the bar `close`/`volume`/`sigma` describe."""
        missing = [name for name in TradingEnv.ACCOUNT_FIELDS if name not in state]
        if missing:
            raise ValueError(f"account state lacks {missing}")
        self._values[:, slot] = [float(state[f]) for f in _FIELDS]
        self._held[slot] = _NONE if state["held"] is None else int(state["held"])
        self._prev[:, slot] = (close, max(volume, 0.0), max(sigma, 0.0))
