"""A compiled scanner for runs of Alpaca v2, Polygon and Binance trade frames, straight into the columns that
`parse_trade_frames` returns.

msgspec decodes a trade into a struct in ~0.3 us; taking its fields back out into columns, parsing its time and
hashing its id costs as much again: together most of the pipeline's time per tick. This scanner (numba) reads the
frames' bytes once and writes the columns directly.

It takes only what it can vouch for: frames in the form the provider sends (no string escapes, ASCII strings, the
trade's seven fields each once, unknown fields holding strings, numbers, literals or flat arrays of them) and stops
at the first frame outside that form: the caller hands that one to the msgspec path, which decides. Alpaca: tag
`T: "t"`, times `YYYY-MM-DDTHH:MM:SS[.fffffffff]Z` in years 1970-2199, non-negative integer ids, one-character
exchange codes. Polygon: tag `ev: "T"`, non-negative Unix-ms times whose ns fit in int64, exchange ids and trade ids
as non-negative integers (trade ids also as strings of digits: `polygon.trade_key` keys both alike). Binance:
combined-stream envelopes of one `<symbol>@trade` event whose symbol is the stream's, prices and quantities as
numbers in quotes (or bare), non-negative integer ids and Unix-ms times. So what it
accepts it reads exactly as the msgspec path does (`tests/unit/realtime/test_trade_scan.py` checks named edge cases,
generated frames and byte-level mutations of good ones):

- numbers through the same correctly rounded conversion: exact when the decimal mantissa fits in 53 bits and the
  power of ten in 22 (Clinger's fast path), else C's `strtod` (correctly rounded in glibc and macOS' libc; its end
  pointer is checked, so a locale with another decimal point makes the frame fall back instead of misreading it);
- trade ids as `hash((x, i))`, CPython's tuple hash over the exchange's lane (Alpaca: the precomputed hash of its
  one-character code; Polygon: the int) and the id's int. A self-check against `hash` at import turns the scanner
  off if the interpreter hashes otherwise.

Without numba (not installed, or `NUMBA_DISABLE_JIT=1`) the scan functions return None and the msgspec path does all
the work: slower, same results.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import numpy as np
import numpy.typing as npt

from gpt_trader.realtime.models import TradeFrames
from gpt_trader.realtime.sources.base import MAX_MS

log = logging.getLogger(__name__)

ALPACA, POLYGON, BINANCE = 0, 1, 2
_MAX_SYMBOLS = 64  # distinct symbols per call; more and the call falls back (a feed's batch holds a handful)
_MIN_TRADE_BYTES = 40  # no trade object in either form is shorter (seven fields, their keys and quotes)

try:  # pragma: no cover - exercised through `ENABLED`
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise ImportError("the scanner passes pointers as 64-bit integers")
    import numba

    if getattr(numba.config, "DISABLE_JIT", False):  # NUMBA_DISABLE_JIT=1: numba's own switch, honoured as "no scanner"
        raise ImportError("NUMBA_DISABLE_JIT is set")
    from numba import types as _nt

    # C's strtod by name (resolved in the process, where libc is loaded); addresses passed as intp, which is how
    # the 64-bit ABIs pass pointers. Bound by name, unlike a ctypes pointer, it lets numba cache the compiled code.
    ctypes.CDLL(None).strtod  # noqa: B018 - present, or the scanner stays off
    _strtod = _nt.ExternalFunction("strtod", _nt.float64(_nt.intp, _nt.intp))
    _JIT = True
except (ImportError, OSError, AttributeError, TypeError) as exc:
    numba = None  # type: ignore[assignment]
    _JIT = False
    OFF_BECAUSE = str(exc)

_P1 = np.uint64(11400714785074694791)  # CPython's tuple hash (Objects/tupleobject.c, xxHash primes)
_P2 = np.uint64(14029467366897019727)
_P5 = np.uint64(2870177450012600261)
_LEN2 = np.uint64(2 ^ (2870177450012600261 ^ 3527539))
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)
_TWO53 = 2**53


def _key_bits() -> np.ndarray:
    """Per format, the field bit of each one-character key (0: a key the kernel skips)."""
    bits = np.zeros((3, 128), dtype=np.int64)
    for fmt, keys in ((ALPACA, "TSixpst"), (POLYGON, "  ixpst"), (BINANCE, "estpqT")):
        for k, key in enumerate(keys):
            if key != " ":
                bits[fmt, ord(key)] = 1 << k
    return bits


_KEY_BITS = _key_bits()  # Alpaca T S i x p s t; Polygon (ev sym are longer) i x p s t; Binance e s t p q T


def _exchange_hashes() -> np.ndarray:
    """hash(chr(c)) for the ASCII codes, as the uint64 lanes of the tuple hash (hash randomization: per process)."""
    return np.array([hash(chr(c)) & 0xFFFFFFFFFFFFFFFF for c in range(128)], dtype=np.uint64)


# No reference counting in the kernels (numba's `_nrt=False`): they allocate nothing, and the counting it would
# add around every helper that takes the byte array (atomic increments, per byte scanned) cost 2x.
_KERNEL: dict[str, Any] = {"cache": True, "error_model": "numpy", "_nrt": False}

if _JIT:

    @numba.njit(inline="always", **_KERNEL)
    def _ws(buf: Any, p: int, end: int) -> int:
        while p < end:
            c = buf[p]
            if c != 32 and c != 9 and c != 10 and c != 13:
                break
            p += 1
        return p

    @numba.njit(inline="always", **_KERNEL)
    def _string_end(buf: Any, p: int, end: int) -> int:
        """`p` just after an opening quote: the index of the closing quote, or -1 (escape, control or non-ASCII)."""
        while p < end:
            c = buf[p]
            if c == 34:
                return p
            if c == 92 or c < 32 or c >= 128:
                return -1
            p += 1
        return -1

    @numba.njit(inline="always", **_KERNEL)
    def _string_value(buf: Any, p: int, end: int) -> int:
        """A string value at `p`: the index of its closing quote, or -1 (not a string, or not one we read)."""
        if buf[p] != 34:
            return -1
        return _string_end(buf, p + 1, end)

    @numba.njit(inline="always", **_KERNEL)
    def _uint(buf: Any, p: int, end: int) -> tuple[int, int]:
        """A JSON integer at `p` with 1-18 digits, no sign, no leading zero, no fraction or exponent: (value, the
        index after it), or (-1, -1)."""
        q = p
        v = 0
        while q < end and 48 <= buf[q] <= 57 and q - p < 18:
            v = v * 10 + (buf[q] - 48)
            q += 1
        if q == p or (buf[p] == 48 and q - p > 1):
            return -1, -1
        if q < end and (46 <= buf[q] <= 57 or buf[q] == 101 or buf[q] == 69):
            return -1, -1  # a 19th digit, a fraction, an exponent (or '/': not JSON either)
        return v, q

    @numba.njit(inline="always", **_KERNEL)
    def _number(buf: Any, p: int, end: int, base: int, out: Any) -> int:
        """A JSON number at `p` into out[0] (float64, as msgspec converts it): the index after it, or -1."""
        start = p
        neg = False
        if p < end and buf[p] == 45:
            neg = True
            p += 1
        if p >= end:
            return -1
        mant = np.uint64(0)
        digits = 0  # significant digits in `mant`
        exp10 = 0
        c = buf[p]
        if c == 48:  # a leading 0 stands alone
            p += 1
            if p < end and 48 <= buf[p] <= 57:
                return -1
        elif 49 <= c <= 57:
            while p < end and 48 <= buf[p] <= 57:
                if digits < 19:
                    mant = mant * np.uint64(10) + np.uint64(buf[p] - 48)
                    digits += 1
                else:
                    return -1  # integers this long: msgspec's rules for them are its own
                p += 1
        else:
            return -1
        fractional = False  # a fraction or an exponent: else the literal is an integer
        if p < end and buf[p] == 46:
            fractional = True
            p += 1
            if p >= end or not 48 <= buf[p] <= 57:
                return -1
            while p < end and 48 <= buf[p] <= 57:
                if digits < 19:
                    if digits > 0 or buf[p] != 48:
                        mant = mant * np.uint64(10) + np.uint64(buf[p] - 48)
                        digits += 1
                    exp10 -= 1
                else:
                    digits = 99  # past 19 digits: strtod
                p += 1
        if p < end and (buf[p] == 101 or buf[p] == 69):
            fractional = True
            p += 1
            eneg = False
            if p < end and (buf[p] == 43 or buf[p] == 45):
                eneg = buf[p] == 45
                p += 1
            if p >= end or not 48 <= buf[p] <= 57:
                return -1
            e = 0
            while p < end and 48 <= buf[p] <= 57:
                if e > 10_000:
                    return -1
                e = e * 10 + (buf[p] - 48)
                p += 1
            exp10 += -e if eneg else e
        if exp10 > 300 or exp10 < -300:
            return -1  # overflow and underflow: the msgspec path decides
        if mant == np.uint64(0) and not fractional:
            out[0] = 0.0  # msgspec reads an integer -0 as the int 0, then the float 0.0
            return p
        if digits <= 19 and mant <= np.uint64(_TWO53) and -22 <= exp10 <= 22:
            v = float(mant)
            v = v * _POW10[exp10] if exp10 >= 0 else v / _POW10[-exp10]
        else:
            v = _strtod(base + start, out.ctypes.data + 8)  # type: ignore[call-overload]  # end pointer -> out[1]
            endp = out.view(np.int64)[1]
            if endp != base + p or not np.isfinite(v):
                return -1
            out[0] = v
            return p
        out[0] = -v if neg else v
        return p

    @numba.njit(inline="always", **_KERNEL)
    def _two(buf: Any, p: int) -> int:
        a, b = buf[p] - 48, buf[p + 1] - 48
        if not (0 <= a <= 9 and 0 <= b <= 9):
            return -1
        return a * 10 + b

    @numba.njit(inline="always", **_KERNEL)
    def _rfc3339(buf: Any, p: int, q: int) -> int:
        """`YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` in buf[p:q] -> ns since epoch; -1 when it is not in that form."""
        n = q - p
        if n < 20 or n == 21 or n > 30:
            return -1
        if buf[p + 4] != 45 or buf[p + 7] != 45 or buf[p + 10] != 84 or buf[p + 13] != 58 or buf[p + 16] != 58:
            return -1
        if buf[q - 1] != 90:
            return -1
        hi, lo = _two(buf, p), _two(buf, p + 2)
        month, day = _two(buf, p + 5), _two(buf, p + 8)
        hour, minute, sec = _two(buf, p + 11), _two(buf, p + 14), _two(buf, p + 17)
        if hi < 0 or lo < 0 or month < 0 or day < 0 or hour < 0 or minute < 0 or sec < 0:
            return -1
        year = hi * 100 + lo
        if year < 1970 or year >= 2200 or not 1 <= month <= 12 or day < 1 or hour > 23 or minute > 59 or sec > 59:
            return -1
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        dim = 31
        if month == 2:
            dim = 29 if leap else 28
        elif month == 4 or month == 6 or month == 9 or month == 11:
            dim = 30
        if day > dim:
            return -1
        frac = 0
        if n > 20:
            if buf[p + 19] != 46:
                return -1
            k = p + 20
            width = 0
            while k < q - 1:
                d = buf[k] - 48
                if not 0 <= d <= 9:
                    return -1
                frac = frac * 10 + d
                width += 1
                k += 1
            while width < 9:
                frac *= 10
                width += 1
        # Days from the civil date (H. Hinnant's algorithm), in the proleptic Gregorian calendar.
        y = year - 1 if month <= 2 else year
        era = y // 400
        yoe = y - era * 400
        mp = month - 3 if month > 2 else month + 9
        doy = (153 * mp + 2) // 5 + day - 1
        doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
        days = era * 146097 + doe - 719468
        return (((days * 24 + hour) * 60 + minute) * 60 + sec) * 1_000_000_000 + frac

    @numba.njit(inline="always", **_KERNEL)
    def _member(buf: Any, p: int, end: int) -> tuple[int, int]:
        """An object member's key at `p` (its opening quote): (the key's closing quote, where the value starts), or
        (-1, -1) when it is not `"key" : value` with a key the scanner reads."""
        if p >= end or buf[p] != 34:
            return -1, -1
        k1 = _string_end(buf, p + 1, end)
        if k1 < 0:
            return -1, -1
        q = _ws(buf, k1 + 1, end)
        if q >= end or buf[q] != 58:
            return -1, -1
        q = _ws(buf, q + 1, end)
        if q >= end:
            return -1, -1
        return k1, q

    @numba.njit(inline="always", **_KERNEL)
    def _next_member(buf: Any, p: int, end: int) -> tuple[int, int]:
        """After a member's value: (the next member's start, 1) after a comma, (just past the object, 0) at its
        closing brace, (-1, -1) otherwise."""
        p = _ws(buf, p, end)
        if p < end and buf[p] == 44:
            return _ws(buf, p + 1, end), 1
        if p < end and buf[p] == 125:
            return p + 1, 0
        return -1, -1

    @numba.njit(inline="always", **_KERNEL)
    def _symbol_code(buf: Any, s_off: int, s_len: int, sym_off: Any, sym_len: Any, n_syms: int) -> int:
        """The symbol at `buf[s_off:s_off + s_len]`'s number, by first appearance in the call: an earlier one's, or
        `n_syms` (the caller records it), or -1 when the table is full."""
        for j in range(n_syms):
            if sym_len[j] == s_len:
                same = True
                for b in range(s_len):
                    if buf[sym_off[j] + b] != buf[s_off + b]:
                        same = False
                        break
                if same:
                    return j
        return n_syms if n_syms < len(sym_off) else -1

    @numba.njit(inline="always", **_KERNEL)
    def _skip_scalar(buf: Any, p: int, end: int, base: int, tmp: Any) -> int:
        c = buf[p]
        if c == 34:
            q = _string_end(buf, p + 1, end)
            return -1 if q < 0 else q + 1
        if c == 45 or 48 <= c <= 57:
            return _number(buf, p, end, base, tmp)
        if c == 116 and p + 4 <= end and buf[p + 1] == 114 and buf[p + 2] == 117 and buf[p + 3] == 101:
            return p + 4  # true
        if c == 110 and p + 4 <= end and buf[p + 1] == 117 and buf[p + 2] == 108 and buf[p + 3] == 108:
            return p + 4  # null
        if (
            c == 102 and p + 5 <= end and buf[p + 1] == 97 and buf[p + 2] == 108 and buf[p + 3] == 115
            and buf[p + 4] == 101
        ):  # fmt: skip
            return p + 5  # false
        return -1

    @numba.njit(inline="always", **_KERNEL)
    def _skip_value(buf: Any, p: int, end: int, base: int, tmp: Any) -> int:
        """An unknown field's value: a scalar or a flat array of scalars (anything else: -1)."""
        if buf[p] != 91:
            return _skip_scalar(buf, p, end, base, tmp)
        p = _ws(buf, p + 1, end)
        if p < end and buf[p] == 93:
            return p + 1
        while p < end:
            p = _skip_scalar(buf, p, end, base, tmp)
            if p < 0:
                return -1
            p = _ws(buf, p, end)
            if p >= end:
                return -1
            if buf[p] == 93:
                return p + 1
            if buf[p] != 44:
                return -1
            p = _ws(buf, p + 1, end)
        return -1

    @numba.njit(inline="always", **_KERNEL)
    def _columns(ints: Any, floats: Any, syms: Any) -> tuple[Any, Any, Any, Any, Any, Any, Any]:
        """The output columns as rows of three blocks (three allocations and arguments where there were seven:
        numpy's and numba's per-call costs count on short runs): symbol code, time and id; price and size; each
        distinct symbol's offset and length in the buffer."""
        return ints[0], ints[1], ints[2], floats[0], floats[1], syms[0], syms[1]

    @numba.njit(nogil=True, **_KERNEL)
    def _scan(
        fmt: int, buf: Any, fstarts: Any, xhash: Any, counts: Any, ints: Any, floats: Any, syms: Any, tmp: Any
    ) -> tuple[int, int, int]:
        """Frames `fstarts[f]:fstarts[f+1]` of `buf` until the first one not in the form (see the module): returns
        (frames taken, trades, distinct symbols), the columns filled up to them (`_columns`)."""
        base = buf.ctypes.data
        code, ts, tid, px, sz, sym_off, sym_len = _columns(ints, floats, syms)
        n_frames = len(fstarts) - 1
        tag = 116 if fmt == ALPACA else 84  # the trade event's tag: "t" (Alpaca `T`), "T" (Polygon `ev`)
        n = 0
        n_syms = 0
        taken = 0
        for f in range(n_frames):
            p, end = fstarts[f], fstarts[f + 1]
            first = n
            n_syms_before = n_syms
            ok = True
            p = _ws(buf, p, end)
            if p >= end or buf[p] != 91:
                break
            p = _ws(buf, p + 1, end)
            while ok:  # one trade object per round
                if p >= end or buf[p] != 123 or n >= len(ts):
                    ok = False
                    break
                p = _ws(buf, p + 1, end)
                seen = 0
                s_off, s_len, t_id = 0, 0, 0
                x_lane = np.uint64(0)
                price, size, t_ns = 0.0, 0.0, 0
                if p < end and buf[p] == 125:
                    ok = False
                    break
                while True:  # members
                    k0 = p + 1
                    k1, p = _member(buf, p, end)
                    if k1 < 0:
                        ok = False
                        break
                    klen = k1 - k0
                    key = buf[k0]
                    bit = _KEY_BITS[fmt, key] if klen == 1 else 0
                    if fmt == POLYGON and klen == 2 and key == 101 and buf[k0 + 1] == 118:
                        bit = 1  # ev
                    elif fmt == POLYGON and klen == 3 and key == 115 and buf[k0 + 1] == 121 and buf[k0 + 2] == 109:
                        bit = 2  # sym
                    if bit == 1:  # the event tag: one character, "t" (Alpaca) or "T" (Polygon)
                        if p + 3 > end or buf[p] != 34 or buf[p + 1] != tag or buf[p + 2] != 34:
                            ok = False
                            break
                        p += 3
                    elif bit == 2:  # the symbol
                        q = _string_value(buf, p, end)
                        if q < 0:
                            ok = False
                            break
                        s_off, s_len = p + 1, q - p - 1
                        p = q + 1
                    elif bit == 4:  # the id: an int (Polygon: or a string of one, read as that int)
                        quoted = fmt == POLYGON and buf[p] == 34
                        t_id, q = _uint(buf, p + 1 if quoted else p, end)
                        if q < 0 or (quoted and (q >= end or buf[q] != 34)):
                            ok = False
                            break
                        p = q + 1 if quoted else q
                    elif bit == 8:  # the exchange: one ASCII character (Alpaca), an int (Polygon)
                        if fmt == ALPACA:
                            if p + 3 > end or buf[p] != 34 or buf[p + 2] != 34:
                                ok = False
                                break
                            c = buf[p + 1]
                            if c < 32 or c >= 127 or c == 34 or c == 92:
                                ok = False
                                break
                            x_lane = xhash[c]
                            p += 3
                        else:
                            x, p = _uint(buf, p, end)
                            if p < 0:
                                ok = False
                                break
                            x_lane = np.uint64(x)  # an int's hash is itself (below 2**61 - 1)
                    elif bit == 16 or bit == 32:  # price, size
                        p = _number(buf, p, end, base, tmp)
                        if p < 0:
                            ok = False
                            break
                        if bit == 16:
                            price = tmp[0]
                        else:
                            size = tmp[0]
                    elif bit == 64:  # the time: RFC 3339 (Alpaca), Unix ms (Polygon)
                        if fmt == ALPACA:
                            q = _string_value(buf, p, end)
                            t_ns = _rfc3339(buf, p + 1, q) if q >= 0 else -1
                            p = q + 1
                        else:
                            t_ms, p = _uint(buf, p, end)
                            t_ns = t_ms * 1_000_000 if 0 <= t_ms <= MAX_MS else -1
                        if t_ns < 0 or p < 0:
                            ok = False
                            break
                    if bit == 0:
                        p = _skip_value(buf, p, end, base, tmp)
                        if p < 0:
                            ok = False
                            break
                    elif seen & bit:
                        ok = False  # a field twice: the msgspec path decides
                        break
                    seen |= bit
                    p, more = _next_member(buf, p, end)
                    if p < 0:
                        ok = False
                    if more != 1:
                        break
                if not ok:
                    break
                if seen != 127:
                    ok = False
                    break
                c = _symbol_code(buf, s_off, s_len, sym_off, sym_len, n_syms)
                if c < 0:
                    ok = False
                    break
                if c == n_syms:
                    sym_off[c], sym_len[c] = s_off, s_len
                    n_syms += 1
                acc = _P5
                acc += x_lane * _P2
                acc = (acc << np.uint64(31)) | (acc >> np.uint64(33))
                acc *= _P1
                acc += np.uint64(t_id) * _P2
                acc = (acc << np.uint64(31)) | (acc >> np.uint64(33))
                acc *= _P1
                acc += _LEN2
                if acc == np.uint64(0xFFFFFFFFFFFFFFFF):
                    acc = np.uint64(1546275796)
                code[n], ts[n], px[n], sz[n], tid[n] = c, t_ns, price, size, np.int64(acc)
                n += 1
                p = _ws(buf, p, end)
                if p < end and buf[p] == 44:
                    p = _ws(buf, p + 1, end)
                    continue
                if p < end and buf[p] == 93:
                    p = _ws(buf, p + 1, end)
                    if p != end:
                        ok = False
                    break
                ok = False
            if not ok:
                n = first
                n_syms = n_syms_before
                break
            counts[f] = n - first
            taken = f + 1
        return taken, n, n_syms


if _JIT:
    # Not inlined (unlike the helpers above): one compiled copy each, called from the Binance kernel's few sites,
    # keeps its first compile in seconds (inlined, every site copied `_number` and LLVM took most of a minute).
    @numba.njit(**_KERNEL)
    def _skip_value_call(buf: Any, p: int, end: int, base: int, tmp: Any) -> int:
        return _skip_value(buf, p, end, base, tmp)

    @numba.njit(**_KERNEL)
    def _number_value(buf: Any, p: int, end: int, base: int, tmp: Any) -> int:
        """A number at `p`, bare or in quotes (Binance quotes prices; msgspec's `strict=False` reads a quoted
        number by the JSON grammar, as it reads a bare one) into tmp[0]: the index after it, or -1."""
        if buf[p] != 34:
            return _number(buf, p, end, base, tmp)
        q = _number(buf, p + 1, end, base, tmp)
        if q < 0 or q >= end or buf[q] != 34:
            return -1
        return q + 1

    @numba.njit(nogil=True, **_KERNEL)
    def _scan_binance(buf: Any, fstarts: Any, ints: Any, floats: Any, syms: Any, tmp: Any) -> tuple[int, int]:
        """Binance combined-stream frames `{"stream":"<sym>@trade","data":{<trade>}}`, one trade each, until the
        first one not in that form or not a trade `parse_frame` takes whole (an event type other than "trade", a
        symbol not the stream's, a negative id): returns (frames taken, distinct symbols), the columns filled."""
        base = buf.ctypes.data
        code, ts, tid, px, sz, sym_off, sym_len = _columns(ints, floats, syms)
        n_frames = len(fstarts) - 1
        n_syms = 0
        taken = 0
        for f in range(n_frames):
            p, end = fstarts[f], fstarts[f + 1]
            p = _ws(buf, p, end)
            if p >= end or buf[p] != 123:
                break
            p = _ws(buf, p + 1, end)
            ok = True
            outer = 0  # 1: stream, 2: data
            inner = 0  # 1: e, 2: s, 4: t, 8: p, 16: q, 32: T
            st_off, st_len, s_off, s_len = 0, 0, 0, 0
            t_id, t_ns, price, size = 0, 0, 0.0, 0.0
            while ok:  # the envelope's members
                k0 = p + 1
                k1, p = _member(buf, p, end)
                if k1 < 0:
                    ok = False
                    break
                klen = k1 - k0
                if klen == 6 and buf[k0] == 115 and buf[k0 + 1] == 116 and buf[k0 + 5] == 109:  # "stream"
                    if outer & 1 or buf[k0 + 2] != 114 or buf[k0 + 3] != 101 or buf[k0 + 4] != 97:
                        ok = False
                        break
                    q = _string_value(buf, p, end)
                    if q < 0:
                        ok = False
                        break
                    st_off, st_len = p + 1, q - p - 1
                    outer |= 1
                    p = q + 1
                elif klen == 4 and buf[k0] == 100 and buf[k0 + 1] == 97 and buf[k0 + 2] == 116 and buf[k0 + 3] == 97:
                    if outer & 2 or buf[p] != 123:  # "data": the trade object
                        ok = False
                        break
                    outer |= 2
                    p = _ws(buf, p + 1, end)
                    while ok:  # the trade's members
                        j0 = p + 1
                        j1, p = _member(buf, p, end)
                        if j1 < 0:
                            ok = False
                            break
                        bit = _KEY_BITS[BINANCE, buf[j0]] if j1 - j0 == 1 else 0
                        if bit and inner & bit:
                            ok = False  # a field twice: the msgspec path decides
                            break
                        inner |= bit
                        if bit == 1:  # the event type: "trade", else not a trade `parse_frame` takes
                            if (
                                p + 7 > end or buf[p] != 34 or buf[p + 1] != 116 or buf[p + 2] != 114
                                or buf[p + 3] != 97 or buf[p + 4] != 100 or buf[p + 5] != 101 or buf[p + 6] != 34
                            ):  # fmt: skip
                                ok = False
                                break
                            p += 7
                        elif bit == 2:
                            q = _string_value(buf, p, end)
                            if q < 0:
                                ok = False
                                break
                            s_off, s_len = p + 1, q - p - 1
                            p = q + 1
                        elif bit == 4:
                            t_id, p = _uint(buf, p, end)
                        elif bit == 8 or bit == 16:
                            p = _number_value(buf, p, end, base, tmp)
                            if bit == 8:
                                price = tmp[0]
                            else:
                                size = tmp[0]
                        elif bit == 32:
                            t_ms, p = _uint(buf, p, end)
                            t_ns = t_ms * 1_000_000 if 0 <= t_ms <= MAX_MS else -1
                            if t_ns < 0:
                                ok = False
                                break
                        else:
                            p = _skip_value_call(buf, p, end, base, tmp)
                        if p < 0:
                            ok = False
                            break
                        p, more = _next_member(buf, p, end)
                        if p < 0:
                            ok = False
                        if more != 1:
                            break
                    if not ok:
                        break
                else:
                    p = _skip_value_call(buf, p, end, base, tmp)
                    if p < 0:
                        ok = False
                        break
                p, more = _next_member(buf, p, end)
                if p < 0 or (more == 0 and _ws(buf, p, end) != end):  # nothing may follow the envelope
                    ok = False
                if more != 1:
                    break
            if not ok or outer != 3 or inner | 1 != 63:  # "e" may be left out (msgspec's default: "trade")
                break
            # The stream is "<symbol>@trade", its symbol the trade's in lower case without "/" (`binance._names`).
            at = -1
            for k in range(st_len):
                if buf[st_off + k] == 64:
                    at = k
                    break
            if at <= 0 or st_len - at - 1 != 5:
                break
            b = st_off + at + 1
            if buf[b] != 116 or buf[b + 1] != 114 or buf[b + 2] != 97 or buf[b + 3] != 100 or buf[b + 4] != 101:
                break
            k = 0
            for j in range(s_len):
                c = buf[s_off + j]
                if c == 47:
                    continue
                if 65 <= c <= 90:
                    c += 32
                if k >= at or buf[st_off + k] != c:
                    k = -1
                    break
                k += 1
            if k != at:
                break
            c = _symbol_code(buf, s_off, s_len, sym_off, sym_len, n_syms)
            if c < 0:
                break
            if c == n_syms:
                sym_off[c], sym_len[c] = s_off, s_len
                n_syms += 1
            code[f], ts[f], px[f], sz[f], tid[f] = c, t_ns, price, size, t_id
            taken = f + 1
        return taken, n_syms


def _as_bytes(raws: Sequence[bytes | str]) -> tuple[bytes, npt.NDArray[np.int64]] | None:
    """The frames joined, with each one's start (and the end); None when one is not ASCII text or bytes."""
    kinds = set(map(type, raws))
    if kinds == {str} or kinds == {bytes}:  # what a connection hands over: joined and checked at C speed
        joined = "".join(raws) if kinds == {str} else b"".join(raws)  # type: ignore[arg-type]
        if isinstance(joined, str):
            if not joined.isascii():
                return None  # non-ASCII only appears escaped in Alpaca's frames; the msgspec path decides
            joined = joined.encode("ascii")
        return joined, _starts(raws)  # ASCII text: as many bytes as characters
    parts: list[bytes] = []
    for r in raws:
        if isinstance(r, str):
            if not r.isascii():
                return None  # non-ASCII only appears escaped in Alpaca's frames; the msgspec path decides
            parts.append(r.encode("ascii"))
        elif isinstance(r, bytes | bytearray | memoryview):
            parts.append(bytes(r))
        else:
            return None
    return b"".join(parts), _starts(parts)


def _starts(parts: Sequence[bytes | str]) -> npt.NDArray[np.int64]:
    """Where each part starts once joined, and the end (in C for many parts; numpy's per-call costs dominate for a
    few)."""
    if len(parts) < 64:
        return np.array([0, *accumulate(map(len, parts))], dtype=np.int64)
    out = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)), out=out[1:])
    return out


def scan_alpaca_trades(raws: Sequence[bytes | str], start: int, stop: int | None = None) -> TradeFrames | None:
    """The longest run of Alpaca frames from `raws[start]` in the form the scanner takes, as `parse_trade_frames`
    returns them; None when `raws[start]` is not in that form (or the scanner is off)."""
    return _scan_run(ALPACA, raws, start, stop)


def scan_polygon_trades(raws: Sequence[bytes | str], start: int, stop: int | None = None) -> TradeFrames | None:
    """`scan_alpaca_trades` for Polygon frames (`ev: T` events; ids are `polygon.trade_key`)."""
    return _scan_run(POLYGON, raws, start, stop)


def scan_binance_trades(raws: Sequence[bytes | str], start: int, stop: int | None = None) -> TradeFrames | None:
    """`scan_alpaca_trades` for Binance `<symbol>@trade` frames (one trade each; ids are the trade ids)."""
    return _scan_run(BINANCE, raws, start, stop)


def _scan_run(fmt: int, raws: Sequence[bytes | str], start: int, stop: int | None) -> TradeFrames | None:
    if not ENABLED:
        return None
    stop = len(raws) if stop is None else stop
    joined = _as_bytes(raws[start:stop])
    if joined is None:
        return None
    data, starts = joined
    buf = np.frombuffer(data, dtype=np.uint8)
    nf = len(starts) - 1
    # Room for every trade a run can hold (counting '{' costs more); Binance frames hold one each.
    cap = nf if fmt == BINANCE else len(data) // _MIN_TRADE_BYTES + 1
    ints = np.empty((3, cap), dtype=np.int64)  # symbol code, time, id
    floats = np.empty((2, cap), dtype=np.float64)
    syms = np.empty((2, _MAX_SYMBOLS), dtype=np.int64)
    frame_starts, tmp = starts, np.empty(2, dtype=np.float64)
    if fmt == BINANCE:
        taken, n_syms = _scan_binance(buf, frame_starts, ints, floats, syms, tmp)
        n = taken
        counts = [1] * taken
    else:
        counts_a = np.zeros(nf, dtype=np.int64)
        taken, n, n_syms = _scan(fmt, buf, frame_starts, _XHASH, counts_a, ints, floats, syms, tmp)
        counts = counts_a[:taken].tolist()
    if taken == 0:
        return None
    offs, lens = syms[0, :n_syms].tolist(), syms[1, :n_syms].tolist()
    distinct = [data[o : o + ln].decode("ascii") for o, ln in zip(offs, lens, strict=True)]
    codes = ints[0, :n].astype(np.intp, copy=False)  # the same array where intp is int64 (64-bit platforms)
    symbol = [distinct[c] for c in codes.tolist()] if n < 64 else np.array(distinct, dtype=object)[codes].tolist()
    return TradeFrames(
        start, counts, symbol, ints[1, :n], floats[0, :n], floats[1, :n], ints[2, :n].tolist(), codes, distinct
    )


def _self_check() -> bool:
    """The scanner reads known frames as the Python rules do (its id hash above all); else it stays off."""
    alpaca = (
        b'[{"T":"t","S":"AAPL","i":52983525029461,"x":"V","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z",'
        b'"c":["@","I"],"z":"C"},{"T":"t","S":"MSFT","i":0,"x":"P","p":1240.4246534995414,"s":2.5e3,'
        b'"t":"2021-02-22T15:51:44Z"}]'
    )
    polygon = (
        b'[{"ev":"T","sym":"MSFT","x":4,"i":"12345","z":3,"p":114.125,"s":100,"c":[0,12],"t":1536036818784,'
        b'"q":3681328},{"ev":"T","sym":"AAPL","x":10,"i":7,"p":0.5,"s":1e2,"t":0}]'
    )
    binance = [
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1672515782136,"s":"BTCUSDT","t":12345,"p":"0.001",'
        b'"q":"100","T":1672515782136,"m":true,"M":true}}',
        b'{"stream":"eth@trade","data":{"s":"ETH","t":0,"p":"1240.4246534995414","q":2.5e3,"T":0}}',
    ]
    a, b, c = scan_alpaca_trades([alpaca], 0), scan_polygon_trades([polygon], 0), scan_binance_trades(binance, 0)
    return (
        a is not None
        and a.symbol == ["AAPL", "MSFT"]
        and a.ids == [hash(("V", 52983525029461)), hash(("P", 0))]
        and list(a.price) == [126.55, 1240.4246534995414]
        and list(a.size) == [1.0, 2500.0]
        and list(a.ts) == [1614009104208000000, 1614009104000000000]
        and b is not None
        and b.symbol == ["MSFT", "AAPL"]
        and b.ids == [hash((4, 12345)), hash((10, 7))]
        and list(b.price) == [114.125, 0.5]
        and list(b.size) == [100.0, 100.0]
        and list(b.ts) == [1536036818784000000, 0]
        and c is not None
        and (c.symbol, c.ids, list(c.ts)) == (["BTCUSDT", "ETH"], [12345, 0], [1672515782136000000, 0])
        and (list(c.price), list(c.size)) == ([0.001, 1240.4246534995414], [100.0, 2500.0])
    )


ENABLED = _JIT
_XHASH = _exchange_hashes()
if ENABLED:
    try:
        ENABLED = _self_check()
        OFF_BECAUSE = "" if ENABLED else "it disagrees with the Python rules on its self-check"
    except Exception as exc:  # a compile failure (a numba it does not know): the msgspec path serves
        ENABLED, OFF_BECAUSE = False, f"it failed to compile: {exc!r}"
    if not ENABLED:
        log.warning("trade scanner off (%s): the msgspec path parses every frame", OFF_BECAUSE)
