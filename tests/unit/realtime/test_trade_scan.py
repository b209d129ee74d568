"""The compiled trade scanner (Alpaca, Polygon, Binance) reads exactly what the msgspec path reads, or declines.

Property: for any frames, `scan_<format>_trades` either returns None (the first frame is not in its form) or a run
whose every column equals what msgspec's `_decode_trade_frames` gives for the same frames. Declining is always
allowed (the msgspec path then decides); reading differently never is. Checked on generated frames (odd numbers,
times, ids, unknown fields, whitespace), on byte-level mutations of well-formed frames, and on named edge cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt_trader.realtime.sources import alpaca, binance, polygon, trade_scan
from tests.unit.realtime.test_frame_batches import _frames as binance_frames
from tests.unit.realtime.test_frame_batches import assert_trade_frames_equal_parse_frame
from tests.unit.realtime.test_frame_runs import _frames
from tests.unit.realtime.test_polygon_runs import _frames as polygon_frames

FORMATS = {
    "alpaca": (trade_scan.scan_alpaca_trades, alpaca._decode_trade_frames),
    "polygon": (trade_scan.scan_polygon_trades, polygon._decode_trade_frames),
    "binance": (trade_scan.scan_binance_trades, binance._decode_trade_frames),
}


def _same_as_msgspec(raws: list[Any], fmt: str = "alpaca") -> bool:
    """The scanner's run from raws[0] equals msgspec's on the frames it took; True when it took any."""
    scan, decode = FORMATS[fmt]
    got = scan(raws, 0)
    if got is None:
        return False
    ref = decode(raws, 0, len(raws))
    assert ref is not None, raws[0]
    k = len(got.counts)
    assert got.counts == ref.counts[:k], raws[:k]
    m = sum(got.counts)
    assert got.symbol == ref.symbol[:m]
    assert list(got.ts) == list(ref.ts[:m])
    assert repr([float(x) for x in got.price]) == repr([float(x) for x in ref.price[:m]])  # -0.0, nan: exact
    assert repr([float(x) for x in got.size]) == repr([float(x) for x in ref.size[:m]])
    assert got.ids == ref.ids[:m]
    # The symbols numbered by first appearance, as the pipeline numbers them (`_symbol_runs`).
    assert got.codes is not None
    assert got.names is not None
    assert got.names == list(dict.fromkeys(got.symbol))
    assert [got.names[c] for c in got.codes.tolist()] == got.symbol
    return True


def test_the_scanner_is_on_where_numba_is_installed() -> None:
    # numba is a dependency: a scanner that fails to compile or its self-check must fail here, not fall back quietly.
    assert trade_scan.ENABLED, trade_scan.OFF_BECAUSE


def _trade(sym: str = "AAPL", i: Any = 52983525029461, x: Any = "V", p: Any = 126.55, s: Any = 100) -> dict[str, Any]:
    return {"T": "t", "S": sym, "i": i, "x": x, "p": p, "s": s, "t": "2021-02-22T15:51:44.208123456Z", "c": ["@"]}


def _frame(*trades: dict[str, Any]) -> str:
    return json.dumps(list(trades), separators=(",", ":"))


NUMBERS = [
    "0", "-0", "1", "0.1", "126.55", "1E+2", "1e-7", "2.5e3", "1240.4246534995414", "9007199254740993",
    "0.30000000000000004", "1.7976931348623157e308", "2.2250738585072014e-308", "5e-324", "1e400", "-1e400",
    "123456789012345678901", "1.", ".5", "01", "-", "1e", "+1", "1.5e+", "NaN", "Infinity", "0x10", "1_000",
]  # fmt: skip


@pytest.mark.parametrize("text", NUMBERS)
def test_numbers_read_as_msgspec_reads_them_or_decline(text: str) -> None:
    for field in ("p", "s"):
        raw = _frame(_trade()).replace('"p":126.55' if field == "p" else '"s":100', f'"{field}":{text}')
        _same_as_msgspec([raw])


TIMES = [
    "2021-02-22T15:51:44Z", "2021-02-22T15:51:44.2Z", "2021-02-22T15:51:44.123456789Z",
    "2021-02-22T15:51:44.1234567891Z", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2023-04-31T00:00:00Z",
    "2023-11-14T24:00:00Z", "2023-11-14T23:60:00Z", "2023-11-14T23:59:60Z", "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z", "2199-12-31T23:59:59.999999999Z", "2262-04-11T23:47:16Z", "2023-11-14t22:13:20Z",
    "2023-11-14 22:13:20Z", "2023-11-14T22:13:20z", "2023-11-14T22:13:20+00:00", "2023-11-14T22:13:20.5-05:30",
    "2023-11-14T22:13:20.Z", "2023-11-14T22:13:2Z", "+023-11-14T22:13:20Z", "2023-11-14T22:13:20.1a3Z",
]  # fmt: skip


@pytest.mark.parametrize("text", TIMES)
def test_times_read_as_the_rfc3339_parser_reads_them_or_decline(text: str) -> None:
    raw = _frame(_trade()).replace("2021-02-22T15:51:44.208123456Z", text)
    _same_as_msgspec([raw])


@pytest.mark.parametrize(
    "trade",
    [
        _trade(i=0), _trade(i=10**17), _trade(i=10**18), _trade(i=2**63), _trade(i=-1), _trade(i="123"),
        _trade(i=1.0), _trade(x="P"), _trade(x="XY"), _trade(x=""), _trade(x="é"), _trade(x=1), _trade(sym=""),
        _trade(sym="BRK.B"), _trade(sym="A\\u0042"), _trade(p="126.55"), _trade(p=None), _trade(p=True),
        {**_trade(), "z": "C", "c": ["@", "I"], "extra": [1, "a", None, True, False, -2.5e3]},
        {**_trade(), "extra": {"nested": 1}}, {**_trade(), "extra": [[1]]}, {**_trade(), "T": "q"},
        {k: v for k, v in _trade().items() if k != "x"}, {k: v for k, v in _trade().items() if k != "i"},
        {k: v for k, v in _trade().items() if k != "t"},
    ],
)  # fmt: skip
def test_fields_read_as_msgspec_reads_them_or_decline(trade: dict[str, Any]) -> None:
    _same_as_msgspec([_frame(trade)])


@pytest.mark.parametrize(
    "raw",
    [
        ' [ { "T" : "t" , "S" : "AAPL" , "i" : 1 , "x" : "V" , "p" : 1.5 , "s" : 2 , "t" : "2021-02-22T15:51:44Z" } ] ',
        '[{"T":"t","S":"AAPL","i":1,"x":"V","p":1.5,"s":2,"t":"2021-02-22T15:51:44Z","p":2.5}]',  # a field twice
        '[{"T":"t","S":"AAPL","i":1,"x":"V","p":1.5,"s":2,"t":"2021-02-22T15:51:44Z"}]x',
        '[{"T":"t","S":"AAPL","i":1,"x":"V","p":1.5,"s":2,"t":"2021-02-22T15:51:44Z"},]',
        '[{"T":"t","S":"AAPL","i":1,"x":"V","p":1.5,"s":2,"t":"2021-02-22T15:51:44Z",}]',
        '[{"T":"t","S":"AAPL","i":1,"x":"V","p":1.5,"s":2,"t":"2021-02-22T15:51:44Z"}',
        '[{"\\u0054":"t","S":"AAPL","i":1,"x":"V","p":1.5,"s":2,"t":"2021-02-22T15:51:44Z"}]',
        "[]", "{}", "", "[{}]", "null",
    ],
)  # fmt: skip
def test_frame_shapes_read_as_msgspec_reads_them_or_decline(raw: str) -> None:
    _same_as_msgspec([raw])
    _same_as_msgspec([raw.encode()])


_decimal = st.from_regex(r"-?(0|[1-9][0-9]{0,22})(\.[0-9]{1,22})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
_number = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70), _decimal)
_when = st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2300, 1, 1))  # noqa: DTZ001 (naive bounds)


@st.composite
def _trades(draw: st.DrawFn) -> str:
    """One trade as JSON text, its fields drawn from the odd corners of what a frame may hold."""
    when = draw(_when).replace(tzinfo=UTC)
    width = draw(st.integers(0, 10))
    frac = "" if width == 0 else "." + str(draw(st.integers(0, 10**width - 1))).zfill(width)
    zone = draw(st.sampled_from(["Z", "Z", "Z", "z", "+00:00", "-05:30"]))
    t = when.strftime("%Y-%m-%dT%H:%M:%S") + frac + zone
    fields: dict[str, str] = {
        "T": '"t"',
        "S": json.dumps(draw(st.sampled_from(["AAPL", "MSFT", "BRK.B", "A", "é"]))),
        "i": json.dumps(draw(st.one_of(st.integers(-5, 2**64), st.text("0123456789s", max_size=4)))),
        "x": json.dumps(draw(st.sampled_from(["V", "P", "Q", "", "XY", "\\"]))),
        "p": str(draw(_number)) if draw(st.booleans()) else repr(draw(st.floats(0.01, 1e6))),
        "s": str(draw(_number)),
        "t": json.dumps(t),
    }
    if draw(st.booleans()):
        fields["c"] = json.dumps(draw(st.lists(st.sampled_from(["@", "I", "F"]), max_size=3)))
    if draw(st.booleans()):
        fields["z"] = '"C"'
    return _as_object(draw, fields)


def _as_object(draw: st.DrawFn, fields: dict[str, str]) -> str:
    """The fields as a JSON object: in any order, one of them perhaps missing, with or without whitespace."""
    keys = draw(st.permutations(list(fields)))
    drop = draw(st.sampled_from([None, None, None, *keys]))
    ws = draw(st.sampled_from(["", "", " ", "\n", "\t"]))
    return "{" + f",{ws}".join(f'"{k}":{ws}{fields[k]}' for k in keys if k != drop) + "}"


def test_without_numba_the_scanner_is_off_and_frames_still_parse() -> None:
    code = (
        "from gpt_trader.realtime.sources import alpaca, polygon, trade_scan\n"
        "assert not trade_scan.ENABLED and 'NUMBA_DISABLE_JIT' in trade_scan.OFF_BECAUSE\n"
        f"cols = alpaca.parse_trade_frames([{_GOOD['alpaca']!r}], 0)\n"
        "assert cols is not None and cols.counts == [3] and cols.symbol == ['AAPL', 'MSFT', 'AAPL']\n"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_ids_hash_as_python_hashes_them() -> None:
    base = datetime(2021, 2, 22, tzinfo=UTC)
    trades = [
        {**_trade(i=i, x=x), "t": (base + timedelta(microseconds=i % 10**6)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        for i in (0, 1, 2**31, 2**59, 10**18 - 1)
        for x in "AVPQZ@ ~"
    ]
    got = trade_scan.scan_alpaca_trades([_frame(*trades)], 0)
    assert got is not None
    assert got.ids == [hash((t["x"], t["i"])) for t in trades]


# --- Polygon ------------------------------------------------------------------------------------------------------
def _ptrade(**fields: Any) -> dict[str, Any]:
    base = {"ev": "T", "sym": "MSFT", "x": 4, "i": "12345", "z": 3, "p": 114.125, "s": 100, "c": [0, 12]}
    return {**base, "t": 1536036818784, "q": 3681328, **fields}


@pytest.mark.parametrize(
    "trade",
    [
        _ptrade(), _ptrade(i=12345), _ptrade(i="0"), _ptrade(i="012"), _ptrade(i=""), _ptrade(i="12a"),
        _ptrade(i="1" * 18), _ptrade(i="1" * 19), _ptrade(i=-1), _ptrade(x=0), _ptrade(x=-4), _ptrade(x="4"),
        _ptrade(x=4.0), _ptrade(x=10**18), _ptrade(t=0), _ptrade(t=-1), _ptrade(t=9_223_372_036_854),
        _ptrade(t=9_223_372_036_855), _ptrade(t=1.5e12), _ptrade(ev="Q"), _ptrade(ev="t"), _ptrade(sym=""),
        _ptrade(p=-0), _ptrade(p="1"), _ptrade(s=None), _ptrade(c=[[0]]), _ptrade(extra={"a": 1}),
        {k: v for k, v in _ptrade().items() if k != "x"}, {k: v for k, v in _ptrade().items() if k != "i"},
        {k: v for k, v in _ptrade().items() if k != "t"}, {k: v for k, v in _ptrade().items() if k != "ev"},
    ],
)  # fmt: skip
def test_polygon_fields_read_as_msgspec_reads_them_or_decline(trade: dict[str, Any]) -> None:
    _same_as_msgspec([_frame(trade)], "polygon")


def test_polygon_ids_key_as_trade_key_does() -> None:
    trades = [_ptrade(x=x, i=i) for x in (0, 4, 12, 2**40) for i in ("0", "7", "12345", 10**17, "99999999999999999")]
    got = trade_scan.scan_polygon_trades([_frame(*trades)], 0)
    assert got is not None
    assert got.ids == [polygon.trade_key(t["x"], t["i"]) for t in trades]
    assert polygon.trade_key(4, "12345") == hash((4, 12345)) == polygon.trade_key(4, 12345)
    assert polygon.trade_key(4, "012345") == hash((4, "012345"))  # not the same id as 12345


@st.composite
def _polygon_trades(draw: st.DrawFn) -> str:
    fields: dict[str, str] = {
        "ev": json.dumps(draw(st.sampled_from(["T", "T", "T", "Q", "t"]))),
        "sym": json.dumps(draw(st.sampled_from(["AAPL", "MSFT", "BRK.B", "é"]))),
        "x": json.dumps(draw(st.one_of(st.integers(-2, 2**62), st.sampled_from(["4", 4.0])))),
        "i": json.dumps(
            draw(st.one_of(st.integers(-2, 2**64), st.text("0123456789", max_size=20), st.text("0a ", max_size=3)))
        ),
        "p": str(draw(_number)),
        "s": str(draw(_number)),
        "t": json.dumps(draw(st.one_of(st.integers(-(2**63), 2**63), st.floats(0, 2e12)))),
    }
    for extra, value in (("z", "3"), ("c", "[0,12]"), ("q", "3681328")):
        if draw(st.booleans()):
            fields[extra] = value
    return _as_object(draw, fields)


_GENERATED = {"alpaca": _trades(), "polygon": _polygon_trades()}


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(_GENERATED)).flatmap(
        lambda fmt: st.tuples(
            st.just(fmt), st.lists(st.lists(_GENERATED[fmt], min_size=1, max_size=4), min_size=1, max_size=3)
        )
    )
)
def test_generated_frames_read_as_msgspec_reads_them_or_decline(case: tuple[str, list[list[str]]]) -> None:
    fmt, frames = case
    _same_as_msgspec(["[" + ",".join(trades) + "]" for trades in frames], fmt)


# --- both formats -------------------------------------------------------------------------------------------------
_GOOD = {
    "alpaca": _frame(
        {**_trade(), "z": "C"}, _trade(sym="MSFT", i=7, x="P", p=1240.4246534995414, s=2.5), _trade(p=0.1, s=1e-3)
    ),
    "polygon": _frame(_ptrade(), _ptrade(sym="AAPL", x=12, i="7", p=1240.4246534995414, s=2.5), _ptrade(p=0.1, i=99)),
    "binance": (
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1672515782136,"s":"BTCUSDT","t":12345,"p":"0.0012",'
        '"q":"100.5","T":1672515782136,"m":true,"M":true}}'
    ),
}
_REALISTIC = {"alpaca": _frames, "polygon": polygon_frames, "binance": binance_frames}


@pytest.mark.parametrize(("fmt", "least"), [("alpaca", 0.8), ("polygon", 0.6), ("binance", 0.75)])
def test_realistic_runs_are_read_whole_and_equal(fmt: str, least: float) -> None:
    # Alpaca: it declines only the frames holding a string id (~12% of these); Polygon: no trade frame of these;
    # Binance: the frames that are not plain trades (quotes, klines, control, malformed: ~15% of these).
    raws = [raw for seed in (1, 2) for _, batch in _REALISTIC[fmt](seed, 400) for raw in batch]
    scan = FORMATS[fmt][0]
    taken = 0
    i = 0
    while i < len(raws):
        got = scan(raws, i)
        if got is None:
            i += 1
            continue
        assert _same_as_msgspec(raws[i : got.end], fmt)
        taken += len(got.counts)
        i = got.end
    assert taken >= least * len(raws)


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(sorted(_GOOD)),
    st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.sampled_from(["del", "ins", "sub"]),
            st.sampled_from(list('{}[]",:.-+eE0159 tfnluTQZ\\\x00\x7f')),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_mutated_frames_read_as_msgspec_reads_them_or_decline(fmt: str, edits: list[tuple[int, str, str]]) -> None:
    raw = _GOOD[fmt]
    for at, how, char in edits:
        at = min(at, len(raw) - 1)
        raw = raw[:at] + raw[at + 1 :] if how == "del" else raw[:at] + char + raw[at + (how == "sub") :]
    _same_as_msgspec([raw, _GOOD[fmt]], fmt)


@pytest.mark.parametrize("module", [alpaca, polygon, binance], ids=["alpaca", "polygon", "binance"])
def test_the_msgspec_path_alone_still_reads_every_run(module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Where the scanner is off (no numba, NUMBA_DISABLE_JIT), the msgspec path serves every frame on its own.
    monkeypatch.setattr(module, f"scan_{module.NAME}_trades", lambda *_: None)
    raws = [raw for seed in (1, 2) for _, batch in _REALISTIC[module.NAME](seed, 200) for raw in batch]
    assert_trade_frames_equal_parse_frame(module, raws)


# --- Binance ------------------------------------------------------------------------------------------------------
def _btrade(stream: str = "btcusdt@trade", **data: Any) -> str:
    fields = {"e": "trade", "E": 1672515782136, "s": "BTCUSDT", "t": 12345, "p": "0.001", "q": "100",
              "T": 1672515782136, "m": True, "M": True, **data}  # fmt: skip
    return json.dumps({"stream": stream, "data": {k: v for k, v in fields.items() if v is not _DROP}})


_DROP = object()


@pytest.mark.parametrize(
    "raw",
    [
        _btrade(),
        _btrade(p="1240.4246534995414", q="2.5e3"),
        _btrade(p=12.5, q=3),  # bare numbers: msgspec reads them too
        _btrade(p="-0", q="0"),
        _btrade(p="-1", q="1e-400"),
        _btrade(p="01", q="1"),
        _btrade(p=" 1", q="1"),
        _btrade(p="nan", q="1"),
        _btrade(p="1e400"),
        _btrade(p="0.1000000000000000055511151231257827"),
        _btrade(e=_DROP),  # the event type may be left out (msgspec's default)
        _btrade(e="aggTrade"),
        _btrade(e=None),
        _btrade(t=-5),
        _btrade(t="12"),
        _btrade(t=2**63),
        _btrade(t=1.0),
        _btrade(T=-1),
        _btrade(T=2**62),
        _btrade(T="1672515782136"),
        _btrade(s="BTC/USDT"),
        _btrade(stream="btc/usdt@trade", s="BTC/USDT"),
        _btrade(s="btcusdt"),
        _btrade(s="ETHUSDT"),
        _btrade(stream="BTCUSDT@trade"),
        _btrade(stream="btcusdt@aggTrade"),
        _btrade(stream="btcusdt@trade@x"),
        _btrade(stream="@trade", s=""),
        _btrade(stream="btcusdt"),
        _btrade(s="BTCÜSDT", stream="btcüsdt@trade"),
        _btrade(x=[1, "a", None]),
        _btrade(x={"nested": 1}),
        _btrade(p=_DROP),
        _btrade(q=_DROP),
        _btrade(T=_DROP),
        '{"data":{"e":"trade","s":"X","t":1,"p":"1","q":"1","T":1},"stream":"x@trade"}',
        '{"stream":"x@trade","data":{"e":"trade","s":"X","t":1,"p":"1","q":"1","T":1},"id":7}',
        '{"stream":"x@trade","data":{"e":"trade","s":"X","t":1,"t":2,"p":"1","q":"1","T":1}}',
        '{"stream":"x@trade","stream":"y@trade","data":{"e":"trade","s":"X","t":1,"p":"1","q":"1","T":1}}',
        ' { "stream" : "x@trade" , "data" : { "s" : "X" , "t" : 1 , "p" : "1" , "q" : "1" , "T" : 1 } } ',
        '{"stream":"x@trade","data":{"s":"X","t":1,"p":"1","q":"1","T":1}} x',
        '{"stream":"x@trade","data":{"s":"X","t":1,"p":"1","q":"1","T":1}}{"stream":"x@trade"}',
        '{"stream":"x@trade","data":[]}',
        '{"stream":"x\\u0040trade","data":{"s":"X","t":1,"p":"1","q":"1","T":1}}',
    ],
)
def test_binance_frames_read_as_msgspec_reads_them_or_decline(raw: str) -> None:
    _same_as_msgspec([raw, _GOOD["binance"]], "binance")


def test_binance_plain_frames_are_read() -> None:
    raws = [_btrade(), _btrade(stream="eth@trade", s="ETH", t=0, p="1240.4246534995414", q=2.5e3, T=0, e=_DROP)]
    got = trade_scan.scan_binance_trades(raws, 0)
    assert got is not None
    assert got.end == 2
    assert _same_as_msgspec(raws, "binance")
    assert _same_as_msgspec([_btrade(s="BTC/USDT"), _btrade()], "binance")  # "btcusdt" is BTC/USDT's stream


@st.composite
def _binance_trades(draw: st.DrawFn) -> str:
    sym = draw(st.sampled_from(["BTCUSDT", "ETH/USD", "bnb", "É"]))
    stream = draw(st.sampled_from([sym.lower().replace("/", ""), sym, "btcusdt", ""])) + draw(
        st.sampled_from(["@trade", "@trade", "@aggTrade", "@x@trade", ""])
    )
    fields: dict[str, str] = {
        "e": json.dumps(draw(st.sampled_from(["trade", "trade", "aggTrade", 5]))),
        "E": json.dumps(draw(st.integers(0, 2**53))),
        "s": json.dumps(sym),
        "t": json.dumps(draw(st.one_of(st.integers(-2, 2**64), st.sampled_from(["7", 7.0])))),
        "p": draw(st.one_of(_number.map(str), _number.map(lambda x: f'"{x}"'))),
        "q": draw(st.one_of(_number.map(str), _number.map(lambda x: f'"{x}"'))),
        "T": json.dumps(draw(st.one_of(st.integers(-(2**63), 2**63), st.floats(0, 2e12)))),
        "m": "true",
        "M": draw(st.sampled_from(["true", "false", "null"])),
    }
    if draw(st.booleans()):
        del fields["e"]
    data = _as_object(draw, fields)
    return _as_object(draw, {"stream": json.dumps(stream), "data": data})


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_binance_trades(), min_size=1, max_size=6))
def test_generated_binance_frames_read_as_msgspec_reads_them_or_decline(frames: list[str]) -> None:
    _same_as_msgspec(frames, "binance")
