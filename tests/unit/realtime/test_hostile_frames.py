"""Frames built to slip through the parsers: each case below once passed as data, raised out of a parser, crashed
the pipeline later or cost the good messages beside it. Now every one is a dead letter with its reason, the batched
path (`parse_trade_frames`) agrees with `parse_frame`, and the trades around it still count."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from gpt_trader.realtime import DataSource
from gpt_trader.realtime.sources import alpaca, binance, iex, polygon
from gpt_trader.realtime.timestamps import parse_rfc3339_array, parse_rfc3339_batch, parse_rfc3339_ns
from tests.support.frames import run_frames

NOW_S = time.time_ns() // 1_000_000_000
NOW = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW_S))
NOW_MS = NOW_S * 1000
FAR_MS = 2**62  # a millisecond time whose nanoseconds overflow int64


def _alpaca(i: int, t: str, **extra: Any) -> dict[str, Any]:
    return {"T": "t", "S": "AAA", "i": i, "x": "V", "p": 10.0 + i / 100, "s": 1, "t": t, **extra}


def _polygon(i: int, t_ms: int = NOW_MS) -> dict[str, Any]:
    return {"ev": "T", "sym": "AAA", "i": str(i), "x": 4, "p": 10.0 + i / 100, "s": 1, "t": t_ms + i}


def _binance(i: int, stream: str = "aaa@trade") -> bytes:
    data = {"e": "trade", "E": NOW_MS + i, "s": "AAA", "t": i, "p": f"{10 + i / 100}", "q": "1", "T": NOW_MS + i}
    return orjson.dumps({"stream": stream, "data": data})


def _trades(frame: Any) -> list[tuple[Any, ...]]:
    return list(zip(frame.t_symbol, frame.t_ts, frame.t_price, frame.t_size, frame.t_id, strict=True))


def _batched_equals_per_frame(module: Any, raws: list[bytes]) -> None:
    """What `parse_trade_frames` takes from the start of `raws` is exactly what `parse_frame` gives those frames,
    and it stops before the first frame `parse_frame` does not take whole as trades."""
    cols = module.parse_trade_frames(raws, 0)
    taken = 0 if cols is None else len(cols.counts)
    want: list[tuple[Any, ...]] = []
    for raw in raws[:taken]:
        frame = module.parse_frame(raw)
        assert not frame.rejects
        assert not frame.q_ts
        assert not frame.bars
        assert not frame.control
        want += _trades(frame)
    if cols is not None:
        got = list(zip(cols.symbol, list(cols.ts), list(cols.price), list(cols.size), cols.ids, strict=True))
        assert got == want
    if taken < len(raws):
        rest = module.parse_frame(raws[taken])
        assert rest.rejects or rest.q_ts or rest.bars or rest.control or not rest.t_ts


# --- a trade message without its type tag --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "message", "reason"),
    [
        (alpaca, {"S": "AAA", "p": 10.0, "s": 1, "t": f"{NOW}Z"}, "malformed_message"),
        (polygon, {"sym": "AAA", "p": 10.0, "s": 1, "t": NOW_MS}, "unknown_event"),
    ],
)
def test_a_trade_without_its_tag_is_refused_on_both_paths(module: Any, message: dict[str, Any], reason: str) -> None:
    raw = orjson.dumps([message])
    frame = module.parse_frame(raw)
    assert [r.reason for r in frame.rejects] == [reason]
    assert not frame.t_ts
    assert module.parse_trade_frames([raw], 0) is None  # it once came back as a trade from the batched path


@pytest.mark.parametrize("batched", [False, True])
def test_untagged_alpaca_trades_are_dead_letters_in_the_pipeline(batched: bool) -> None:
    good = [orjson.dumps([_alpaca(k, f"{NOW}.{k:03d}Z")]) for k in range(4)]
    untagged = orjson.dumps([{k: v for k, v in _alpaca(9, f"{NOW}.009Z").items() if k != "T"}])
    p = run_frames(DataSource.ALPACA, [*good[:2], untagged, *good[2:]], batched)
    assert p.ticks_accepted == 4
    assert p.dead_letters.by_reason() == {"malformed_message": 1}


# --- RFC 3339 ------------------------------------------------------------------------------------------------------
def test_timestamps_of_other_widths_whose_lengths_add_up_are_not_read_as_well_formed() -> None:
    # 21 + 23 characters = 2 x 22: joined bare, the rows of the vectorized parse looked like two good timestamps
    odd = [f"{NOW}.2", f"Z{NOW}.3Z"]
    texts = [f"{NOW}.{k}Z" for k in range(4)] + odd + [f"{NOW}.{k}Z" for k in range(4, 8)]
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339_array(texts)
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339_batch(texts)
    # the same across frames of a batch, and inside one frame: each bad one is a bad timestamp, never a trade
    frames = [
        orjson.dumps([_alpaca(1, f"{NOW}.1Z")]),
        orjson.dumps([_alpaca(2, odd[0])]),
        orjson.dumps([_alpaca(3, odd[1])]),
        orjson.dumps([_alpaca(4 + k, f"{NOW}.4Z") for k in range(5)]),
    ]
    assert [r.reason for f in frames for r in alpaca.parse_frame(f).rejects] == ["bad_timestamp"] * 2
    _batched_equals_per_frame(alpaca, frames)
    one = alpaca.parse_frame(orjson.dumps([_alpaca(k, t) for k, t in enumerate(texts)]))
    assert len(one.t_ts) == 8
    assert [r.reason for r in one.rejects] == ["bad_timestamp"] * 2


@pytest.mark.parametrize(
    "text",
    [
        f"{NOW[:16]}x{NOW[17:]}.5Z",  # a letter for the colon
        f"{NOW[:17]}+4.5Z",  # a sign where the seconds' digits go
        f"{NOW[:11]} 1{NOW[13:]}Z",  # a space in the hour
        f"{NOW}.\u0663Z",  # another script's digit in the fraction
        f"{NOW}.5",  # no zone
        f"{NOW},5Z",  # ISO 8601's comma: not RFC 3339 (its fraction used to be dropped)
        f"{NOW}+0530",  # RFC 3339 offsets have their colon
        f"{NOW}.5+25:00",  # no such offset
        f"{NOW}.5+05:30:00",  # nor seconds in one
        f"{NOW}.Z",  # a dot without digits
    ],
    # fixed ids: the texts hold the time of collection, which parallel workers must agree on
    ids=[
        "letter-colon",
        "sign-seconds",
        "space-hour",
        "non-ascii-digit",
        "no-zone",
        "comma",
        "offset-no-colon",
        "offset-range",
        "offset-seconds",
        "empty-fraction",
    ],
)
def test_malformed_rfc3339_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_rfc3339_ns(text)
    with pytest.raises(ValueError, match="timestamp"):  # in a frame long enough for the vectorized path, too
        parse_rfc3339_array([f"{NOW}.{k}Z" for k in range(9)] + [text])


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2021-02-22T21:21:44.208123456+05:30", "2021-02-22T15:51:44.208123456Z"),
        ("2021-02-22T12:21:44-03:30", "2021-02-22T15:51:44Z"),
        ("2021-02-22t15:51:44.5z", "2021-02-22T15:51:44.5Z"),
        ("2021-02-23T00:51:44.25+09:00", "2021-02-22T15:51:44.25Z"),
        ("2021-02-22T15:51:44.1234567891-00:00", "2021-02-22T15:51:44.123456789Z"),
    ],
)
def test_rfc3339_offsets_keep_every_fraction_digit(text: str, utc: str) -> None:
    assert parse_rfc3339_ns(text) == parse_rfc3339_ns(utc)


# --- nesting past the decoders' limits -----------------------------------------------------------------------------
DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    ("module", "raw"),
    [
        (alpaca, b"[" + b"[" * 300 + b"]" * 300 + b"]"),
        (polygon, b"[" + b"[" * 300 + b"]" * 300 + b"]"),
        (iex, b"[" + b"[" * 300 + b"]" * 300 + b"]"),
        (alpaca, b'[{"T":"t","S":"AAA","i":1,"x":"V","p":1.0,"s":1,"t":"%sZ","z":%s}]' % (NOW.encode(), DEEP)),
        (polygon, b'[{"ev":"T","sym":"AAA","p":1.0,"s":1,"t":%d,"z":%s}]' % (NOW_MS, DEEP)),
        (
            binance,
            b'{"stream":"aaa@trade","data":{"e":"trade","s":"AAA","t":1,"p":"1","q":"1","T":%d,"z":%s}}'
            % (NOW_MS, DEEP),
        ),
        (binance, b"[" * 5000 + b"]" * 5000),
    ],
)
def test_deep_nesting_never_raises_out_of_a_parser(module: Any, raw: bytes) -> None:
    frame = module.parse_frame(raw)  # raised RecursionError / TypeError("Recursion limit reached")
    assert frame.rejects or frame.t_ts
    batched = getattr(module, "parse_trade_frames", lambda raws, start: None)([raw], 0)  # IEX has no batched path
    if batched is not None:
        assert list(batched.ts) == frame.t_ts


# --- quote and bar times past int64 nanoseconds --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "bad"),
    [
        (
            DataSource.BINANCE,
            b'{"stream":"aaa@bookTicker","data":{"u":1,"s":"AAA","b":"1","B":"1","a":"1.1","A":"1","T":%d}}' % FAR_MS,
        ),
        (
            DataSource.BINANCE,
            orjson.dumps(
                {
                    "stream": "aaa@kline_1m",
                    "data": {
                        "s": "AAA",
                        "k": {
                            "t": FAR_MS,
                            "s": "AAA",
                            "i": "1m",
                            "o": "1",
                            "h": "1",
                            "l": "1",
                            "c": "1",
                            "v": "1",
                            "n": 1,
                            "x": True,
                        },
                    },
                }
            ),
        ),
        (DataSource.POLYGON, orjson.dumps([{"ev": "Q", "sym": "AAA", "bp": 1, "ap": 1.1, "t": FAR_MS}])),
        (
            DataSource.POLYGON,
            orjson.dumps(
                [{"ev": "A", "sym": "AAA", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "s": FAR_MS, "e": FAR_MS + 1000}]
            ),
        ),
    ],
)
@pytest.mark.parametrize("batched", [False, True])
def test_quote_and_bar_times_past_int64_are_dead_letters(source: DataSource, bad: bytes, batched: bool) -> None:
    if source is DataSource.BINANCE:
        good = [_binance(k) for k in range(6)]
    else:
        good = [orjson.dumps([_polygon(k), _polygon(k + 10)]) for k in range(3)]
    # The quote used to be staged in the live buffer and raise OverflowError at the next multi-row write.
    p = run_frames(source, [good[0], bad, *good[1:]], batched)
    assert p.dead_letters.by_reason() == {"bad_timestamp": 1}
    assert p.ticks_accepted == 6


# --- numbers past a double -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("batched", [False, True])
def test_a_number_past_a_double_costs_only_its_message(batched: bool) -> None:
    good = _alpaca(1, f"{NOW}.001Z")
    frames = [
        orjson.dumps([good])[:-1] + b',{"T":"t","S":"AAA","i":2,"x":"V","p":1e400,"s":1,"t":"%s.002Z"}]' % NOW.encode(),
        orjson.dumps([_alpaca(3, f"{NOW}.003Z")])[:-1]
        + b',{"T":"t","S":"AAA","i":4,"x":"V","p":1.0,"s":%s,"t":"%s.004Z"}]' % (b"9" * 5000, NOW.encode()),
        orjson.dumps([_alpaca(5, f"{NOW}.005Z")])[:-1]
        + b',{"T":"t","S":"AAA","i":%s,"x":"V","p":1.0,"s":1,"t":"%s.006Z"}]' % (b"9" * 5000, NOW.encode()),
    ]
    p = run_frames(DataSource.ALPACA, frames, batched)
    assert p.ticks_accepted == 3  # the whole frame used to be one malformed_json dead letter
    assert p.dead_letters.by_reason() == {"bad_price": 1, "bad_size": 1, "invalid_message": 1}


@pytest.mark.parametrize(
    "raw",
    [
        b'[{"symbol":"AAA","price":NaN,"size":1,"time":1}]',
        b'[{"symbol":"AAA","price":1,"size":1,"time":1},]',
        b'[{"symbol":"\\ud800","price":1e400,"size":1,"time":1}]',
    ],
)
def test_what_is_not_json_stays_malformed(raw: bytes) -> None:
    for module in (alpaca, polygon, iex):
        assert [r.reason for r in module.parse_frame(raw).rejects] == ["malformed_json"]


def test_iex_numbers_past_a_double_cost_only_their_message() -> None:
    raw = b'[{"symbol":"AAA","price":1,"size":1,"time":%d,"seq":1},{"symbol":"AAA","price":1e400,"size":1,"time":%d}]'
    frame = iex.parse_frame(raw % (NOW_MS, NOW_MS))
    assert frame.t_price == [1.0, float("inf")]  # the pipeline refuses the second as a bad price


# --- Binance stream names and ids, IEX sequence numbers --------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        _binance(7, stream="trade"),  # no `<symbol>@`: it was read as AAA's trade stream when the symbol was TRAD
        orjson.dumps(
            {"stream": "aaa@trade", "data": {"e": "trade", "s": "AAA", "t": -5, "p": "1", "q": "1", "T": NOW_MS}}
        ),
    ],
    ids=["no-at", "negative-id"],  # fixed: the frames hold the time of collection
)
def test_binance_malformed_stream_names_and_negative_ids_are_refused(bad: bytes) -> None:
    assert [r.reason for r in binance.parse_frame(bad).rejects] == ["invalid_message"]
    _batched_equals_per_frame(binance, [_binance(1), _binance(2), bad, _binance(3)])


def test_binance_stream_without_at_does_not_name_a_symbol() -> None:
    data = {"e": "trade", "s": "TRAD", "t": 1, "p": "1", "q": "1", "T": NOW_MS}
    frame = binance.parse_frame(orjson.dumps({"stream": "trade", "data": data}))
    assert not frame.t_ts
    assert [r.reason for r in frame.rejects] == ["invalid_message"]


def test_iex_boolean_seq_is_not_sequence_number_one() -> None:
    frame = iex.parse_frame(
        orjson.dumps(
            [
                {"symbol": "AAA", "price": 10.0, "size": 1, "time": NOW_MS, "seq": 1},
                {"symbol": "AAA", "price": 10.5, "size": 2, "time": NOW_MS, "seq": True},
            ]
        )
    )
    assert len(set(frame.t_id)) == 2  # `True == 1`: the second was dropped as a duplicate of the first
