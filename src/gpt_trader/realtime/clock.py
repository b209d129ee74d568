"""Per-source clock-offset estimation: how far a source's exchange clock is from ours.

Every frame gives one sample `receive_time - exchange_time = offset + network/queueing delay`. Delay is never
negative, so the smallest sample in a sliding window is the best estimate of the offset (the NTP idea); the window
lets the estimate follow a clock that is corrected or drifts. `source_now()` is our clock read in the source's time,
which advances event-time windows while a feed is quiet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class OffsetEstimator:
    """Sliding-window minimum of (receive - exchange) nanoseconds over the last `window` samples."""

    def __init__(self, window: int = 512) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self._seq = 0
        self._mins: deque[tuple[int, int]] = deque()  # (seq, sample), samples increasing: O(1) amortized min
        self.samples = 0
        self.last_sample_ns: int | None = None

    def observe(self, receive_ns: int, exchange_ns: int) -> int:
        """Add one sample (use the newest exchange timestamp of a frame: it has the least queueing); returns the
        offset estimate now (`offset_ns`)."""
        return self.observe_run(receive_ns, (exchange_ns,))[0]

    def observe_run(self, receive_ns: int, exchange_ns: Sequence[int], ahead_ns: int | None = None) -> list[int]:
        """`observe` for each exchange time in turn (frames received together at `receive_ns`); returns the offset
        estimate after each. With `ahead_ns`, stops before the first time more than that ahead of the source's clock
        as the samples before it estimate it (`receive_ns - offset_ns`; ours before the first sample): one the caller
        refuses, unobserved."""
        mins, seq, window = self._mins, self._seq, self.window
        out: list[int] = []
        for t in exchange_ns:
            if ahead_ns is not None and t > receive_ns - (mins[0][1] if mins else 0) + ahead_ns:
                break
            sample = receive_ns - t
            while mins and mins[-1][1] >= sample:
                mins.pop()
            mins.append((seq, sample))
            if mins[0][0] <= seq - window:  # at most one falls out per sample: the oldest
                mins.popleft()
            seq += 1
            out.append(mins[0][1])
        if out:
            self._seq = seq
            self.samples += len(out)
            self.last_sample_ns = receive_ns - exchange_ns[len(out) - 1]
        return out

    @property
    def offset_ns(self) -> int | None:
        """Estimated receive-minus-exchange clock offset (None before the first sample)."""
        return self._mins[0][1] if self._mins else None

    @property
    def last_delay_ns(self) -> int | None:
        """The latest sample's delay over the offset: transport plus queueing time."""
        offset = self.offset_ns
        return None if offset is None or self.last_sample_ns is None else self.last_sample_ns - offset

    def source_now_ns(self, receive_now_ns: int) -> int | None:
        """Our current time expressed on the source's clock (None before the first sample)."""
        offset = self.offset_ns
        return None if offset is None else receive_now_ns - offset

    def correct(self, exchange_ns: int) -> int | None:
        """An exchange timestamp expressed on our clock (None before the first sample)."""
        offset = self.offset_ns
        return None if offset is None else exchange_ns + offset

    def reset(self) -> None:
        """Forget all samples (after a reconnect to a different server, say)."""
        self._mins.clear()
        self.samples = 0
        self.last_sample_ns = None
