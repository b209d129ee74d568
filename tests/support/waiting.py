"""Waiting on a condition inside an event loop, for tests that drive servers and pipelines on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_until(predicate: Callable[[], bool], limit_secs: float = 10.0, step: float = 0.01) -> bool:
    """Poll `predicate` every `step` seconds until it holds or `limit_secs` pass; returns its last value."""
    deadline = time.monotonic() + limit_secs
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()
