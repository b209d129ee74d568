"""Honest out-of-sample evaluation, shared by the transformer and the RL agents.

Time-ordered splits with an embargo, directional-accuracy statistics with their power, information coefficient,
Diebold-Mariano forecast comparison, and strategy performance after the one cost model.
Conventions: a position decided at bar t (using data up to t) earns the simple return from t to t+1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gpt_trader.trading.costs import CostModel

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Split:
    """Index ranges [start, stop) of one fold; `embargo` bars separate train, validation and test."""

    train: range
    val: range
    test: range


def time_splits(n: int, *, train_frac: float, val_frac: float, embargo: int) -> Split:
    """One chronological train/validation/test split with `embargo` bars dropped at each boundary."""
    if not 0 < train_frac < 1 or not 0 <= val_frac < 1 or train_frac + val_frac >= 1:
        raise ValueError(f"fractions must satisfy 0 < train, 0 <= val, train + val < 1 (got {train_frac}, {val_frac})")
    train_end = int(n * train_frac)
    val_start = train_end + embargo
    val_end = val_start + int(n * val_frac)
    test_start = val_end + embargo if val_frac > 0 else train_end + embargo
    if test_start >= n or train_end <= 0:
        raise ValueError(f"{n} rows are too few for these fractions and embargo {embargo}")
    return Split(range(0, train_end), range(val_start, val_end), range(test_start, n))


def walk_forward_splits(
    n: int,
    *,
    n_folds: int,
    test_size: int,
    min_train: int,
    embargo: int,
    val_size: int = 0,
    expanding: bool = True,
) -> list[Split]:
    """Consecutive out-of-sample test windows covering the end of the series, each trained only on its past.

    Fold k tests on the k-th of `n_folds` windows of `test_size` bars at the end of the series; its training data
    ends `embargo` bars before its validation window, which ends `embargo` bars before the test window. With
    `expanding=False` the training window is a rolling window of `min_train` bars.
    """
    first_test = n - n_folds * test_size
    need = min_train + val_size + (2 if val_size else 1) * embargo
    if n_folds < 1 or test_size < 1 or first_test < need:
        raise ValueError(
            f"{n} rows cannot hold {n_folds} test windows of {test_size} after {min_train} training rows, "
            f"{val_size} validation rows and embargo {embargo}"
        )
    folds = []
    for k in range(n_folds):
        test = range(first_test + k * test_size, first_test + (k + 1) * test_size)
        val_stop = test.start - embargo if val_size else test.start
        val = range(val_stop - val_size, val_stop) if val_size else range(val_stop, val_stop)
        train_stop = val.start - embargo
        train_start = 0 if expanding else max(0, train_stop - min_train)
        folds.append(Split(range(train_start, train_stop), val, test))
    return folds


@dataclass(frozen=True, slots=True)
class DirectionalStats:
    """Hit rate of directional calls with its uncertainty and what the sample could detect."""

    n_calls: int
    hits: int
    accuracy: float
    ci_low: float
    ci_high: float
    p_value_vs_half: float
    majority_rate: float
    p_value_vs_majority: float
    # Smallest true accuracy a one-sided 5% test detects with 80% power on this many calls.
    detectable_accuracy: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict for MLflow/DVC metrics."""
        return {k: float(v) for k, v in asdict(self).items()}


def directional_accuracy(predicted: npt.ArrayLike, realized: npt.ArrayLike) -> DirectionalStats:
    """Score sign calls: only bars with a non-zero call and a non-zero realized move count.

    Tested one-sided against a coin (50%) and against always calling the realized majority direction.
    """
    from scipy.stats import binomtest

    pred = np.sign(np.asarray(predicted, dtype=float))
    real = np.sign(np.asarray(realized, dtype=float))
    if pred.shape != real.shape:
        raise ValueError(f"predicted {pred.shape} and realized {real.shape} differ in shape")
    mask = (pred != 0) & (real != 0) & np.isfinite(pred) & np.isfinite(real)
    n = int(mask.sum())
    if n == 0:
        return DirectionalStats(0, 0, math.nan, math.nan, math.nan, 1.0, math.nan, 1.0, math.nan)
    hits = int((pred[mask] == real[mask]).sum())
    up_share = float((real[mask] > 0).mean())
    majority = max(up_share, 1 - up_share)
    vs_half = binomtest(hits, n, 0.5, alternative="greater")
    # The interval is two-sided even though the tests are one-sided: it describes the hit rate, not the test.
    ci_low, ci_high = wilson_interval(hits, n)
    vs_majority = binomtest(hits, n, min(majority, 1 - 1e-12), alternative="greater")
    return DirectionalStats(
        n_calls=n,
        hits=hits,
        accuracy=hits / n,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value_vs_half=float(vs_half.pvalue),
        majority_rate=majority,
        p_value_vs_majority=float(vs_majority.pvalue),
        detectable_accuracy=detectable_accuracy(n),
    )


def detectable_accuracy(n_calls: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest accuracy p1 > 0.5 that a one-sided binomial test at `alpha` detects with `power` (normal approx.)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    if n_calls <= 0:
        return math.nan
    z_a, z_b = norm.ppf(1 - alpha), norm.ppf(power)

    def gap(p1: float) -> float:
        return (p1 - 0.5) * math.sqrt(n_calls) - (z_a * 0.5 + z_b * math.sqrt(p1 * (1 - p1)))

    return float(brentq(gap, 0.5, 1 - 1e-9)) if gap(1 - 1e-9) > 0 else 1.0


def information_coefficient(forecast: npt.ArrayLike, realized: npt.ArrayLike) -> tuple[float, float]:
    """Spearman rank correlation between forecasts and realized returns, with its two-sided p-value."""
    from scipy.stats import spearmanr

    f, r = np.asarray(forecast, dtype=float), np.asarray(realized, dtype=float)
    mask = np.isfinite(f) & np.isfinite(r)
    if mask.sum() < 3 or np.ptp(f[mask]) == 0 or np.ptp(r[mask]) == 0:
        return 0.0, 1.0
    result = spearmanr(f[mask], r[mask])
    return float(result.statistic), float(result.pvalue)


def diebold_mariano(loss_a: npt.ArrayLike, loss_b: npt.ArrayLike, *, horizon: int = 1) -> tuple[float, float]:
    """Diebold-Mariano test of equal predictive accuracy, with the Harvey-Leybourne-Newbold correction.

    Returns (statistic, two-sided p-value); a negative statistic means forecast A has the smaller loss.
    """
    from scipy.stats import t as student_t

    d = np.asarray(loss_a, dtype=float) - np.asarray(loss_b, dtype=float)
    d = d[np.isfinite(d)]
    n = d.size
    if n < 3:
        return 0.0, 1.0
    centred = d - d.mean()
    # Newey-West long-run variance with horizon-1 lags: h-step forecast errors are MA(h-1).
    gamma = [float(centred @ centred) / n]
    gamma += [float(centred[k:] @ centred[:-k]) / n for k in range(1, horizon)]
    long_run = gamma[0] + 2 * sum(gamma[1:])
    if long_run <= 0:
        return 0.0, 1.0
    stat = d.mean() / math.sqrt(long_run / n)
    stat *= math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    return float(stat), float(2 * student_t.sf(abs(stat), df=n - 1))


@dataclass(frozen=True, slots=True)
class Performance:
    """Strategy figures after costs. `max_drawdown` is a positive fraction of peak equity."""

    total_return: float
    annual_return: float
    sharpe: float
    max_drawdown: float
    win_rate: float
    turnover: float
    n_periods: int
    costs_paid: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict for MLflow/DVC metrics."""
        return {k: float(v) for k, v in asdict(self).items()}


def strategy_returns(
    positions: npt.ArrayLike,
    next_returns: npt.ArrayLike,
    cost_model: CostModel,
    *,
    participation: npt.ArrayLike | float = 0.0,
    sigma: npt.ArrayLike | float = 0.0,
    initial_position: float = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """Net and cost series of holding `positions[t]` (fraction of equity) over the return `next_returns[t]`.

    Rebalancing into `positions[t]` at bar t costs `cost_model.rebalance_cost(|w_t - w_{t-1}|)`.
    """
    w = np.asarray(positions, dtype=float)
    r = np.asarray(next_returns, dtype=float)
    if w.shape != r.shape:
        raise ValueError(f"positions {w.shape} and returns {r.shape} differ in shape")
    if not (np.isfinite(w).all() and np.isfinite(r).all()):
        raise ValueError("positions and returns must be finite (drop warm-up and unlabeled rows first)")
    turnover = np.abs(np.diff(w, prepend=initial_position))
    part = np.asarray(participation, dtype=float)
    vol = np.asarray(sigma, dtype=float)
    costs = np.asarray(cost_model.rebalance_cost(turnover, part, vol), dtype=float) * np.ones_like(w)
    return w * r - costs, costs


def performance(
    net_returns: npt.ArrayLike,
    periods_per_year: float,
    *,
    positions: npt.ArrayLike | None = None,
    costs: npt.ArrayLike | None = None,
) -> Performance:
    """Summarize a net simple-return series: Sharpe, annual return, drawdown, win rate and annual turnover.

    Win rate is the share of periods with a non-zero position whose net return was positive.
    """
    r = np.asarray(net_returns, dtype=float)
    n = r.size
    if n == 0:
        return Performance(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0)
    equity = np.cumprod(1 + r)
    total = float(equity[-1] - 1)
    annual = float(equity[-1] ** (periods_per_year / n) - 1) if equity[-1] > 0 else -1.0
    sd = float(r.std(ddof=1)) if n > 1 else 0.0
    sharpe = float(r.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else 0.0
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    max_dd = float(np.max(1 - equity / peak))
    if positions is None:
        active = np.ones(n, dtype=bool)
        turnover = 0.0
    else:
        w = np.asarray(positions, dtype=float)
        active = w != 0
        turnover = float(np.abs(np.diff(w, prepend=0.0)).sum() * periods_per_year / n)
    win_rate = float((r[active] > 0).mean()) if active.any() else 0.0
    paid = float(np.sum(costs)) if costs is not None else 0.0
    return Performance(total, annual, sharpe, max_dd, win_rate, turnover, n, paid)


def periods_per_year(timestamps: Any) -> float:
    """Bars per year observed in a timestamp series (e.g. ~252 for daily equities, ~6,200 for hourly FX)."""
    import polars as pl

    ts = pl.Series(timestamps)
    if ts.len() < 2:
        raise ValueError("need at least two timestamps to infer the bar frequency")
    span_years = (ts.max() - ts.min()).total_seconds() / (365.25 * 86400)  # type: ignore[operator, union-attr]
    return (ts.len() - 1) / span_years


def buy_and_hold(next_returns: npt.ArrayLike, cost_model: CostModel, periods_per_year_: float) -> Performance:
    """The passive baseline: fully long from the first bar, paying the entry cost once."""
    r = np.asarray(next_returns, dtype=float)
    w = np.ones_like(r)
    net, costs = strategy_returns(w, r, cost_model)
    return performance(net, periods_per_year_, positions=w, costs=costs)


# --- signal evaluation, classical baseline and reports (shared by the transformer and RL evaluations) ---


def classical_baseline(
    train_features: npt.ArrayLike,
    train_labels: npt.ArrayLike,
    test_features: npt.ArrayLike,
    *,
    seed: int = 0,
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Multinomial logistic regression on the same features (standardized on train): labels in {-1, 0, 1}
    and class probabilities (n, 3) in Sell/Hold/Buy order (0 for a class absent from training).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train = np.asarray(train_features, dtype=float)
    y_train = np.asarray(train_labels).astype(np.int64)
    x_test = np.asarray(test_features, dtype=float)
    if not (np.isfinite(x_train).all() and np.isfinite(x_test).all()):
        raise ValueError("baseline features must be finite (drop warm-up rows first)")
    classes = np.unique(y_train)
    if classes.size < 2:
        label = int(classes[0]) if classes.size else 0
        probs = np.zeros((x_test.shape[0], 3))
        probs[:, label + 1] = 1.0
        return np.full(x_test.shape[0], label, dtype=np.int64), probs
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=1.0, random_state=seed))
    model.fit(x_train, y_train)
    fitted = model.predict_proba(x_test)
    probs = np.zeros((x_test.shape[0], 3))
    for j, label in enumerate(model.classes_):
        probs[:, int(label) + 1] = fitted[:, j]
    return (probs.argmax(axis=1) - 1).astype(np.int64), probs


def wilson_interval(hits: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval of a hit rate."""
    from scipy.stats import norm

    if n <= 0:
        return math.nan, math.nan
    z = float(norm.ppf(0.5 + confidence / 2))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def evaluate_signals(
    signal: npt.ArrayLike,
    realized: npt.ArrayLike,
    next_returns: npt.ArrayLike,
    cost_model: CostModel,
    periods_per_year_: float,
    *,
    forecast: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """All out-of-sample figures of a -1/0/+1 signal: direction statistics, IC and Diebold-Mariano of the
    return `forecast` against a zero forecast (squared error), and the after-cost strategy performance.

    `realized` is the label's forward return, `next_returns` the simple return a position decided at the bar
    earns; rows where either is missing are dropped.
    """
    s = np.asarray(signal, dtype=float)
    y = np.asarray(realized, dtype=float)
    r = np.asarray(next_returns, dtype=float)
    keep = np.isfinite(s) & np.isfinite(y) & np.isfinite(r)
    s, y, r = s[keep], y[keep], r[keep]
    direction = directional_accuracy(s, y)
    out: dict[str, float] = {f"direction_{k}": v for k, v in direction.to_dict().items()}
    out["direction_ci95_low"], out["direction_ci95_high"] = direction.ci_low, direction.ci_high
    out["n_rows"] = float(s.size)
    out["call_rate"] = float(np.mean(s != 0)) if s.size else 0.0
    if forecast is not None:
        f = np.asarray(forecast, dtype=float)[keep]
        out["ic"], out["ic_p_value"] = information_coefficient(f, y)
        out["dm_stat"], out["dm_p_value"] = diebold_mariano((f - y) ** 2, y**2)
        out["mse_ratio_vs_zero"] = float(np.mean((f - y) ** 2) / np.mean(y**2)) if np.any(y) else math.nan
    net, costs = strategy_returns(s, r, cost_model)
    out.update(
        {f"strategy_{k}": v for k, v in performance(net, periods_per_year_, positions=s, costs=costs).to_dict().items()}
    )
    return out


def equity_curve(signal: npt.ArrayLike, next_returns: npt.ArrayLike, cost_model: CostModel) -> FloatArray:
    """Cumulative equity (starting at 1) of holding `signal` after costs."""
    net, _ = strategy_returns(signal, next_returns, cost_model)
    return np.cumprod(1 + net).astype(np.float64)


def plot_equity_curves(
    curves: dict[str, tuple[Any, dict[str, FloatArray]]], path: Any, *, title: str = "Out-of-sample equity after costs"
) -> Any:
    """Write a PNG with one panel per dataset: `curves[name] = (timestamps, {label: equity array})`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpt_trader.core.fs import atomic_path

    names = list(curves)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.8 * max(1, len(names))), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        ts, lines = curves[name]
        for label, equity in lines.items():
            ax.plot(ts, equity, label=label, linewidth=1)
        ax.set_title(name)
        ax.set_ylabel("equity")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A GitHub markdown table of `rows`; `columns` are (key, header) pairs; floats to 4 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k, "")) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)
