"""Bar timeframes such as `1s`, `5m`, `1h`, `1d`: parsing and conversion."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^(\d+)([smhdw])$")


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A fixed bar length; `str()` gives the canonical spelling used in file names and polars durations."""

    count: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """Parse `'1d'`, `'15m'`, ... and reject anything else with the offending text named."""
        match = _PATTERN.match(text.strip())
        if not match or int(match.group(1)) <= 0:
            raise ValueError(f"invalid timeframe {text!r}: expected <positive int><s|m|h|d|w>, e.g. '1m', '1d'")
        return cls(int(match.group(1)), match.group(2))

    @property
    def seconds(self) -> int:
        """Length in seconds."""
        return self.count * _UNITS[self.unit]

    @property
    def delta(self) -> timedelta:
        """Length as a timedelta."""
        return timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"
