"""`stream_configs`: `realtime.sources` (production.yaml's structure) as the `StreamConfig`s a pipeline runs, with
errors that name the bad key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from gpt_trader.core.errors import ConfigError
from gpt_trader.realtime import DataSource, RealtimePipeline, StreamConfig, StreamType
from gpt_trader.realtime.bus import InProcessBus
from gpt_trader.realtime.config import RealtimeConfig, StreamSourceConfig, stream_configs
from gpt_trader.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]
PRODUCTION = ROOT / "config" / "production.yaml"
TRADES_QUOTES = [StreamType.TRADES, StreamType.QUOTES]
EXPECTED = [
    StreamConfig(DataSource.ALPACA, ["AAPL", "GOOGL", "MSFT"], TRADES_QUOTES),
    StreamConfig(DataSource.POLYGON, ["SPY", "QQQ"], TRADES_QUOTES),
]


def test_production_yaml_sources_become_stream_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for name in ("GPT_TRADER_CONFIG", "GPT_TRADER_REALTIME__SOURCES"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(PRODUCTION)
    assert stream_configs(settings.realtime) == EXPECTED
    # the raw YAML list gives the same, through the same validation
    raw = yaml.safe_load(PRODUCTION.read_text())["realtime"]["sources"]
    assert stream_configs(raw) == EXPECTED


def test_default_sources_are_the_bundled_replay() -> None:
    assert stream_configs(RealtimeConfig()) == [StreamConfig(DataSource.REPLAY, ["SPX"], TRADES_QUOTES)]


def test_optional_keys_reach_the_stream_config() -> None:
    raw = [
        {"type": "alpaca", "symbols": ["spy"], "stream_types": ["trades", "bars"], "name": "alpaca-sip",
         "url": "ws://127.0.0.1:8765/v2/iex", "priority": 1},
        {"type": "binance", "symbols": ["BTCUSDT"], "priority": 0},
    ]  # fmt: skip
    first, second = stream_configs(raw)
    assert first == StreamConfig(
        DataSource.ALPACA, ["SPY"], [StreamType.TRADES, StreamType.BARS], "ws://127.0.0.1:8765/v2/iex", 1, "alpaca-sip"
    )
    assert first.label == "alpaca-sip"
    assert second.priority == 0
    assert stream_configs([StreamSourceConfig(type="iex", symbols=["IBM"])])[0].source == DataSource.IEX


def test_configured_sources_build_a_pipeline_in_priority_order() -> None:
    """What the live runner will do: Settings' sources straight into `RealtimePipeline` (no connection made)."""
    raw = [
        {"type": "polygon", "symbols": ["SPY"], "url": "ws://127.0.0.1:1/stocks", "priority": 1},
        {"type": "alpaca", "symbols": ["SPY", "AAPL"], "url": "ws://127.0.0.1:1/v2/iex", "priority": 0},
    ]
    env = {"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s", "POLYGON_API_KEY": "p"}

    async def build() -> list[str]:
        p = RealtimePipeline(stream_configs(raw), RealtimeConfig(), bus=InProcessBus(), environ=env)
        await p._build_feeds()
        return [f.name for f in p.feeds]

    assert asyncio.run(build()) == ["alpaca", "polygon"]


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([{"type": "alpaca", "symbol": ["AAPL"]}], "realtime.sources.0.symbol: unknown key (allowed: name, priority,"),
        ([{"type": "alpaca"}], "realtime.sources.0.symbols: Field required"),
        ([{"type": "nyse", "symbols": ["IBM"]}], "realtime.sources.0.type: Input should be 'alpaca'"),
        ([{"type": "alpaca", "symbols": []}], "realtime.sources.0.symbols: List should have at least 1 item"),
        ([{"type": "alpaca", "symbols": ["A", " "]}], "realtime.sources.0.symbols: symbols must be non-empty"),
        (
            [{"type": "alpaca", "symbols": ["aapl", "AAPL"]}],
            "realtime.sources.0.symbols: symbols listed twice: ['AAPL']",
        ),
        ([{"type": "alpaca", "symbols": ["A"], "stream_types": ["ticks"]}], "realtime.sources.0.stream_types.0:"),
        ([{"type": "iex", "symbols": ["A"], "stream_types": ["bars"]}], "realtime.sources.0.stream_types: iex serves"),
        (
            [{"type": "alpaca", "symbols": ["A"], "url": "http://x"}],
            "realtime.sources.0.url: must be a ws:// or wss://",
        ),
        ([{"type": "alpaca", "symbols": ["A"], "priority": "high"}], "realtime.sources.0.priority: Input should be"),
        (
            [{"type": "alpaca", "symbols": ["A"], "name": "x"}, {"type": "polygon", "symbols": ["A"], "name": "x"}],
            "realtime.sources.1.name: 'x' is already the name of realtime.sources.0",
        ),
        (
            [{"type": "alpaca", "symbols": ["A"]}, {"type": "replay", "symbols": ["SPY", "AAPL"]}],
            "realtime.sources.1.symbols: replay has no bundled data for ['AAPL']",
        ),
        ([], "realtime.sources: at least one source is needed"),
        ({"type": "alpaca", "symbols": ["A"]}, "realtime.sources: must be a list of sources, got dict"),
    ],
)
def test_bad_sources_name_the_key(sources: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        stream_configs(sources)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_every_bad_entry_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        stream_configs([{"type": "alpaca", "symbols": ["A"], "url": "x"}, {"type": "replay", "symbols": ["ZZZ"]}])
    assert "realtime.sources.0.url" in str(err.value)
    assert "realtime.sources.1.symbols" in str(err.value)


def test_settings_refuse_bad_sources_at_load_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(
        "realtime:\n  sources:\n    - {type: alpaca, symbols: [AAPL], name: a}\n    - {type: polygon, symbols: [SPY], "
        "url: 'https://api.polygon.io'}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(overlay)
    assert "realtime.sources.1.url: Value error, must be a ws:// or wss:// URL" in str(err.value)
    overlay.write_text("realtime:\n  sources:\n    - {type: alpaca, symbols: [A], name: a}\n"
                       "    - {type: polygon, symbols: [B], name: a}\n")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_settings(overlay)
    assert "feed names used twice: ['a']" in str(err.value)
