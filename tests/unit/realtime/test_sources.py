"""Each adapter's pure parser on recorded payloads in the provider's documented wire format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt_trader.realtime.sources import alpaca, binance, iex, polygon
from gpt_trader.realtime.timestamps import format_rfc3339_ns, parse_rfc3339_ns

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "realtime"


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_parse_rfc3339_ns_fractions_and_offsets_exact():
    assert parse_rfc3339_ns("2021-02-22T15:51:44Z") == 1614009104 * 10**9
    assert parse_rfc3339_ns("2021-02-22T15:51:44.208Z") == 1614009104_208_000_000
    assert parse_rfc3339_ns("2021-02-22T15:51:45.335689322Z") == 1614009105_335_689_322
    assert parse_rfc3339_ns("2021-02-22T16:51:44.5+01:00") == 1614009104_500_000_000
    ns = 1614009105_335_689_322
    assert parse_rfc3339_ns(format_rfc3339_ns(ns)) == ns
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339_ns("22/02/2021 15:51:44")


def test_alpaca_parse_frame_recorded_trades_quotes_bars_statuses():
    frame = alpaca.parse_frame(read("alpaca_v2_trades_quotes.json"))
    assert frame.t_symbol == ["AAPL", "AAPL"]
    assert frame.t_price == [126.55, 126.56]
    assert frame.t_size == [1.0, 100.0]
    assert frame.t_ts == [1614009104_208_000_000, 1614009104_209_101_000]
    assert frame.t_id == [hash(("D", 96921)), hash(("D", 96922))]
    assert (frame.q_symbol, frame.q_bid, frame.q_ask, frame.q_bid_size, frame.q_ask_size) == (
        ["AMD"],
        [87.66],
        [87.68],
        [1.0],
        [4.0],
    )
    assert frame.q_ts == [1614009105_335_689_322]
    (bar,) = frame.bars
    assert (bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.timeframe_secs) == (
        "SPY",
        388.985,
        389.13,
        388.975,
        389.12,
        49378.0,
        60,
    )
    assert frame.rejects == []  # the trading status message is known and ignored


def test_alpaca_parse_frame_control_messages_surface():
    frames = json.loads(read("alpaca_v2_control.json"))
    parsed = [alpaca.parse_frame(json.dumps(f)) for f in frames]
    assert [p.control[0]["T"] for p in parsed] == ["success", "success", "subscription", "error"]
    assert parsed[3].control[0]["code"] == 402
    assert all(p.n_trades == 0 and not p.rejects for p in parsed)


def test_alpaca_parse_frame_bad_message_rejected_good_kept():
    raw = (
        b'[{"T":"t","S":"AAPL","p":1.0,"s":1,"t":"2021-02-22T15:51:44Z","i":1},{"T":"t","S":"AAPL","p":"x"},{"T":"zz"}]'
    )
    frame = alpaca.parse_frame(raw)
    assert frame.t_price == [1.0]
    assert sorted(r.reason for r in frame.rejects) == ["invalid_message", "unknown_event"]


def test_binance_parse_frame_recorded_combined_streams():
    lines = read("binance_combined.jsonl").splitlines()
    trade = binance.parse_frame(lines[0])
    assert (trade.t_symbol, trade.t_price, trade.t_size, trade.t_id, trade.t_ts) == (
        ["BNBBTC"],
        [0.001],
        [100.0],
        [12345],
        [1672515782136 * 10**6],
    )
    book = binance.parse_frame(lines[1], recv_ns=42)
    assert (book.q_symbol, book.q_bid, book.q_ask, book.q_bid_size, book.q_ask_size, book.q_ts) == (
        ["BNBUSDT"],
        [25.3519],
        [25.3652],
        [31.21],
        [40.66],
        [42],
    )
    kline = binance.parse_frame(lines[2]).bars[0]
    assert (kline.ts_ns, kline.open, kline.high, kline.low, kline.close, kline.volume, kline.trades) == (
        1672515780000 * 10**6,
        0.001,
        0.0025,
        0.0015,
        0.002,
        1000.0,
        100,
    )
    agg = binance.parse_frame(lines[3])
    assert agg.t_id == [-12346]
    assert binance.parse_frame(lines[4]).control == [{"result": None, "id": 1}]


def test_binance_stream_names_lowercase_per_type():
    from gpt_trader.realtime.models import StreamType

    names = binance.stream_names(["BTCUSDT"], [StreamType.TRADES, StreamType.QUOTES, StreamType.BARS])
    assert names == ["btcusdt@trade", "btcusdt@bookTicker", "btcusdt@kline_1m"]


def test_polygon_parse_frame_recorded_status_trades_quotes_aggregates():
    frames = json.loads(read("polygon_stocks.json"))
    assert polygon.parse_frame(json.dumps(frames[0])).control[0]["status"] == "connected"
    assert polygon.parse_frame(json.dumps(frames[1])).control[0]["status"] == "auth_success"
    data = polygon.parse_frame(json.dumps(frames[2]))
    assert (data.t_symbol, data.t_price, data.t_size, data.t_id, data.t_ts) == (
        ["MSFT"],
        [114.125],
        [100.0],
        [polygon.trade_key(4, "12345")],
        [1536036818784 * 10**6],
    )
    assert (data.q_bid, data.q_ask, data.q_bid_size, data.q_ask_size) == ([114.125], [114.128], [100.0], [160.0])
    (agg,) = data.bars
    assert (agg.symbol, agg.ts_ns, agg.timeframe_secs, agg.vwap) == ("SPCE", 1610144868000 * 10**6, 1, 25.3981)
    assert data.rejects == []


def test_iex_parse_frame_recorded_last_and_tops():
    frame = iex.parse_frame(read("iex_tops_last.json"))
    assert (frame.t_symbol, frame.t_price, frame.t_size, frame.t_id, frame.t_ts) == (
        ["SNAP"],
        [111.76],
        [5.0],
        [1],
        [1480446905681 * 10**6],
    )
    assert (frame.q_bid, frame.q_ask, frame.q_ts) == ([110.94], [111.82], [1480446910557 * 10**6])
    assert iex.parse_frame(b'{"symbol":"SNAP","bogus":1}').rejects[0].reason == "unknown_event"


@pytest.mark.parametrize("parse", [alpaca.parse_frame, binance.parse_frame, polygon.parse_frame, iex.parse_frame])
@pytest.mark.parametrize("raw", [b"", b"{", b"null", b"42", b'"x"', b"[1,2]", b'{"stream":1}', b"\xff\xfe"])
def test_parse_frame_garbage_rejected_never_raises(parse, raw):
    frame = parse(raw)
    assert frame.n_trades == 0
    assert frame.rejects
