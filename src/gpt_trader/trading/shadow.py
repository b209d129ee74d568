"""Shadow trading: live evidence for the promotion gate, never an order at the broker.

For each model kind with a `challenger`, the challenger and the champion it would replace each trade a private
paper book on the same live bars (same cost model, same sizing, each model alone, whatever the live book's signal
combination and risk state do), from the same first bar. The pair is keyed by both versions: when either moves a
new pair starts. Its figures are published as tags on the challenger's registry version (`shadow.*`), where the
promotion gate reads them (`registry.promotion.shadow_*`).

Evidence accumulates across sessions when a later session continues after the bars already counted (same
champion); a session that replays bars already counted (e.g. `make run` replaying the same days) replaces the
evidence only if it holds more bars, so no bar is ever counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from gpt_trader.core.types import Bar
from gpt_trader.trading.costs import CostModel
from gpt_trader.trading.execution import PaperBroker, make_client_order_id
from gpt_trader.trading.portfolio import Portfolio
from gpt_trader.trading.sizing import order_quantity
from gpt_trader.trading.types import Order, Side, to_decimal

TAG_PREFIX = "shadow."


@dataclass(slots=True)
class SoloBook:
    """One model's private paper book."""

    broker: PaperBroker
    portfolio: Portfolio

    @classmethod
    def new(cls, costs: CostModel, cash: Decimal) -> SoloBook:
        """A flat book of `cash`."""
        return cls(PaperBroker(costs, initial_cash=cash), Portfolio(cash))

    def open_bar(self, bar: Bar, sigma: float) -> None:
        """Fill what was decided on the previous bar at this bar's open; mark at the close."""
        for fill in self.broker.on_price(bar.symbol, bar.open, bar.ts, volume=bar.volume, sigma=sigma):
            self.portfolio.apply_fill(fill)
        self.portfolio.mark(bar.symbol, to_decimal(bar.close))

    def trade_to(self, bar: Bar, target: float, lot_size: Decimal, tag: str) -> None:
        """Order the quantity that brings the position to `target` x equity (filled at the next bar's open)."""
        book = self.portfolio
        qty = order_quantity(target, book.quantity(bar.symbol), book.equity(), to_decimal(bar.close), lot_size=lot_size)
        if qty != 0:
            side = Side.BUY if qty > 0 else Side.SELL
            self.broker.submit(Order(make_client_order_id(tag, bar.symbol, bar.ts), bar.symbol, side, abs(qty), bar.ts))

    @property
    def growth(self) -> float:
        """Equity over initial cash."""
        return float(self.portfolio.equity() / self.portfolio.initial_cash)


@dataclass(frozen=True, slots=True)
class ShadowEvidence:
    """Live shadow figures of a challenger against the champion over the same bars."""

    champion_version: str | None
    bars: int
    first_bar: datetime
    last_bar: datetime
    challenger_return: float
    champion_return: float

    def to_tags(self) -> dict[str, str]:
        """MLflow version tags (strings)."""
        return {
            f"{TAG_PREFIX}champion_version": self.champion_version or "none",
            f"{TAG_PREFIX}bars": str(self.bars),
            f"{TAG_PREFIX}first_bar": self.first_bar.isoformat(),
            f"{TAG_PREFIX}last_bar": self.last_bar.isoformat(),
            f"{TAG_PREFIX}return": f"{self.challenger_return:.10g}",
            f"{TAG_PREFIX}champion_return": f"{self.champion_return:.10g}",
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ShadowEvidence | None:
        """The evidence recorded on a version, or None when it has none (or it is unreadable)."""
        try:
            champion = tags[f"{TAG_PREFIX}champion_version"]
            return cls(
                None if champion == "none" else champion,
                int(tags[f"{TAG_PREFIX}bars"]),
                datetime.fromisoformat(tags[f"{TAG_PREFIX}first_bar"]),
                datetime.fromisoformat(tags[f"{TAG_PREFIX}last_bar"]),
                float(tags[f"{TAG_PREFIX}return"]),
                float(tags[f"{TAG_PREFIX}champion_return"]),
            )
        except (KeyError, ValueError):
            return None

    def after(self, earlier: ShadowEvidence) -> ShadowEvidence:
        """This evidence appended to `earlier` (which ends before it starts): returns compound, bars add up."""
        return ShadowEvidence(
            self.champion_version,
            earlier.bars + self.bars,
            earlier.first_bar,
            self.last_bar,
            (1 + earlier.challenger_return) * (1 + self.challenger_return) - 1,
            (1 + earlier.champion_return) * (1 + self.champion_return) - 1,
        )


@dataclass(slots=True)
class ShadowPair:
    """A challenger version and the champion version it is measured against, each on its own book."""

    name: str
    challenger_version: str
    champion_version: str | None
    challenger: SoloBook
    champion: SoloBook
    bars: int = 0
    first_bar: datetime | None = None
    last_bar: datetime | None = None
    # Evidence already on the registry version when this pair started (this session extends or replaces it).
    prior: ShadowEvidence | None = None
    published: dict[str, str] = field(default_factory=dict)

    def evidence(self) -> ShadowEvidence | None:
        """This session's figures (None before the first bar)."""
        if self.first_bar is None or self.last_bar is None:
            return None
        return ShadowEvidence(
            self.champion_version,
            self.bars,
            self.first_bar,
            self.last_bar,
            self.challenger.growth - 1,
            self.champion.growth - 1,
        )

    def to_publish(self) -> ShadowEvidence | None:
        """What the registry should hold: this session's evidence, after the prior one where it continues it."""
        mine = self.evidence()
        if mine is None:
            return None
        prior = self.prior
        if prior is None or prior.champion_version != self.champion_version:
            return mine
        if prior.last_bar < mine.first_bar:
            return mine.after(prior)
        return mine if mine.bars > prior.bars else None  # replayed bars: keep the larger sample, never both


class ShadowTracker:
    """The shadow pairs of a session; `step` runs them on a timestamp's bars."""

    def __init__(self, costs: CostModel, cash: Decimal, lot_size: Decimal) -> None:
        self.costs, self.cash, self.lot_size = costs, cash, lot_size
        self.pairs: dict[tuple[str, str, str | None], ShadowPair] = {}

    def pair(self, name: str, challenger: str, champion: str | None, client: Any) -> ShadowPair:
        """The pair for these versions, started on first use: flat books, the registry's prior evidence read."""
        key = (name, challenger, champion)
        found = self.pairs.get(key)
        if found is None:
            found = self.pairs[key] = ShadowPair(
                name,
                challenger,
                champion,
                SoloBook.new(self.costs, self.cash),
                SoloBook.new(self.costs, self.cash),
                prior=ShadowEvidence.from_tags(dict(client.get_model_version(name, challenger).tags)),
            )
        return found

    def step(
        self,
        pair: ShadowPair,
        bars: list[Bar],
        sigma: Callable[[str], float],
        challenger_targets: Mapping[str, float],
        champion_targets: Mapping[str, float],
    ) -> None:
        """Fill and mark both books on `bars`, then trade each to its own model's targets."""
        for bar in bars:
            s = sigma(bar.symbol)
            pair.challenger.open_bar(bar, s)
            pair.champion.open_bar(bar, s)
        tag = f"shadow-{pair.name}-{pair.challenger_version}"
        for bar in bars:
            if bar.symbol in challenger_targets:
                pair.challenger.trade_to(bar, challenger_targets[bar.symbol], self.lot_size, f"{tag}-c")
            if bar.symbol in champion_targets:
                pair.champion.trade_to(bar, champion_targets[bar.symbol], self.lot_size, f"{tag}-k")
        ts = bars[0].ts
        pair.first_bar = pair.first_bar or ts
        pair.last_bar = ts
        pair.bars += 1

    def publish(self, client: Any) -> int:
        """Write each pair's evidence as tags on its challenger version; returns how many versions changed."""
        changed = 0
        for pair in self.pairs.values():
            evidence = pair.to_publish()
            if evidence is None:
                continue
            tags = evidence.to_tags()
            if tags == pair.published:
                continue
            for key, value in tags.items():
                client.set_model_version_tag(pair.name, pair.challenger_version, key, value)
            pair.published = tags
            changed += 1
        return changed
