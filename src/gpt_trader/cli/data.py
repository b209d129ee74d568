"""`gpt-trader data ...` and `gpt-trader config show`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from gpt_trader.cli.app import config_app, console, data_app, err_console, load, run_command


@data_app.command("capture")
def data_capture(ctx: typer.Context) -> None:
    """Fetch new bars for every configured dataset into data/raw (incremental, idempotent)."""
    from rich.progress import Progress

    from gpt_trader.data.stages import capture_stage

    def body() -> None:
        settings = load(ctx)
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("capturing", total=len(settings.data.datasets))

            def done(result: Any) -> None:
                progress.advance(task)
                console.print(f"  {result.key:<28} +{result.added:>7} bars  ({result.total} stored)  {result.path}")

            capture_stage(settings, done)

    run_command(body)


@data_app.command("validate")
def data_validate(ctx: typer.Context) -> None:
    """Run the Great Expectations gate; failing datasets are quarantined and the command exits 4."""
    from rich.progress import Progress

    from gpt_trader.data.stages import validate_stage

    def body() -> None:
        settings = load(ctx)
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("validating", total=len(settings.data.datasets))

            def done(report: Any) -> None:
                progress.advance(task)
                verdict = "[green]passed[/]" if report.success else "[red]QUARANTINED[/]"
                console.print(
                    f"  {report.key:<28} {verdict}  "
                    f"{report.evaluated - report.unsuccessful}/{report.evaluated} "
                    f"expectations, {report.flagged_outliers} outlier(s) flagged"
                )

            validate_stage(settings, done)

    run_command(body)


@data_app.command("features")
def data_features(ctx: typer.Context) -> None:
    """Build features and labels for every validated dataset; refuses unvalidated or quarantined data."""
    from rich.progress import Progress

    from gpt_trader.data.stages import features_stage

    def body() -> None:
        settings = load(ctx)
        with Progress(console=err_console, transient=True) as progress:
            task = progress.add_task("features", total=len(settings.data.datasets))

            def done(spec: Any, path: Path) -> None:
                progress.advance(task)
                console.print(f"  {spec.key:<28} -> {path}")

            features_stage(settings, done)

    run_command(body)


@data_app.command("summary")
def data_summary(ctx: typer.Context) -> None:
    """Print rows, date ranges, validation verdicts and output locations of every dataset."""
    from gpt_trader.data.stages import summarize

    def body() -> None:
        settings = load(ctx)
        table = Table(title="Market data")
        for col in ("dataset", "rows", "first", "last", "validation", "feature rows"):
            table.add_column(col, justify="right" if col in ("rows", "feature rows") else "left")
        for s in summarize(settings):
            colour = {"passed": "green", "quarantined": "red"}.get(s.verdict, "yellow")
            table.add_row(
                s.key,
                str(s.rows),
                s.first or "-",
                s.last or "-",
                f"[{colour}]{s.verdict}[/]",
                "-" if s.features_rows is None else str(s.features_rows),
            )
        console.print(table)
        p = settings.paths
        console.print(
            f"outputs: raw {p.data}/raw  validated {p.data}/validated  quarantine {p.data}/quarantine  "
            f"features {p.data}/features\n"
            f"         data docs {p.reports}/data_docs/index.html  metrics {p.metrics}/"
        )

    run_command(body)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the resolved configuration as YAML (secrets never appear: they are not part of it)."""
    import yaml

    def body() -> None:
        settings = load(ctx)
        console.print(f"# layers: {', '.join(settings.layers)}", highlight=False)
        console.print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), highlight=False)

    run_command(body)
