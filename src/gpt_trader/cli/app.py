"""The `gpt-trader` Typer application, its command groups and the shared error handling.

Exit codes: 0 success, 1 unexpected error, 2 configuration error, 3 bad data, 4 validation failed,
5 source/provider error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from gpt_trader.core.errors import GptTraderError

app = typer.Typer(
    name="gpt-trader",
    help="GPT-Trader: capture, validate and featurize market data; train, serve and monitor models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Offline market-data stages: capture -> validate -> features.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)
train_app = typer.Typer(help="Train models (tracked in MLflow).", no_args_is_help=True)
evaluate_app = typer.Typer(help="Walk-forward out-of-sample evaluation after costs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")

# Pipes and CI logs get a wide fixed width instead of rich's 80-column fallback.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Overlay YAML (default: $GPT_TRADER_CONFIG or config/default.yaml)."),
    ] = None,
    params: Annotated[Path, typer.Option("--params", help="DVC params file (base layer).")] = Path("params.yaml"),
) -> None:
    """Load settings lazily: `--help` stays instant and never reads files."""
    ctx.obj = {"config": config, "params": params}


def load(ctx: typer.Context) -> Any:
    """Load the settings named by the global options (once per command)."""
    from gpt_trader.settings import load_settings

    return load_settings(ctx.obj["config"], params=ctx.obj["params"])


def run_command(action: Callable[[], T]) -> T:
    """Run a command body, turning GPT-Trader errors into a red message and a meaningful exit code."""
    try:
        return action()
    except GptTraderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
