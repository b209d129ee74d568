"""The one cost model: commission, half-spread, slippage and square-root impact.

The RL environment, the walk-forward backtest and the paper broker all charge costs through these functions,
so a decision replayed through any of them pays exactly the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gpt_trader.trading.config import CostConfig

BPS = 1e-4
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CostModel:
    """Costs of trading, as a fraction of traded notional; vectorized over numpy arrays."""

    config: CostConfig = field(default_factory=CostConfig)

    def price_impact_rate(
        self, participation: float | FloatArray = 0.0, sigma: float | FloatArray = 0.0
    ) -> float | FloatArray:
        """Adverse price move per unit notional: half-spread + slippage + impact (paid through the fill price)."""
        c = self.config
        impact = (
            c.impact_coef * np.asarray(sigma, dtype=float) * np.sqrt(np.abs(np.asarray(participation, dtype=float)))
        )
        rate = (c.spread_bps / 2 + c.slippage_bps) * BPS + impact
        return float(rate) if np.ndim(rate) == 0 else rate

    def commission_rate(self) -> float:
        """Commission per unit notional (paid in cash, beside the fill price)."""
        return self.config.commission_bps * BPS

    def cost_rate(self, participation: float | FloatArray = 0.0, sigma: float | FloatArray = 0.0) -> float | FloatArray:
        """Total cost per unit of traded notional."""
        return self.price_impact_rate(participation, sigma) + self.commission_rate()

    def fill_price(self, mid: float, quantity: float, participation: float = 0.0, sigma: float = 0.0) -> float:
        """Price a `quantity` (positive buy, negative sell) fills at: worse than `mid` by the impact rate."""
        rate = float(self.price_impact_rate(participation, sigma))
        return mid * (1 + rate) if quantity > 0 else mid * (1 - rate) if quantity < 0 else mid

    def commission(self, notional: float) -> float:
        """Commission in cash for a trade of `notional` (absolute value)."""
        return abs(notional) * self.commission_rate()

    def rebalance_cost(
        self,
        turnover: float | FloatArray,
        participation: float | FloatArray = 0.0,
        sigma: float | FloatArray = 0.0,
    ) -> float | FloatArray:
        """Cost, as a fraction of equity, of changing exposure by `turnover` (|w_new - w_old|, in equity units).

        Equals (fill-price loss + commission) / equity for the same trade through `fill_price` and `commission`.
        """
        return np.abs(turnover) * self.cost_rate(participation, sigma)
