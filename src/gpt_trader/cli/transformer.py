"""`gpt-trader train transformer` and `gpt-trader evaluate transformer`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpt_trader.cli.app import console, err_console, evaluate_app, load, run_command, train_app


@train_app.command("transformer")
def train_transformer(ctx: typer.Context) -> None:
    """Train the market transformer on `ml.transformer.train_symbols`; tracked in MLflow, saved to models/."""
    from gpt_trader.ml.transformer.stages import train_stage

    def body() -> None:
        settings = load(ctx)
        train_stage(settings, log=lambda line: err_console.print(line, highlight=False))

    run_command(body)


@evaluate_app.command("transformer")
def evaluate_transformer(
    ctx: typer.Context,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Log the evaluation as an MLflow run.")] = True,
    show: Annotated[
        bool, typer.Option("--show", help="Print the last report (reports/transformer/report.md) without re-running.")
    ] = False,
) -> None:
    """Walk-forward out-of-sample evaluation after costs vs buy-and-hold and a logistic baseline; prints the table."""
    from gpt_trader.ml.transformer.evaluate import DIRECTION_KEYS, STRATEGY_KEYS, TABLE_COLUMNS, table_rows
    from gpt_trader.ml.transformer.stages import evaluate_stage

    def body() -> None:
        settings = load(ctx)
        if show:
            _show_report(Path(settings.paths.reports) / "transformer" / "report.md")
            return
        out = evaluate_stage(settings, log=lambda line: err_console.print(line, highlight=False), track=track)
        rows = table_rows(out.results)
        # Two narrower tables rather than one 16-column table that a terminal would squeeze unreadably.
        for title, keys in (("direction and forecast", DIRECTION_KEYS), ("strategy after costs", STRATEGY_KEYS)):
            columns = [(k, h) for k, h in TABLE_COLUMNS if k in ("dataset", "strategy", *keys)]
            table = Table(title=f"Transformer walk-forward OOS: {title}")
            for key, header in columns:
                table.add_column(header, justify="left" if key in ("dataset", "strategy", "ci") else "right")
            for row in rows:
                if any(k in row for k in keys):
                    table.add_row(*(_cell(row.get(key, "")) for key, _ in columns))
            console.print(table)
        console.print(
            f"{out.wall_secs:.0f} s; report {out.report}  metrics {out.metrics}"
            + (f"  MLflow run {out.run_id}" if out.run_id else "")
        )

    run_command(body)


def _show_report(path: Path) -> None:
    from rich.markdown import Markdown

    from gpt_trader.core.errors import DataError

    if not path.is_file():
        raise DataError(f"no evaluation report at {path}: run `gpt-trader evaluate transformer` (or `dvc repro`) first")
    console.print(Markdown(path.read_text(encoding="utf-8")))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.4g}"
    return str(value)
