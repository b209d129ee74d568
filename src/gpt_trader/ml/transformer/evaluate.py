"""Walk-forward out-of-sample evaluation of the transformer against buy-and-hold and a logistic baseline.

For each group of symbols (one multi-asset model per group), `walk_forward_splits` cuts consecutive test
windows at the end of the series; each fold trains a fresh model on its past only (normalization fitted on
the fold's training rows), early-stops on an embargoed validation window, and predicts the embargoed test
window. The logistic regression baseline trains on the same training rows and features. All figures are
computed on the concatenated test windows, after the one cost model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from gpt_trader.core.errors import DataError
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.ml.evaluation import (
    buy_and_hold,
    classical_baseline,
    equity_curve,
    evaluate_signals,
    markdown_table,
    periods_per_year,
    walk_forward_splits,
)
from gpt_trader.ml.transformer.config import TransformerConfig
from gpt_trader.ml.transformer.panel import IGNORE_INDEX, Panel, build_panel, input_columns
from gpt_trader.trading.config import CostConfig
from gpt_trader.trading.costs import CostModel


@dataclass
class DatasetResult:
    """Out-of-sample figures of one symbol: model, baseline and buy-and-hold, plus the equity curves."""

    symbol: str
    timeframe: str
    group: tuple[str, ...]
    n_folds: int
    periods_per_year: float
    model: dict[str, float]
    baseline: dict[str, float]
    buy_and_hold: dict[str, float]
    fold_accuracy: list[float]
    ts: npt.NDArray[Any] = field(repr=False)
    equity: dict[str, npt.NDArray[np.float64]] = field(repr=False)
    train_secs: float = 0.0

    def metrics(self) -> dict[str, float]:
        """Flat metrics for DVC/MLflow: model_*, baseline_*, buy_and_hold_*."""
        out = {"n_folds": float(self.n_folds), "train_secs": self.train_secs}
        out.update({f"model_{k}": v for k, v in self.model.items()})
        out.update({f"baseline_{k}": v for k, v in self.baseline.items()})
        out.update({f"buy_and_hold_{k}": v for k, v in self.buy_and_hold.items()})
        return out


def evaluate_group(
    frame: pl.DataFrame,
    timeframe: str,
    config: TransformerConfig,
    features: FeaturesConfig,
    costs: CostConfig,
    *,
    log: Any = None,
) -> list[DatasetResult]:
    """Walk-forward evaluation of one multi-asset group (a feature frame of its symbols); one result per symbol."""
    from gpt_trader.ml.transformer.trader import TransformerTrader

    ev = config.evaluation
    if ev.max_epochs is not None:
        config = config.model_copy(update={"max_epochs": ev.max_epochs})
    columns = input_columns(features)
    panel = build_panel(frame, columns, name=f"group {sorted(frame['symbol'].unique().to_list())}")
    embargo = max(ev.embargo_bars, features.label_horizon)
    n_folds, test = ev.for_timeframe(ev.folds, timeframe), ev.for_timeframe(ev.test_bars, timeframe)
    val = ev.for_timeframe(ev.val_bars, timeframe)
    min_train = max(ev.min_train_bars, config.max_seq_length)
    try:
        splits = walk_forward_splits(
            len(panel),
            n_folds=n_folds,
            test_size=test,
            min_train=min_train,
            embargo=embargo,
            val_size=val,
            expanding=ev.expanding,
        )
    except ValueError as exc:
        raise DataError(f"{panel.symbols}: {exc}") from None
    seq_len = config.max_seq_length
    ends_all, probs, expected, baseline = [], [], [], []
    fold_accuracy: list[float] = []
    started = time.perf_counter()
    for k, split in enumerate(splits):
        trader = TransformerTrader(config, features=features, costs=costs, track=False)
        context = max(0, split.val.start - (seq_len - 1))
        trader.fit_panels(
            panel.rows(split.train.start, split.train.stop),
            panel.rows(context, split.val.stop),
            val_label_start=split.val.start - context,
        )
        ends = np.arange(split.test.start, split.test.stop, dtype=np.int64)
        out = trader.predict_panel(panel, ends)
        ends_all.append(ends)
        probs.append(out["probabilities"])
        expected.append(out["expected_return"])
        baseline.append(_baseline_signals(panel, split.train, ends, seed=config.seed))
        labels = panel.labels[ends]
        mask = labels != IGNORE_INDEX
        fold_accuracy.append(float((out["probabilities"].argmax(-1)[mask] == labels[mask]).mean()))
        if log is not None:
            log(f"  {'+'.join(panel.symbols)} fold {k + 1}/{len(splits)}: class accuracy {fold_accuracy[-1]:.3f}")
    train_secs = time.perf_counter() - started
    ends = np.concatenate(ends_all)
    probabilities, forecast, base = np.concatenate(probs), np.concatenate(expected), np.concatenate(baseline)
    ppy = periods_per_year(pl.Series(panel.ts))
    cost_model = CostModel(costs)
    results = []
    for a, symbol in enumerate(panel.symbols):
        fwd, nxt = panel.fwd_return[ends, a], panel.next_return[ends, a]
        keep = np.isfinite(fwd) & np.isfinite(nxt)
        signal = probabilities[:, a].argmax(axis=1) - 1
        model = evaluate_signals(signal, fwd, nxt, cost_model, ppy, forecast=forecast[:, a])
        base_figures = evaluate_signals(base[:, a], fwd, nxt, cost_model, ppy)
        passive = buy_and_hold(nxt[keep], cost_model, ppy).to_dict()
        equity = {
            "transformer": equity_curve(signal[keep], nxt[keep], cost_model),
            "logistic baseline": equity_curve(base[keep, a], nxt[keep], cost_model),
            "buy and hold": equity_curve(np.ones(int(keep.sum())), nxt[keep], cost_model),
        }
        results.append(
            DatasetResult(
                symbol=symbol,
                timeframe=timeframe,
                group=panel.symbols,
                n_folds=len(splits),
                periods_per_year=ppy,
                model=model,
                baseline=base_figures,
                buy_and_hold=passive,
                fold_accuracy=fold_accuracy,
                ts=panel.ts[ends][keep],
                equity=equity,
                train_secs=train_secs,
            )
        )
    return results


def _baseline_signals(panel: Panel, train: range, ends: npt.NDArray[np.int64], *, seed: int) -> npt.NDArray[np.int64]:
    """Logistic regression per asset on the current bar's features, trained on the fold's training rows."""
    out = np.zeros((len(ends), len(panel.symbols)), dtype=np.int64)
    for a in range(len(panel.symbols)):
        x, labels = panel.features[train.start : train.stop, a], panel.labels[train.start : train.stop, a]
        mask = labels != IGNORE_INDEX
        predicted, _ = classical_baseline(x[mask], labels[mask] - 1, panel.features[ends, a], seed=seed)
        out[:, a] = predicted
    return out


TABLE_COLUMNS: list[tuple[str, str]] = [
    ("dataset", "dataset"),
    ("strategy", "strategy"),
    ("direction_n_calls", "OOS calls"),
    ("direction_accuracy", "accuracy"),
    ("ci", "95% CI"),
    ("direction_p_value_vs_half", "p vs 50%"),
    ("direction_majority_rate", "majority"),
    ("direction_p_value_vs_majority", "p vs majority"),
    ("direction_detectable_accuracy", "detectable"),
    ("ic", "IC"),
    ("dm", "DM vs 0 (p)"),
    ("strategy_sharpe", "Sharpe"),
    ("strategy_annual_return", "annual return"),
    ("strategy_max_drawdown", "max DD"),
    ("strategy_win_rate", "win rate"),
    ("strategy_turnover", "turnover/yr"),
]

DIRECTION_KEYS = tuple(k for k, _ in TABLE_COLUMNS[2:11])
STRATEGY_KEYS = tuple(k for k, _ in TABLE_COLUMNS[11:])


def table_rows(results: list[DatasetResult]) -> list[dict[str, Any]]:
    """Rows of the evaluation table: transformer, logistic baseline and buy-and-hold per dataset."""
    rows = []
    for r in results:
        name = f"{r.symbol} {r.timeframe}"
        for strategy, figures in (("transformer", r.model), ("logistic", r.baseline)):
            row: dict[str, Any] = {"dataset": name, "strategy": strategy, **figures}
            row["direction_n_calls"] = int(figures["direction_n_calls"])
            row["ci"] = f"[{figures['direction_ci95_low']:.3f}, {figures['direction_ci95_high']:.3f}]"
            if "dm_stat" in figures:
                row["dm"] = f"{figures['dm_stat']:.2f} ({figures['dm_p_value']:.3f})"
            else:
                row["ic"] = "-"
                row["dm"] = "-"
            rows.append(row)
        passive = {f"strategy_{k}": v for k, v in r.buy_and_hold.items()}
        rows.append({"dataset": name, "strategy": "buy&hold", **passive})
    return rows


def render_report(
    results: list[DatasetResult], *, config: TransformerConfig, costs: CostConfig, wall_secs: float
) -> str:
    """The markdown evaluation report (the equity plot is `equity.png` beside it)."""
    ev = config.evaluation
    groups = sorted({r.group for r in results})
    attention = (
        "full causal attention"
        if config.attention_window is None
        else f"sliding attention over {config.attention_window} bars (receptive field {config.receptive_field})"
    )
    lines = [
        "# Market transformer: walk-forward out-of-sample evaluation",
        "",
        f"Model: d_model {config.d_model}, {config.n_heads} heads, {config.n_layers} layers, {attention}, window "
        f"{config.max_seq_length} bars, at most {ev.max_epochs or config.max_epochs} epochs per fold with early "
        f"stopping (patience {config.early_stopping_patience}). Groups modelled jointly: "
        + ", ".join("+".join(g) for g in groups)
        + f". {'Expanding' if ev.expanding else 'Rolling'} training windows, embargo {ev.embargo_bars} bars "
        "between train, validation and test; normalization fitted on each fold's training rows only.",
        "",
        f"Costs per unit of turnover: commission {costs.commission_bps} bps + half spread {costs.spread_bps / 2} bps "
        f"+ slippage {costs.slippage_bps} bps. Signal: Buy = long 1, Sell = short 1, Hold = flat; a position taken "
        "at bar t earns the return from t to t+1.",
        "",
        "Direction statistics count bars with a non-zero call and a non-zero realized move. p-values are one-sided "
        "binomial tests (vs 50% and vs always calling the majority direction); `detectable` is the smallest true "
        "accuracy a 5% test would detect with 80% power on that many calls. IC is the Spearman correlation of the "
        "return forecast with the realized forward return; DM is the Diebold-Mariano statistic of the forecast's "
        "squared error against a zero forecast (negative = better than zero), with its two-sided p-value.",
        "",
        markdown_table(table_rows(results), TABLE_COLUMNS),
        "",
        "Per-fold class accuracy (Buy/Hold/Sell, all test rows):",
        "",
    ]
    seen: set[tuple[str, ...]] = set()
    for r in results:
        if r.group in seen:
            continue
        seen.add(r.group)
        folds = ", ".join(f"{a:.3f}" for a in r.fold_accuracy)
        lines.append(f"- {'+'.join(r.group)} ({r.timeframe}): {folds} (training {r.train_secs:.0f} s)")
    lines += ["", f"Wall time {wall_secs:.0f} s.", "", "![equity](equity.png)", ""]
    return "\n".join(lines)
