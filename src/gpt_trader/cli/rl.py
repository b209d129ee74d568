"""`gpt-trader train rl`: train PPO and/or DQN trading agents and print their held-out figures."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gpt_trader.cli.app import console, err_console, load, run_command, train_app


@train_app.command("rl")
def train_rl(
    ctx: typer.Context,
    agent: Annotated[
        str | None, typer.Option("--agent", "-a", help="ppo | dqn | all (default: ml.reinforcement.algorithm).")
    ] = None,
    timesteps: Annotated[
        int | None, typer.Option("--timesteps", help="Override ml.reinforcement.total_timesteps.")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Comma-separated seeds (default: ml.reinforcement.evaluation.seeds).")
    ] = None,
    peer: Annotated[
        bool | None, typer.Option("--peer/--no-peer", help="Also compare with gym-anytrading StocksEnv.")
    ] = None,
) -> None:
    """Train on the bundled features, evaluate on the held-out window; write metrics/rl.json and the report."""

    def body() -> None:
        from gpt_trader.core.errors import ConfigError
        from gpt_trader.ml.rl.stage import run_rl_stage

        settings = load(ctx)
        config = settings.ml.reinforcement
        chosen = agent or config.algorithm
        if chosen not in ("ppo", "dqn", "all"):
            raise ConfigError(f"--agent must be ppo, dqn or all (got {chosen!r})")
        updates: dict[str, Any] = {}
        if timesteps is not None:
            if timesteps <= 0:
                raise ConfigError(f"--timesteps must be positive (got {timesteps})")
            updates["total_timesteps"] = timesteps
        if seeds is not None:
            try:
                parsed = tuple(int(s) for s in seeds.split(",") if s.strip())
            except ValueError:
                raise ConfigError(f"--seeds must be comma-separated integers (got {seeds!r})") from None
            if not parsed:
                raise ConfigError("--seeds names no seed")
            updates["evaluation"] = config.evaluation.model_copy(update={"seeds": parsed})
        config = config.model_copy(update=updates)
        agents = ("ppo", "dqn") if chosen == "all" else (chosen,)
        out = run_rl_stage(settings, agents, config=config, peer=peer, progress=lambda m: err_console.print(m))
        print_results(out)

    run_command(body)


def print_results(out: dict[str, Any]) -> None:
    """Held-out figures (mean ± std over seeds) beside the baselines, and the peer comparison."""
    from rich.table import Table

    keys = ("sharpe_ratio", "total_return", "max_drawdown", "win_rate", "n_trades")
    for name, r in out["results"].items():
        table = Table(
            title=f"{name.upper()} held-out {r['test_start'][:10]}..{r['test_end'][:10]} ({r['timesteps']} steps)"
        )
        table.add_column("policy")
        for k in keys:
            table.add_column(k, justify="right")
        table.add_row(name, *(f"{r[k]:.3f} ± {r[f'{k}_std']:.3f}" for k in keys))
        for base, figs in r["baselines"].items():
            table.add_row(base, *(f"{figs[k]:.3f}" for k in keys))
        console.print(table)
        console.print(f"  MLflow run {r['run_id']}  model {r['model_path']}  ({r['elapsed_secs']:.0f} s)")
    comparison = out.get("peer")
    if comparison:
        ours, peer = comparison["ours"], comparison["peer"]
        console.print(
            f"gym-anytrading on {comparison['symbol']}: ours Sharpe {ours['sharpe_ratio']:.3f} ± "
            f"{ours['sharpe_ratio_std']:.3f}, return {ours['total_return']:.3f}; peer replayed in our env Sharpe "
            f"{peer['replayed_sharpe_ratio']:.3f} ± {peer['replayed_sharpe_ratio_std']:.3f}, return "
            f"{peer['replayed_total_return']:.3f}; peer's own profit {peer['own_total_return']:.3f}"
        )
