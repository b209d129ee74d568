"""The `train_rl` pipeline stage: train the configured agents on bundled features, write metrics and the report.

Outputs: `models/rl/<agent>/seed_<s>/agent.zip`, `metrics/rl.json` (held-out mean/std per agent, baselines,
peer comparison) and `reports/rl/report.md`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from gpt_trader.core.errors import DataError
from gpt_trader.core.fs import atomic_write_text
from gpt_trader.data.config import DatasetSpec
from gpt_trader.data.store import dataset_path
from gpt_trader.ml.rl.config import RLConfig
from gpt_trader.settings import Settings


def read_features(settings: Settings, symbol: str, timeframe: str) -> pl.DataFrame:
    """The bundled features parquet of `symbol`; fails naming the command that builds it."""
    path = dataset_path(
        Path(settings.paths.data), "features", DatasetSpec(source="bundled", symbol=symbol, timeframe=timeframe)
    )
    if not path.is_file():
        raise DataError(f"features {path} not found: run `gpt-trader data capture && data validate && data features`")
    return pl.read_parquet(path)


def run_rl_stage(
    settings: Settings,
    agents: Sequence[str],
    *,
    config: RLConfig | None = None,
    peer: bool | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
    registration_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train and evaluate `agents` on `config.symbol`, optionally the gym-anytrading comparison; write outputs.

    Each agent's first-seed policy is registered as the `challenger` of its registered model (`registry.rl_*_model`)
    unless `registry.register_models` is off; `results[agent]["registered_version"]` says which version.
    """
    from gpt_trader.ml.rl.peer import compare_with_anytrading
    from gpt_trader.ml.rl.train import train_rl_agent

    config = config or settings.ml.reinforcement
    features = read_features(settings, config.symbol, config.timeframe)
    results: dict[str, Any] = {}
    for agent in agents:
        progress(f"training {agent} on {config.symbol} ({len(config.evaluation.seeds)} seeds)")
        results[agent] = train_rl_agent(features, agent, config, settings=settings)
        results[agent]["registered_version"] = register_agent(settings, config, results[agent], registration_tags)
        if results[agent]["registered_version"]:
            progress(f"registered {agent} v{results[agent]['registered_version']} as challenger")
    comparison = None
    if config.evaluation.peer if peer is None else peer:
        progress(f"gym-anytrading comparison on {config.evaluation.peer_symbol}")
        peer_data = read_features(settings, config.evaluation.peer_symbol, config.timeframe)
        comparison = compare_with_anytrading(peer_data, config, settings)
    metrics = stage_metrics(results, comparison)
    atomic_write_text(Path(settings.paths.metrics) / "rl.json", json.dumps(metrics, indent=2, sort_keys=True))
    atomic_write_text(Path(settings.paths.reports) / "rl" / "report.md", render_report(results, comparison, config))
    return {"results": results, "peer": comparison, "metrics": metrics}


def register_agent(
    settings: Settings, config: RLConfig, result: dict[str, Any], extra_tags: dict[str, str] | None = None
) -> str | None:
    """Register the first seed's policy (the one `model_uri` names) with its own and the across-seed figures."""
    from gpt_trader.registry.lifecycle import register_training

    if not result.get("model_uri"):
        return None
    first = result["per_seed"][0]
    metrics = {
        **{f"heldout_{k}": float(v) for k, v in first.items()},
        **{f"heldout_mean_{k}": float(result[k]) for k in result["figures"] if k in result},
        **{f"heldout_buy_and_hold_{k}": float(v) for k, v in result["baselines"]["buy_and_hold"].items()},
    }
    path = dataset_path(
        Path(settings.paths.data),
        "features",
        DatasetSpec(source="bundled", symbol=config.symbol, timeframe=config.timeframe),
    )
    return register_training(
        settings,
        kind=result["agent_type"],
        model_uri=result["model_uri"],
        run_id=result["run_id"],
        timeframe=config.timeframe,
        data_files=[path],
        params={"rl": config.model_dump(mode="json"), "costs": settings.costs.model_dump(mode="json")},
        seeds=[result["seeds"][0]],
        metrics=metrics,
        extra_tags={"trained_seeds": ",".join(map(str, result["seeds"])), **(extra_tags or {})},
    )


def stage_metrics(results: dict[str, Any], comparison: dict[str, Any] | None) -> dict[str, Any]:
    """DVC metrics: per agent the held-out mean/std figures and the baselines; the peer comparison."""
    out: dict[str, Any] = {}
    for agent, r in results.items():
        figs = r["figures"]
        out[agent] = {k: _clean(r[k]) for k in (*figs, *(f"{f}_std" for f in figs))}
        out[agent]["timesteps"] = r["timesteps"]
        out[agent]["baselines"] = {b: {k: _clean(v) for k, v in f.items()} for b, f in r["baselines"].items()}
    if comparison is not None:
        out["peer_anytrading"] = {
            "ours": {k: _clean(v) for k, v in comparison["ours"].items()},
            "peer": {k: _clean(v) for k, v in comparison["peer"].items()},
        }
    return out


def _clean(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(float(value)) else None


def _row(name: str, r: dict[str, Any], keys: Sequence[str], std: bool) -> str:
    cells = []
    for k in keys:
        v = r.get(k)
        if v is None:
            cells.append("n/a")
        elif std and f"{k}_std" in r:
            cells.append(f"{v:.3f} ± {r[f'{k}_std']:.3f}")
        else:
            cells.append(f"{v:.3f}")
    return f"| {name} | " + " | ".join(cells) + " |"


def render_report(results: dict[str, Any], comparison: dict[str, Any] | None, config: RLConfig) -> str:
    """Markdown report: held-out figures (mean ± std over seeds) beside the baselines, and the peer comparison."""
    keys = ("sharpe_ratio", "total_return", "annual_return", "max_drawdown", "win_rate", "n_trades", "costs_paid")
    header = "| agent | " + " | ".join(keys) + " |\n" + "|---" * (len(keys) + 1) + "|"
    lines = [
        "# Deep RL agents: held-out evaluation after costs",
        "",
        f"Symbol {config.symbol} ({config.timeframe}); seeds {list(config.evaluation.seeds)}; reward "
        f"{config.reward.kind} (drawdown penalty {config.reward.drawdown_penalty}); actions "
        f"{list(config.env.position_fractions)}. Agents train on the first {config.evaluation.train_frac:.0%} of the "
        f"rows and are scored once on the later window (embargo {config.evaluation.embargo_bars} bars). "
        "Baselines run in the same environment with the same costs; random is the mean of "
        f"{config.evaluation.random_agent_runs} seeded runs. Agent figures are mean ± std over seeds.",
        "",
    ]
    for agent, r in results.items():
        lines += [
            f"## {agent.upper()} ({r['timesteps']} timesteps; held-out {r['test_start'][:10]} .. {r['test_end'][:10]})",
            "",
            header,
            _row(agent, r, keys, std=True),
            *(_row(name, f, keys, std=False) for name, f in r["baselines"].items()),
            "",
            f"MLflow run `{r['run_id']}`; models {', '.join(r['model_paths'])}.",
            "",
        ]
    if comparison is not None:
        ours, peer = comparison["ours"], comparison["peer"]
        lines += [
            f"## Peer: gym-anytrading StocksEnv on {comparison['symbol']} (same PPO, {comparison['timesteps']} steps)",
            "",
            "The peer-trained policy's held-out positions are scored by StocksEnv's own profit (1% + 0.5% fees per "
            "round trip, long/flat only) and replayed through our environment and cost model.",
            "",
            "| policy | sharpe_ratio | total_return | max_drawdown | n_trades |\n|---|---|---|---|---|",
            f"| ours (our env) | {ours['sharpe_ratio']:.3f} ± {ours['sharpe_ratio_std']:.3f} | "
            f"{ours['total_return']:.3f} ± {ours['total_return_std']:.3f} | {ours['max_drawdown']:.3f} | "
            f"{ours['n_trades']:.1f} |",
            f"| peer (replayed in our env) | {peer['replayed_sharpe_ratio']:.3f} ± "
            f"{peer['replayed_sharpe_ratio_std']:.3f} | "
            f"{peer['replayed_total_return']:.3f} ± {peer['replayed_total_return_std']:.3f} | "
            f"{peer['replayed_max_drawdown']:.3f} | {peer['replayed_n_trades']:.1f} |",
            f"| peer (its own accounting) | n/a | {peer['own_total_return']:.3f} ± {peer['own_total_return_std']:.3f} "
            "| n/a | n/a |",
            f"| buy-and-hold (our env) | {comparison['ours_baselines']['buy_and_hold']['sharpe_ratio']:.3f} | "
            f"{comparison['ours_baselines']['buy_and_hold']['total_return']:.3f} | "
            f"{comparison['ours_baselines']['buy_and_hold']['max_drawdown']:.3f} | 1 |",
            "",
            f"Peer policy long share on the held-out window: {peer['long_share']:.2f}.",
            "",
        ]
    return "\n".join(lines)
