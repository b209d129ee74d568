"""RFC 3339 <-> integer nanoseconds, fast enough for the hot path.

Alpaca stamps every message with an RFC 3339 string carrying up to nine fractional digits; `datetime` keeps only
microseconds and costs ~1 us per call. A batched frame's timestamps share their first 19 characters (to the second),
so the whole-second part is cached and only the fraction is parsed per message.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

_NS = 1_000_000_000
_SECOND_CACHE: dict[str, int] = {}
_CACHE_LIMIT = 8192
_POW = [10 ** (9 - k) for k in range(10)]
# Nanoseconds are kept in int64 columns: a whole second must leave room for its fraction (years 1677-2262).
_MIN_BASE = -(2**63)
_MAX_BASE = 2**63 - _NS
# `date-time` to the second (RFC 3339 section 5.6; its note allows a space or lower-case t for the T).
_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}")
# What may follow: an optional fraction, then Z or a numeric offset.
_REST = re.compile(r"(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})")


def _seconds(prefix: str) -> int:
    cached = _SECOND_CACHE.get(prefix)
    if cached is not None:
        return cached
    if _PREFIX.fullmatch(prefix) is None:  # `int()` alone would take signs, spaces and non-ASCII digits
        raise ValueError(f"not an RFC 3339 timestamp: {prefix!r}")
    dt = datetime(
        int(prefix[0:4]),
        int(prefix[5:7]),
        int(prefix[8:10]),
        int(prefix[11:13]),
        int(prefix[14:16]),
        int(prefix[17:19]),
        tzinfo=UTC,
    )
    value = calendar.timegm(dt.timetuple()) * _NS
    _check_range(value, prefix)
    if len(_SECOND_CACHE) >= _CACHE_LIMIT:  # bounded: a long run must not grow it forever
        _SECOND_CACHE.clear()
    _SECOND_CACHE[prefix] = value
    return value


def parse_rfc3339_ns(text: str) -> int:
    """`'2021-02-22T15:51:44.208123456Z'` -> ns since epoch; offsets other than Z/+00:00 are honoured."""
    base = _seconds(text[:19])
    rest = text[19:]
    if rest == "Z" or rest == "z":
        return base
    if rest[:1] == "." and rest[-1:] in ("Z", "z"):
        digits = rest[1:-1]
        if not (digits.isascii() and digits.isdigit()):  # `isdigit` alone takes other scripts' digits
            raise ValueError(f"bad fraction in timestamp {text!r}")
        if len(digits) <= 9:
            return base + int(digits) * _POW[len(digits)]
        return base + int(digits[:9])  # more than 9 digits: keep nanoseconds
    # General offsets (rare on the wire): the whole seconds shifted by the offset, the fraction kept to the ns.
    match = _REST.fullmatch(rest)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp (fraction, then Z or +hh:mm): {text!r}")
    digits, zone = match.groups()
    frac_ns = int(digits[:9].ljust(9, "0")) if digits else 0
    if zone in ("Z", "z"):
        return base + frac_ns
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError(f"bad UTC offset in timestamp {text!r}")
    offset_ns = (hours * 3600 + minutes * 60) * _NS
    base = base - offset_ns if zone[0] == "+" else base + offset_ns
    _check_range(base, text)
    return base + frac_ns


def _check_range(base_ns: int, text: str) -> None:
    """Refuse a time whose nanoseconds do not fit in int64 (a ValueError, like any other bad timestamp, rather than
    an OverflowError where the columns are built)."""
    if not _MIN_BASE <= base_ns <= _MAX_BASE:
        raise ValueError(f"timestamp {text!r} is outside the int64 nanosecond range (years 1677-2262)")


def parse_rfc3339_batch(texts: list[str]) -> list[int]:
    """`parse_rfc3339_ns` over a frame's timestamps (see `parse_rfc3339_array` for the vectorized fast path)."""
    if len(texts) >= 8:
        fast = _batch_same_second(texts)
        if fast is not None:
            result: list[int] = fast.tolist()
            return result
    return _batch_loop(texts)


def parse_rfc3339_array(texts: list[str]) -> npt.NDArray[np.int64]:
    """`parse_rfc3339_ns` over a frame's timestamps, as an int64 array; raises ValueError like the scalar parse.

    Fast path (a frame's trades usually fall in one second and share the fraction width): the strings are joined
    and viewed as a numpy byte matrix, and the fraction digits become one dot product (~0.05 us per timestamp).
    Otherwise a per-string loop with the whole-second prefix cached. Both give exactly `parse_rfc3339_ns`.
    """
    if len(texts) >= 8:
        fast = _batch_same_second(texts)
        if fast is not None:
            return fast
    return np.array(_batch_loop(texts), dtype=np.int64)


def _batch_loop(texts: list[str]) -> list[int]:
    cache = _SECOND_CACHE
    pow10 = _POW
    out: list[int] = []
    append = out.append
    for s in texts:
        base = cache.get(s[:19])
        if base is None:
            base = _seconds(s[:19])
        if s[19:20] == "." and s[-1:] == "Z" and s.isascii() and s[20:-1].isdigit():
            frac = s[20:-1]
            append(base + int(frac) * pow10[len(frac)] if len(frac) <= 9 else base + int(frac[:9]))
        else:
            append(parse_rfc3339_ns(s))
    return out


def _batch_same_second(texts: list[str]) -> npt.NDArray[np.int64] | None:
    """All of `texts` as `YYYY-MM-DDTHH:MM:SS.<d digits>Z` with one width (1 <= d <= 9), or None. The whole
    seconds come from `_seconds` once per run of equal prefixes (a frame's, or a batch of frames', trades are in
    time order, so there are few runs); the fractions from one dot product."""
    first = texts[0]
    width = len(first)
    digits = width - 21
    if not 0 < digits <= 9 or first[19] != "." or first[-1] != "Z":
        return None
    n = len(texts)
    # Joined with a separator after each, so that a row of the byte matrix is one string: joined bare, strings of
    # other widths whose lengths add up (`...:44.2` then `Z2021-...`) would make rows that look well-formed. Every
    # byte of a row is checked below (the prefix through `_seconds`) and none but its last may be the separator,
    # so the n separators sit at the rows' ends and every string has the first one's width.
    joined = "|".join(texts)
    if len(joined) != (width + 1) * n - 1 or not joined.isascii():
        return None
    a = np.frombuffer((joined + "|").encode("ascii"), dtype=np.uint8).reshape(n, width + 1)
    d = a[:, 20 : width - 1] - _ZERO  # uint8: a non-digit wraps above 9
    if d.max() > 9 or not (a[:, width - 1] == _Z).all() or not (a[:, width] == _SEP).all():
        return None
    out: npt.NDArray[np.int64] = d @ _WEIGHTS[digits]
    # Runs of one 20-character prefix (to the second and the dot): neighbours compared as five 4-byte words (a
    # copy, as the rows are not aligned), column by column, which costs a third of comparing the bytes.
    words = a[:, :20].copy().view(np.uint32)
    ne = words[1:] != words[:-1]
    change = ne[:, 0] | ne[:, 1] | ne[:, 2] | ne[:, 3] | ne[:, 4]
    cache = _SECOND_CACHE
    if not change.any():
        prefix = a[0, :19].tobytes().decode("ascii")
        base = cache.get(prefix)
        out += base if base is not None else _seconds(prefix)
        return out
    bounds = [0, *(np.flatnonzero(change) + 1).tolist(), n]
    prefixes = [a[i, :20].tobytes().decode("ascii") for i in bounds[:-1]]  # from the rows: they are what is checked
    if any(p[19] != "." for p in prefixes):  # each run's rows share its first one's
        return None
    bases = []
    for p in prefixes:
        base = cache.get(p[:19])
        bases.append(base if base is not None else _seconds(p[:19]))
    out += np.repeat(np.array(bases, dtype=np.int64), np.diff(bounds))
    return out


_ZERO = np.uint8(48)
_Z = np.uint8(90)
_SEP = np.uint8(124)  # "|"
# Fraction digit weights in nanoseconds for 1..9 digits: '.5' is 500_000_000 ns.
_WEIGHTS = {k: 10 ** np.arange(8, 8 - k, -1, dtype=np.int64) for k in range(1, 10)}


def format_rfc3339_ns(ns: int) -> str:
    """ns since epoch -> `'YYYY-MM-DDTHH:MM:SS.fffffffffZ'` (what Alpaca sends)."""
    seconds, frac = divmod(int(ns), _NS)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def ns_to_datetime(ns: int) -> datetime:
    """ns since epoch -> aware UTC datetime (microsecond precision)."""
    return datetime.fromtimestamp(ns // 1000 / 1_000_000, UTC)


def datetime_to_ns(when: datetime) -> int:
    """Aware datetime -> ns since epoch (naive is refused: time must say its zone)."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: give a timezone-aware UTC time")
    return calendar.timegm(when.astimezone(UTC).timetuple()) * _NS + when.microsecond * 1000
