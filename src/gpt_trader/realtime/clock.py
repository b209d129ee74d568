"""Per-source clock-offset estimation: how far a source's exchange clock is from ours.

Every frame gives one sample `receive_time - exchange_time = offset + network/queueing delay`. Delay is never
negative, so the smallest sample in a sliding window is the best estimate of the offset (the NTP idea); the window
lets the estimate follow a clock that is corrected or drifts. `source_now()` is our clock read in the source's time,
which advances event-time windows while a feed is quiet.

The minimum trusts every sample not to be early, and one trade stamped ahead of the exchange's clock (a bad print)
breaks that: alone it would set the offset, put the source's clock ahead by as much for the whole window and let
bars close before their trades arrive. So with `outlier_ns`, a sample that would lower the estimate by more than that
counts only as the `confirm`-th such sample in a row, at distinct exchange times (the fills of one order share
theirs) and all within `outlier_ns` of each other; the step then taken is the least early of them. A clock that
really stepped (or a network that got faster) gets there a few frames later; an isolated bad print, or one order's
fills, never does. A sample set aside leaves the estimate and the last delay as they were.

The very first sample has nothing before it to be checked against: the estimate rests on it alone (`provisional`)
until a later one, at another exchange time, comes within `outlier_ns` of it. If instead `confirm` samples in a row
sit further above it and agree among themselves, it was a bad print: it is dropped (`first_dropped`) and the
estimate is theirs. Meanwhile the feed checks trades against our own clock (`Feed.clock_bound`), and batched runs
(`stop_early`) leave such frames to the frame-by-frame path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_VECTOR_MIN = 32  # samples in a run from which numpy beats the per-sample loop (`_observe_many`)


class OffsetEstimator:
    """Sliding-window minimum of (receive - exchange) nanoseconds over the last `window` samples."""

    def __init__(self, window: int = 512, outlier_ns: int | None = None, confirm: int = 3) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        if outlier_ns is not None and outlier_ns < 0:
            raise ValueError(f"outlier_ns must be >= 0 or None, got {outlier_ns}")
        if confirm < 1:
            raise ValueError(f"confirm must be at least 1, got {confirm}")
        self.window = window
        self.outlier_ns = outlier_ns
        self.confirm = confirm
        self.outliers = 0  # samples set aside as early (not confirmed by the next ones)
        self._early = 0  # consecutive samples below the estimate by more than `outlier_ns` that agree, so far
        self._early_run = (0, 0, 0)  # that run's last exchange time, its lowest and its highest sample
        # With `outlier_ns`: the estimate rests on the first sample alone until a later one comes within the margin
        # of it (`provisional`); `confirm` samples in a row further above it that agree among themselves say it was
        # stamped ahead (a bad print first), and it is dropped.
        self.provisional = False
        self.first_dropped = 0  # first samples dropped as stamped ahead (0 or 1)
        self._first = (0, 0, 0)  # the first sample's seq, exchange time and sample
        # Samples in a row above the first by more than the margin: count, lowest, highest, last exchange time.
        self._late_run = (0, 0, 0, 0)
        self._seq = 0
        self._mins: deque[tuple[int, int]] = deque()  # (seq, sample), samples increasing: O(1) amortized min
        self.samples = 0
        self.last_sample_ns: int | None = None

    def observe(self, receive_ns: int, exchange_ns: int) -> int:
        """Add one sample (use the newest exchange timestamp of a frame: it has the least queueing); returns the
        offset estimate now (`offset_ns`)."""
        return self.observe_run(receive_ns, (exchange_ns,))[0]

    def observe_run(
        self, receive_ns: int, exchange_ns: Sequence[int], ahead_ns: int | None = None, stop_early: bool = False
    ) -> list[int]:
        """`observe` for each exchange time in turn (frames received together at `receive_ns`); returns the offset
        estimate after each. An early sample set aside (see the module) leaves the estimate as it was.

        Stops before the first time a frame-by-frame caller treats differently, leaving it unobserved: with
        `ahead_ns`, one more than that ahead of the source's clock as the samples before it estimate it
        (`receive_ns - offset_ns`; ours before the first sample: it is refused); with `stop_early`, one that would
        be set aside (its frame does not move the bars' frontier)."""
        out = self._observe(receive_ns, exchange_ns, ahead_ns, stop_early)
        return out.tolist() if isinstance(out, np.ndarray) else out

    def observe_run_array(
        self,
        receive_ns: int,
        exchange_ns: npt.NDArray[np.int64],
        ahead_ns: int | None = None,
        stop_early: bool = False,
    ) -> npt.NDArray[np.int64]:
        """`observe_run` for exchange times in an int64 array, the offsets as one (a long run's columns stay
        arrays)."""
        out = self._observe(receive_ns, exchange_ns, ahead_ns, stop_early)
        return out if isinstance(out, np.ndarray) else np.array(out, dtype=np.int64)

    def _observe(
        self,
        receive_ns: int,
        exchange_ns: Sequence[int] | npt.NDArray[np.int64],
        ahead_ns: int | None,
        stop_early: bool,
    ) -> list[int] | npt.NDArray[np.int64]:
        mins, seq, window = self._mins, self._seq, self.window
        outlier = self.outlier_ns
        early = self._early
        run_t, run_lo, run_hi = self._early_run
        provisional, (first_seq, first_t, first_s) = self.provisional, self._first
        late, late_lo, late_hi, late_t = self._late_run
        n = len(exchange_ns)
        unsettled = outlier is not None and (not mins or provisional)
        if _VECTOR_MIN <= n <= window and not early and not unsettled and (outlier is None or stop_early):
            many = self._observe_many(receive_ns, exchange_ns, ahead_ns)
            if many is not None:
                return many
        if isinstance(exchange_ns, np.ndarray):
            exchange_ns = exchange_ns.tolist()  # the loop's samples stay Python ints
        out: list[int] = []
        last_kept: int | None = None  # the exchange time of the last sample taken in (not set aside)
        for t in exchange_ns:
            if ahead_ns is not None and t > receive_ns - (mins[0][1] if mins else 0) + ahead_ns:
                break
            if stop_early and outlier is not None and (not mins or provisional):
                break  # an estimate not settled yet: the frame-by-frame caller holds its frames' trades
            sample = receive_ns - t
            if outlier is not None and mins and sample < mins[0][1] - outlier:
                # Early. It carries on the run of early samples before it if it agrees with them; a repeat of the
                # run's last exchange time (another fill of one order) neither confirms nor breaks it.
                repeat = early > 0 and t == run_t
                if repeat:
                    count, lo, hi = early, run_lo, run_hi
                elif early and max(run_hi, sample) - min(run_lo, sample) <= outlier:
                    count, lo, hi = early + 1, min(run_lo, sample), max(run_hi, sample)
                else:
                    count, lo, hi = 1, sample, sample
                if repeat or count < self.confirm:
                    if stop_early:
                        break
                    early, run_t, run_lo, run_hi = count, t, lo, hi
                    self.outliers += 1
                    out.append(mins[0][1])
                    continue
                sample = hi  # the step the run confirms: its least early sample
                provisional = False  # a confirmed step replaces the first sample
            early = 0  # an ordinary sample, or the one that confirms a step
            first_ever = not mins
            while mins and mins[-1][1] >= sample:
                mins.pop()
            mins.append((seq, sample))
            if mins[0][0] <= seq - window:  # at most one falls out per sample: the oldest
                mins.popleft()
            if outlier is not None:
                if first_ever:
                    provisional, first_seq, first_t, first_s, late = True, seq, t, sample, 0
                elif provisional and seq - first_seq >= window:
                    provisional = False  # the first left the window: the estimate no longer rests on it
                elif provisional and t != first_t:  # another fill of the first frame's order says nothing
                    if sample - first_s <= outlier:
                        provisional = False  # it agrees with the first
                    elif not (late and t == late_t):  # nor does a repeat of the late run's last time
                        if late and max(late_hi, sample) - min(late_lo, sample) <= outlier:
                            late, late_lo, late_hi = late + 1, min(late_lo, sample), max(late_hi, sample)
                        else:
                            late, late_lo, late_hi = 1, sample, sample
                        late_t = t
                        if late >= self.confirm:  # the first was stamped ahead: the estimate rests on these
                            if mins[0][0] == first_seq:
                                mins.popleft()
                            provisional = False
                            self.first_dropped += 1
            seq += 1
            out.append(mins[0][1])
            last_kept = t
        self._early = early
        self._early_run = (run_t, run_lo, run_hi)
        self.provisional, self._first, self._late_run = (
            provisional,
            (first_seq, first_t, first_s),
            (late, late_lo, late_hi, late_t),
        )
        if out:
            self._seq = seq
            self.samples += len(out)
        if last_kept is not None:
            self.last_sample_ns = receive_ns - last_kept
        return out

    def _observe_many(
        self, receive_ns: int, exchange_ns: Sequence[int] | npt.NDArray[np.int64], ahead_ns: int | None
    ) -> npt.NDArray[np.int64] | None:
        """`observe_run`'s loop in array operations, for a run (no longer than the window) where no sample is set
        aside (the run stops before one that would be, as with `stop_early`): the estimate after each sample is the
        running minimum, and the samples that stay in the monotonic queue are those below every later one. None
        (the loop's turn) when the minimum would fall out of the window during the run."""
        mins = self._mins
        t = np.asarray(exchange_ns, dtype=np.int64)
        samples = receive_ns - t
        offsets = np.minimum.accumulate(samples)
        if mins:
            np.minimum(offsets, mins[0][1], out=offsets)
        before = np.empty_like(offsets)  # the estimate each sample meets (`ahead_ns` is measured from it)
        before[1:] = offsets[:-1]
        before[0] = mins[0][1] if mins else 0
        n = len(t)
        if ahead_ns is not None:
            ahead = t > receive_ns - before + ahead_ns
            if ahead.any():
                n = int(ahead.argmax())
        if self.outlier_ns is not None and self.confirm > 1:
            early = samples[:n] < before[:n] - self.outlier_ns  # settled estimates only (`_observe`): `mins` holds one
            if early.any():
                n = int(early.argmax())
        if not n:
            return offsets[:0]
        if mins:
            expires = mins[0][0] + self.window - self._seq  # the sample at which the minimum leaves the window
            if expires < n and not (samples[: expires + 1] <= mins[0][1]).any():  # unless one replaces it first
                return None
        samples, offsets = samples[:n], offsets[:n]
        low = int(samples.min())
        while mins and mins[-1][1] >= low:
            mins.pop()
        later = np.empty_like(samples)  # the smallest sample after each
        later[:-1] = np.minimum.accumulate(samples[:0:-1])[::-1]
        later[-1] = np.iinfo(np.int64).max
        stay = np.flatnonzero(samples < later)
        mins.extend(zip((stay + self._seq).tolist(), samples[stay].tolist(), strict=True))
        self._seq += n
        self.samples += n
        self.last_sample_ns = receive_ns - int(t[n - 1])
        return offsets

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
        self._early = 0
        self._early_run = (0, 0, 0)
        self.provisional, self._first, self._late_run = False, (0, 0, 0), (0, 0, 0, 0)
        self.samples = 0
        self.last_sample_ns = None
