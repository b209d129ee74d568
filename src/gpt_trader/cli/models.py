"""`gpt-trader models list|promote|rollback`: the MLflow registry from the terminal."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from gpt_trader.cli.app import app, console, load, run_command

models_app = typer.Typer(
    help="Registered models: list versions, promote one to champion, roll back.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


def _client(ctx: typer.Context) -> tuple[Any, Any]:
    from gpt_trader.registry.lifecycle import registry_client

    settings = load(ctx)
    return settings, registry_client(settings)


def _names(settings: Any) -> list[str]:
    r = settings.registry
    return [r.transformer_model, r.rl_ppo_model, r.rl_dqn_model]


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Registered model name (default: all GPT-Trader models).")] = None,
) -> None:
    """List versions with their aliases, metrics tags and promotion decisions."""
    from gpt_trader.registry.models import RegistryError, list_versions

    def body() -> None:
        settings, client = _client(ctx)
        table = Table(title="Registered models")
        for col in ("model", "version", "aliases", "created", "decision", "sharpe", "b&h", "commit", "data", "run"):
            table.add_column(col)
        for model in [name] if name else _names(settings):
            try:
                versions = list_versions(client, model)
            except RegistryError:
                if name:
                    raise
                continue
            for v in versions:
                table.add_row(
                    model,
                    v.version,
                    ", ".join(v.aliases) or "-",
                    v.created.strftime("%Y-%m-%d %H:%M"),
                    v.tags.get("promotion.decision", "-"),
                    # Scores on the promotion window (after costs), beside buy-and-hold on the same bars.
                    v.tags.get("promotion.sharpe", "-"),
                    v.tags.get("promotion.buy_and_hold_sharpe", "-"),
                    v.tags.get("git_commit", "-")[:8],
                    v.tags.get("data_sha256", "-")[:8],
                    (v.run_id or "-")[:12],
                )
        console.print(table)

    run_command(body)


@models_app.command("promote")
def models_promote(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to make champion (any registered version).")],
    reason: Annotated[str, typer.Option(help="Why, recorded on the version.")] = "manual promotion",
    force: Annotated[bool, typer.Option(help="Skip the sanity checks (loads, predicts, finite, signature).")] = False,
) -> None:
    """Promote a version to champion after sanity checks; the replaced champion is remembered for rollback."""
    from gpt_trader.registry.models import RegistryError, promote
    from gpt_trader.registry.promotion import check_model

    def body() -> None:
        settings, client = _client(ctx)
        if not force:
            serving = _champion_input(client, name, version)
            problems = check_model(f"models:/{name}/{version}", serving_input=serving).failures(
                settings.registry.promotion.latency_budget_ms
            )
            if problems:
                raise RegistryError(
                    f"{name} v{version} is unfit to serve: {'; '.join(problems)} (use --force to override)"
                )
        promote(client, name, version, reason=reason)
        console.print(f"{name} v{version} is now champion ({reason})")

    run_command(body)


def _champion_input(client: Any, name: str, version: str) -> Any:
    """The current champion's input signature as the input `version` must accept (None: no other champion)."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    from gpt_trader.registry.promotion import ServingInput

    try:
        champion = str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        return None
    if champion == version:
        return None
    signature = get_model_info(f"models:/{name}/{champion}").signature
    if signature is None or signature.inputs is None:
        return None
    return ServingInput(signature.inputs, f"champion v{champion}'s input signature")


@models_app.command("rollback")
def models_rollback(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Registered model name.")]) -> None:
    """Restore the champion that the current champion replaced."""
    from gpt_trader.registry.models import rollback

    def body() -> None:
        _, client = _client(ctx)
        old, new = rollback(client, name)
        console.print(f"{name}: champion rolled back from v{old} to v{new}")

    run_command(body)


@models_app.command("gate")
def models_gate(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="transformer, ppo, dqn or all.")] = "all",
) -> None:
    """Run the promotion gate: score challenger and champion on the latest window, promote or record why not."""
    from gpt_trader.registry.lifecycle import KINDS, promote_model
    from gpt_trader.registry.models import NoChallengerError

    def body() -> None:
        settings = load(ctx)
        for k in KINDS if kind == "all" else (kind,):
            try:
                report = promote_model(settings, k)
            except NoChallengerError as exc:
                if kind != "all":
                    raise
                console.print(f"{exc.name}: no challenger to judge", highlight=False)
                continue
            d = report.decision
            verdict = "[green]promoted[/]" if d.promote else "[yellow]rejected[/]"
            console.print(f"{report.name} v{d.challenger_version}: {verdict} ({report.window})")
            for reason in d.reasons:
                console.print(f"  - {reason}", highlight=False)

    run_command(body)
