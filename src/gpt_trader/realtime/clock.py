"""Per-source clock-offset estimation: how far a source's exchange clock is from ours.

Every frame gives one sample `receive_time - exchange_time = offset + network/queueing delay`. Delay is never
negative, so the smallest sample in a sliding window is the best estimate of the offset (the NTP idea); the window
lets the estimate follow a clock that is corrected or drifts. `source_now()` is our clock read in the source's time,
which advances event-time windows while a feed is quiet.
"""

from __future__ import annotations

from collections import deque


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
        sample = receive_ns - exchange_ns
        mins = self._mins
        seq = self._seq
        while mins and mins[-1][1] >= sample:
            mins.pop()
        mins.append((seq, sample))
        if mins[0][0] <= seq - self.window:  # at most one falls out per sample: the oldest
            mins.popleft()
        self._seq = seq + 1
        self.samples += 1
        self.last_sample_ns = sample
        return mins[0][1]

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
