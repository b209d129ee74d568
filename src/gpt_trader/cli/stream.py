"""`gpt-trader stream` and `gpt-trader exchange serve`: the real-time pipeline from the terminal."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gpt_trader.cli.app import app, console, err_console, load, run_command

exchange_app = typer.Typer(
    help="The local exchange (Alpaca/Binance/Polygon/IEX websocket protocols on loopback).", no_args_is_help=True
)
app.add_typer(exchange_app, name="exchange")

_SOURCES = ["replay", "simulated", "alpaca", "binance", "polygon", "iex"]


@app.command("stream")
def stream(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Option(
            "--source", "-s", help=f"One of {', '.join(_SOURCES)} (default: the configured realtime.sources)."
        ),
    ] = None,
    symbols: Annotated[
        str | None,
        typer.Option(
            "--symbols",
            help="Comma-separated (bundled: SPX, IXIC, GOOGL, EURUSD; SPY = SPX). With --source, default SPX; "
            "without, keeps only these of the configured sources' symbols.",
        ),
    ] = None,
    timeframe: Annotated[
        str | None,
        typer.Option("--timeframe", "-t", help="Bar timeframe (default: 1d for replay of daily data, else 1s)."),
    ] = None,
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds to run (0 = until Ctrl-C).")] = 10.0,
    max_bars: Annotated[
        int, typer.Option("--max-bars", "-n", min=0, help="Stop after this many final bars (0 = no limit).")
    ] = 0,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Replay/simulated trades per second (0 = as fast as possible).")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Websocket URL override (e.g. a running `exchange serve`).")
    ] = None,
) -> None:
    """Stream live bars into a table in the terminal (rich live view) until `--duration` or `--max-bars`.

    Without `--source`, streams the sources configured in `realtime.sources` (failover in their order)."""
    import asyncio

    def body() -> None:
        settings = load(ctx)
        configs = select_streams(settings.realtime, source, symbols, url)
        asyncio.run(_stream(settings, configs, timeframe, duration, max_bars, rate))

    run_command(body)


def select_streams(rt: Any, source: str | None, symbols: str | None, url: str | None) -> list[Any]:
    """The `StreamConfig`s to run: the one `--source` names, or the configured sources (filtered by `--symbols`)."""
    from dataclasses import replace

    from gpt_trader.core.errors import ConfigError
    from gpt_trader.realtime import DataSource, StreamConfig, StreamType
    from gpt_trader.realtime.config import stream_configs
    from gpt_trader.realtime.replay import canonical_symbol

    names = [s.strip().upper() for s in (symbols or "").split(",") if s.strip()]
    if source is None:
        if url is not None:
            raise ConfigError("--url needs --source (configured sources take `url` in realtime.sources)")
        configs = stream_configs(rt)
        if not names:
            return configs
        configured = {s for c in configs for s in c.symbols}
        unknown = [s for s in names if s not in configured]
        if unknown:
            raise ConfigError(f"--symbols {unknown} not in realtime.sources (configured: {sorted(configured)})")
        return [
            replace(c, symbols=[s for s in c.symbols if s in names]) for c in configs if set(c.symbols) & set(names)
        ]
    if source not in _SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of {_SOURCES}")
    names = names or ["SPX"]
    if source == "replay":
        names = [canonical_symbol(s) for s in names]
    return [StreamConfig(DataSource(source), names, [StreamType.TRADES, StreamType.QUOTES], url=url)]


async def _stream(
    settings: Any, configs: list[Any], timeframe: str | None, duration: float, max_bars: int, rate: float | None
) -> None:
    import asyncio
    import time

    from rich.live import Live
    from rich.table import Table

    from gpt_trader.realtime import DataSource, RealtimePipeline
    from gpt_trader.realtime.replay import canonical_symbol

    rt = settings.realtime
    replay = all(c.source == DataSource.REPLAY for c in configs)
    names = list(dict.fromkeys(s for c in configs for s in c.symbols))
    if timeframe is None:
        if replay:
            from gpt_trader.data.sources.bundled import CATALOG

            known = [CATALOG[n].timeframe for s in names if (n := canonical_symbol(s)) in CATALOG]
            timeframe = max(known, key=lambda tf: {"1h": 3600, "1d": 86400}.get(tf, 0)) if known else "1d"
        else:
            timeframe = "1s"
    updates: dict[str, Any] = {"timeframes": [timeframe], "lateness_ms": 0 if replay else rt.lateness_ms}
    if replay:
        updates["max_future_secs"] = None
    if rate is not None:
        updates["replay"] = rt.replay.model_copy(update={"rate": rate})
    config = rt.model_copy(update=updates)
    # Gaps are backfilled from each source's own history API at the configured `data.providers` endpoints.
    pipeline = RealtimePipeline(configs, config, providers=settings.data.providers)
    seen: list[Any] = []
    pipeline.add_bar_listener(lambda bar: seen.append(bar) if bar.final else None)
    label = "+".join(c.label for c in configs)

    def render() -> Table:
        table = Table(title=f"{label} {','.join(names)} {timeframe} bars (final; last 15)", expand=False)
        for col in ("time", "symbol", "open", "high", "low", "close", "volume", "vwap", "trades", "flags"):
            table.add_column(col, justify="left" if col in ("time", "symbol", "flags") else "right")
        for bar in seen[-15:]:
            flags = ",".join(
                f
                for f, on in (
                    ("gap", bar.gap),
                    ("backfilled", bar.backfilled),
                    (f"rev{bar.revision}", bar.revision > 0),
                )
                if on
            )
            table.add_row(
                bar.ts.strftime("%Y-%m-%d %H:%M:%S"), bar.symbol,
                f"{bar.open:.4f}", f"{bar.high:.4f}", f"{bar.low:.4f}",
                f"{bar.close:.4f}", f"{bar.volume:,.0f}", f"{bar.vwap:.4f}", str(bar.trades), flags,
            )  # fmt: skip
        h = pipeline.health()
        table.caption = (
            "  ".join(
                f"{name}: score {v['score']:.2f} delay {v['delay_ms']:.2f}ms offset {v['clock_offset_ms'] or 0:.1f}ms"
                for name, v in h.items()
            )
            + f"  | ticks {pipeline.ticks_accepted:,} dead letters {pipeline.dead_letters.total}"
        )
        return table

    await pipeline.start()
    try:
        deadline = time.monotonic() + duration if duration > 0 else float("inf")
        with Live(render(), console=console, refresh_per_second=4) as live:
            while time.monotonic() < deadline and not (max_bars and len(seen) >= max_bars):
                await asyncio.sleep(0.05 if max_bars else 0.25)
                live.update(render())
    finally:
        await pipeline.close()
    err_console.print(
        f"{pipeline.ticks_accepted:,} ticks, {len(seen)} final bars, dead letters {pipeline.dead_letters.by_reason()}"
    )


@exchange_app.command("serve")
def exchange_serve(
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port on 127.0.0.1 (0 = any free port).")] = 8765,
    feed: Annotated[
        str, typer.Option("--feed", help="auto (bundled if known, else simulated), replay or simulated.")
    ] = "auto",
    rate: Annotated[
        float, typer.Option("--rate", help="Trades per second per connection (0 = as fast as possible).")
    ] = 1000.0,
    ticks_per_bar: Annotated[int, typer.Option("--ticks-per-bar")] = 20,
    batch: Annotated[int, typer.Option("--batch", help="Messages per frame (Alpaca/Polygon/IEX).")] = 100,
    timestamps: Annotated[
        str, typer.Option("--timestamps", help="original (inside the real bar) or now.")
    ] = "original",
    skew_secs: Annotated[float, typer.Option("--skew-secs", help="Clock skew added to 'now' timestamps.")] = 0.0,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Seconds to serve (default: until Ctrl-C).")
    ] = None,
    start_on_subscribe: Annotated[
        bool,
        typer.Option(
            "--start-on-subscribe", help="Start the tape at the first subscription (default: when the server starts)."
        ),
    ] = False,
) -> None:
    """Serve the Alpaca (/v2/iex), Binance (/stream), Polygon (/stocks) and IEX (/1.0/tops) protocols on loopback."""
    import asyncio
    import contextlib

    from gpt_trader.core.errors import ConfigError
    from gpt_trader.realtime.exchange import ExchangeConfig, serve

    def body() -> None:
        if feed not in ("auto", "replay", "simulated") or timestamps not in ("original", "now"):
            raise ConfigError("--feed must be auto|replay|simulated and --timestamps original|now")
        config = ExchangeConfig(
            port=port, feed=feed, rate=rate, ticks_per_bar=ticks_per_bar, batch=batch,  # type: ignore[arg-type]
            timestamps=timestamps, skew_secs=skew_secs, start_on_subscribe=start_on_subscribe,  # type: ignore[arg-type]
        )  # fmt: skip

        def ready(bound: int) -> None:
            base = f"ws://127.0.0.1:{bound}"
            console.print(
                f"local exchange on {base}: alpaca {base}/v2/iex  binance {base}/stream?streams=spx@trade  "
                f"polygon {base}/stocks  iex {base}/1.0/tops",
                highlight=False,
            )

        with contextlib.suppress(KeyboardInterrupt):
            stats = asyncio.run(serve(config, duration, ready))
            console.print(
                f"served {stats.ticks_sent:,} ticks in {stats.frames_sent:,} frames "
                f"to {stats.connections} connection(s)"
            )

    run_command(body)
