from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpt_trader.core.clock import SimClock, SystemClock
from gpt_trader.core.timeframe import Timeframe


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1), ("5m", 300), ("1h", 3600), ("1d", 86400), ("2w", 1209600)])
def test_timeframe_parse_valid_gives_seconds(text, seconds):
    tf = Timeframe.parse(text)
    assert tf.seconds == seconds
    assert str(tf) == text
    assert tf.delta == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1", "0m", "-1d", "1mo", "1x", "m1"])
def test_timeframe_parse_invalid_names_text(text):
    with pytest.raises(ValueError, match="invalid timeframe"):
        Timeframe.parse(text)


def test_simclock_advances_and_refuses_going_back():
    clock = SimClock(datetime(2024, 1, 1, tzinfo=UTC))
    assert clock.advance(timedelta(seconds=5)) == datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(datetime(2023, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="naive"):
        SimClock(datetime(2024, 1, 1))  # noqa: DTZ001


def test_systemclock_is_utc():
    assert SystemClock().now().tzinfo is UTC
