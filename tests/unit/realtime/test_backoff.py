"""`backoff_delay`: full-jitter exponential backoff, uniform in [0, min(max, base * 2**attempt)]."""

from __future__ import annotations

import random
import statistics

import pytest

from gpt_trader.realtime.feed import backoff_delay

BASE, CAP = 0.2, 10.0


class _Ceiling(random.Random):
    """Draws the top of every range: the envelope the jitter is drawn under."""

    def uniform(self, a: float, b: float) -> float:
        return b


class _Floor(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def test_backoff_envelope_doubles_per_attempt_until_the_cap() -> None:
    tops = [backoff_delay(a, BASE, CAP, _Ceiling()) for a in range(10)]
    assert tops == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0, 10.0])
    assert backoff_delay(10_000, BASE, CAP, _Ceiling()) == CAP  # a long outage neither overflows nor exceeds it
    assert backoff_delay(3, BASE, 0.5, _Ceiling()) == 0.5
    assert {backoff_delay(a, BASE, CAP, _Floor()) for a in range(10)} == {0.0}  # full jitter starts at zero


@pytest.mark.parametrize("attempt", [0, 2, 5, 9, 40])
def test_backoff_full_jitter_within_bounds_and_spread_over_them(attempt: int) -> None:
    rng = random.Random(1234)
    top = min(CAP, BASE * 2**attempt)
    draws = [backoff_delay(attempt, BASE, CAP, rng) for _ in range(4000)]
    assert all(0.0 <= d <= top for d in draws)
    # Uniform on [0, top]: reaches both ends of the range and centres on top / 2 (seeded, so deterministic).
    assert min(draws) < 0.02 * top
    assert max(draws) > 0.98 * top
    assert statistics.fmean(draws) == pytest.approx(top / 2, rel=0.05)


def test_backoff_seeded_rng_reproducible() -> None:
    def schedule(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [backoff_delay(a, BASE, CAP, rng) for a in range(20)]

    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)


def test_backoff_zero_base_retries_at_once() -> None:
    assert backoff_delay(5, 0.0, CAP, random.Random(0)) == 0.0
