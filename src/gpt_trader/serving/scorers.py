"""Scoring the served models once per bar timestamp, for every symbol that closed a bar at it.

A registered model is an MLflow pyfunc; calling `predict` on a data frame per symbol and bar re-scores the whole
window (the transformer every window in it, the RL policy a simulation over all its rows) behind MLflow's input
checks: ~100 ms per symbol. The live path instead unwraps GPT-Trader's own pyfuncs into fast scorers that read
the `FeatureBook`'s numpy rows and score all symbols of a timestamp together:

- `TransformerScorer`: the last window of each symbol, one batched forward pass (a multi-asset model gets its
  assets side by side, as in training; a single-asset model gets the symbols it serves stacked in the batch).
- `PolicyScorer`: the RL policy's simulated account is carried per symbol bar to bar (`StreamingAccounts`: the
  training env's accounting, bit for bit, for all symbols at once) instead of being re-simulated over the window;
  one batched policy call for all symbols. A new scorer starts each symbol flat at the oldest bar of the book and
  catches up, which is exactly what the pyfunc computes on that window, so at load time both agree; from then on
  the account carries on.
- `FrameScorer`: any other pyfunc, called once per timestamp on the book's frame (the generic interface).

`tests/unit/serving/test_scorers.py` proves each fast scorer equal to its pyfunc on the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from gpt_trader.core.errors import DataError
from gpt_trader.data.features import CALENDAR_COLUMNS
from gpt_trader.serving.book import BAR_FIELDS, FeatureBook

log = logging.getLogger(__name__)

# Target exposure of each transformer class (Sell, Hold, Buy), as the transformer pyfunc's `position`.
CLASS_POSITIONS = (-1.0, 0.0, 1.0)
_CLOSE, _VOLUME = BAR_FIELDS.index("close"), BAR_FIELDS.index("volume")


@dataclass(frozen=True, slots=True)
class ModelView:
    """One model's view of a symbol at a bar: target exposure in [-1, 1], confidence, class probabilities."""

    target: float
    confidence: float
    p_sell: float | None = None
    p_hold: float | None = None
    p_buy: float | None = None
    expected_return: float = 0.0


class Scorer(Protocol):
    """Scores the symbols that closed a bar at the book's newest timestamp."""

    def score(self, book: FeatureBook, symbols: Sequence[str]) -> dict[str, ModelView]:
        """Views for those of `symbols` the model can score now."""
        ...


def scorer_for(model: Any, kind: str, columns: Sequence[str], symbol_map: Mapping[str, str] | None = None) -> Scorer:
    """The fastest scorer for a loaded pyfunc: GPT-Trader's own models are unwrapped, any other is framed."""
    from gpt_trader.ml.rl.pyfunc import TradingPolicyModel
    from gpt_trader.ml.transformer.pyfunc import TransformerPyfunc

    inner = None
    unwrap = getattr(model, "unwrap_python_model", None)
    if unwrap is not None:
        try:
            inner = unwrap()
        except Exception:  # not a python_model flavour: the generic path serves it
            inner = None
    if kind == "transformer" and isinstance(inner, TransformerPyfunc):
        from gpt_trader.serving.streaming import StreamingTransformerScorer, streams

        if streams(inner.trader):
            return StreamingTransformerScorer(inner.trader, columns, symbol_map)
        return TransformerScorer(inner.trader, columns, symbol_map)
    if kind == "rl" and isinstance(inner, TradingPolicyModel) and inner.model is not None:
        return PolicyScorer(inner.model, inner.spec, columns)
    return FrameScorer(model, kind)


def _indices(columns: Sequence[str], wanted: Sequence[str], what: str) -> npt.NDArray[np.intp]:
    index = {c: i for i, c in enumerate(columns)}
    missing = [c for c in wanted if c not in index]
    if missing:
        raise DataError(f"{what} needs feature columns the live features do not compute: {missing}")
    return np.asarray([index[c] for c in wanted], dtype=np.intp)


class TransformerScorer:
    """A `TransformerTrader`'s last-window predictions straight from the book."""

    def __init__(self, trader: Any, columns: Sequence[str], symbol_map: Mapping[str, str] | None = None) -> None:
        self.trader = trader
        self.assets: tuple[str, ...] = tuple(trader.symbols)
        self.seq_len = int(trader.config.max_seq_length)
        self.feature_idx = _indices(columns, trader.columns, "the transformer")
        self.calendar_idx = _indices(columns, CALENDAR_COLUMNS, "the transformer")
        self.symbol_map = dict(symbol_map or {})
        self._warned: set[str] = set()

    def _asset(self, symbol: str) -> str:
        return self.symbol_map.get(symbol, symbol)

    def score(self, book: FeatureBook, symbols: Sequence[str]) -> dict[str, ModelView]:
        """Single-asset model: every served symbol in one batch. Multi-asset: all assets at the same bar."""
        served = [s for s in symbols if self._asset(s) in self.assets and book.size(s) >= self.seq_len]
        if not served:
            return {}
        if len(self.assets) == 1:
            feats = np.stack([book.vectors(s, self.seq_len)[:, self.feature_idx] for s in served])[:, :, None, :]
            cal = np.stack([book.vectors(s, self.seq_len)[:, self.calendar_idx] for s in served])
            probs, expected = self.trader.predict_windows(feats, cal)
            return dict(zip(served, transformer_views(probs[:, 0], expected[:, 0]), strict=True))
        return self._score_panel(book, served)

    def _score_panel(self, book: FeatureBook, served: list[str]) -> dict[str, ModelView]:
        # The live symbol standing for each model asset (identity unless mapped).
        by_asset = {self._asset(s): s for s in book.symbols if self._asset(s) in self.assets}
        absent = [a for a in self.assets if a not in by_asset or book.size(by_asset[a]) < self.seq_len]
        if absent:
            self._warn_once(
                f"missing:{absent}", f"transformer needs every asset it was trained on; no window for {absent}"
            )
            return {}
        live = [by_asset[a] for a in self.assets]
        stamps = [book.ts(s, self.seq_len) for s in live]
        if any(not np.array_equal(stamps[0], t) for t in stamps[1:]):
            # A multi-asset model is scored on aligned bars only: a symbol without this bar gets no view.
            self._warn_once("unaligned", f"transformer assets {list(self.assets)} not aligned on their last bars")
            return {}
        feats = np.stack([book.vectors(s, self.seq_len)[:, self.feature_idx] for s in live], axis=1)[None]
        cal = book.vectors(live[0], self.seq_len)[:, self.calendar_idx][None]
        probs, expected = self.trader.predict_windows(feats, cal)
        position = {s: i for i, s in enumerate(live)}
        views = transformer_views(probs[0], expected[0])
        return {s: views[position[s]] for s in served if s in position}

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def transformer_views(probs: npt.NDArray[np.float64], expected: npt.NDArray[np.float64]) -> list[ModelView]:
    """Views of n predictions: class probabilities (n, 3) in Sell/Hold/Buy order, expected returns (n,)."""
    p = probs / probs.sum(axis=-1, keepdims=True)  # float32 softmax: renormalize so the sum-to-one check holds
    return [
        ModelView(CLASS_POSITIONS[k], row[k], row[0], row[1], row[2], e)
        for row, k, e in zip(p.tolist(), p.argmax(axis=-1).tolist(), expected.tolist(), strict=True)
    ]


class _Rows:
    """The last `size` rows appended, as one contiguous (≤ size, width) array: a buffer of twice the size whose
    newest rows move to the front when it fills (amortized O(1)), so the policy's flattened window is a view."""

    __slots__ = ("buf", "n", "size")

    def __init__(self, size: int, width: int) -> None:
        self.buf = np.zeros((2 * size, width), dtype=np.float32)
        self.n = 0
        self.size = size

    def append(self, row: npt.NDArray[np.float32]) -> None:
        if self.n == len(self.buf):
            keep = self.size - 1
            self.buf[:keep] = self.buf[self.n - keep : self.n]
            self.n = keep
        self.buf[self.n] = row
        self.n += 1

    def extend(self, rows: npt.NDArray[np.float32]) -> None:
        for row in rows:
            self.append(row)

    def clear(self) -> None:
        self.n = 0

    def __len__(self) -> int:
        return min(self.n, self.size)

    def flat(self) -> npt.NDArray[np.float32]:
        """The rows oldest first, concatenated (a view: copy it to keep it)."""
        return self.buf[max(0, self.n - self.size) : self.n].reshape(-1)


class _PolicyState:
    __slots__ = ("action", "dead", "seen", "slot", "window")

    def __init__(self, slot: int, window_size: int, width: int) -> None:
        self.slot = slot  # the symbol's account in the scorer's `StreamingAccounts`
        self.window = _Rows(window_size, width)
        self.action: int | None = None  # the decision at the last bar, traded at the next one
        self.seen = 0  # book rows consumed
        self.dead = False  # the simulated book was wiped out: flat from then on, as the pyfunc does


class PolicyScorer:
    """An SB3 trading policy with its simulated account carried per symbol from bar to bar."""

    def __init__(self, policy: Any, spec: Any, columns: Sequence[str]) -> None:
        from gpt_trader.ml.rl.config import EnvConfig, RewardConfig
        from gpt_trader.trading.config import CostConfig
        from gpt_trader.trading.costs import CostModel

        self.policy, self.spec = policy, spec
        self.env_config = EnvConfig.model_validate(spec.env)
        self.reward_config = RewardConfig.model_validate(spec.reward)
        self.cost_model = CostModel(CostConfig.model_validate(spec.costs))
        self.feature_idx = _indices(columns, spec.feature_names, "the RL policy")
        self.sigma_idx = int(_indices(columns, [spec.sigma_column], "the RL policy")[0])
        self.mean = np.asarray(spec.scaler_mean, dtype=np.float64)
        self.std = np.asarray(spec.scaler_std, dtype=np.float64)
        self.window_size = int(spec.window_size)
        self.fractions = np.clip(np.asarray(self.env_config.position_fractions, dtype=np.float64), -1.0, 1.0)
        fractions = list(self.env_config.position_fractions)
        self.flat_action = fractions.index(0.0) if 0.0 in fractions else 0
        self._states: dict[str, _PolicyState] = {}
        # One view per action (immutable): a bar's views are looked up, not built per symbol.
        self._action_views = [ModelView(float(f), 1.0) for f in self.fractions]
        # SB3's `predict` re-checks the observation and re-sets eval mode on every call (~0.3 ms a bar here);
        # for our discrete policies its network step `_predict` on a tensor is the same computation.
        from gymnasium.spaces import Discrete

        net = getattr(policy, "policy", None)
        self._net = net if net is not None and isinstance(getattr(net, "action_space", None), Discrete) else None
        if self._net is not None:
            self._net.set_training_mode(False)
        from gpt_trader.ml.rl.accounts import StreamingAccounts
        from gpt_trader.ml.rl.env import TradingEnv

        # Every symbol's simulated account, as the training env carries one, advanced together (bit-identical).
        template = TradingEnv.streaming(
            len(self.feature_idx), env_config=self.env_config, reward_config=self.reward_config,
            cost_model=self.cost_model,
        )  # fmt: skip
        self.accounts = StreamingAccounts(template)
        self._k = len(self.feature_idx) * self.window_size  # observation entries before the account's two

    def _state(self, symbol: str) -> _PolicyState:
        state = self._states.get(symbol)
        if state is None:
            state = self._states[symbol] = _PolicyState(self.accounts.add(), self.window_size, len(self.feature_idx))
        return state

    def _scaled(self, vectors: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        """Feature rows (n, all columns) as the policy saw them in training: cast to float32, standardized with
        the training statistics, clipped (one vectorized pass for the n symbols of a step)."""
        from gpt_trader.ml.rl.market import FEATURE_CLIP

        raw = vectors[:, self.feature_idx].astype(np.float32)
        return np.clip((raw - self.mean) / self.std, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)

    def score(self, book: FeatureBook, symbols: Sequence[str]) -> dict[str, ModelView]:
        """Catch each symbol up on the book rows it has not seen (one step per row), acting at every row."""
        totals = book.totals(symbols)
        states = [self._state(s) for s in symbols]
        views: dict[str, ModelView] = {}
        if all(t == state.seen + 1 for t, state in zip(totals, states, strict=True)):
            # The usual bar: one new row per symbol, one gather, one step.
            for state, total in zip(states, totals, strict=True):
                state.seen = total
            self._act(list(symbols), states, *book.latest(symbols), views)
            return views
        pending: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
        for symbol, state, total in zip(symbols, states, totals, strict=True):
            missing = total - state.seen
            if missing <= 0:
                continue
            k = min(missing, book.size(symbol))
            pending[symbol] = (book.vectors(symbol, k), book.bars(symbol, k))
            state.seen = total
        steps = max((len(v) for v, _ in pending.values()), default=0)
        for j in range(steps):
            # Symbols with fewer missing rows join at the end, so every symbol's last row is the last step.
            batch = [s for s, (vectors, _) in pending.items() if j >= steps - len(vectors)]
            at = [j - (steps - len(pending[s][0])) for s in batch]
            self._act(
                batch,
                [self._states[s] for s in batch],
                np.stack([pending[s][0][i] for s, i in zip(batch, at, strict=True)]),
                np.stack([pending[s][1][i] for s, i in zip(batch, at, strict=True)]),
                views,
            )
        return {s: v for s, v in views.items() if s in pending}

    def _act(
        self,
        symbols: list[str],
        states: list[_PolicyState],
        vectors: npt.NDArray[np.float64],
        bars: npt.NDArray[np.float64],
        views: dict[str, ModelView],
    ) -> None:
        """One bar of `symbols` (their `states`; feature rows (N, F), OHLCV (N, 5)): advance each account, act on
        all at once; their views go into `views` (a dead book's view is flat)."""
        scaled = self._scaled(vectors)
        closes, volumes = bars[:, _CLOSE], bars[:, _VOLUME]
        sigmas = vectors[:, self.sigma_idx]
        flat = self._action_views[self.flat_action]
        live: list[int] = []
        for i, (symbol, state) in enumerate(zip(symbols, states, strict=True)):
            state.window.append(scaled[i])
            if state.dead:
                views[symbol] = flat
            elif len(state.window) >= self.window_size:
                live.append(i)
        if not live:
            return
        at = np.asarray(live, dtype=np.intp)
        moving = [states[i] for i in live]
        exposure, drawdown, wiped = self.accounts.advance(
            np.fromiter((st.slot for st in moving), dtype=np.intp, count=len(moving)),
            closes[at], volumes[at], sigmas[at],
            np.fromiter((-1 if st.action is None else st.action for st in moving), dtype=np.int64, count=len(moving)),
        )  # fmt: skip
        k = self._k
        observations = np.empty((len(moving), k + 2), dtype=np.float32)
        for j, st in enumerate(moving):
            observations[j, :k] = st.window.flat()
        observations[:, k] = exposure
        observations[:, k + 1] = drawdown
        acting: list[tuple[str, _PolicyState]] = []
        keep: list[int] = []
        for j, (i, st) in enumerate(zip(live, moving, strict=True)):
            if wiped[j]:  # the simulated book was wiped out: flat from then on, as the pyfunc does
                st.dead, st.action = True, self.flat_action
                views[symbols[i]] = flat
            else:
                acting.append((symbols[i], st))
                keep.append(j)
        if not acting:
            return
        batch = observations if len(keep) == len(moving) else observations[keep]
        for (symbol, state), action in zip(acting, self._actions(batch), strict=True):
            state.action = action
            views[symbol] = self._action_views[action]

    def export_state(self, book: FeatureBook) -> dict[str, dict[str, Any]]:
        """Per symbol, the carried account and last decision as of the book's newest bar (JSON-friendly), for
        symbols fully caught up; a restart hands it to `restore_state` to continue exactly."""
        out: dict[str, dict[str, Any]] = {}
        for symbol, state in self._states.items():
            if state.seen != book.total(symbol) or state.seen == 0 or len(state.window) < self.window_size:
                continue
            out[symbol] = {
                "ts": int(book.ts(symbol, 1)[0]),
                "action": state.action,
                "dead": state.dead,
                **self.accounts.account_state(state.slot),
            }
        return out

    def restore_state(self, book: FeatureBook, saved: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Continue from `export_state` output: for each symbol whose newest book bar is the saved one, rebuild
        the window from the book and reload the account. Returns the symbols restored (others catch up flat)."""
        restored = []
        for symbol, item in saved.items():
            if book.size(symbol) < self.window_size or int(book.ts(symbol, 1)[0]) != int(item["ts"]):
                continue
            state = self._state(symbol)
            vectors, bars = book.vectors(symbol, self.window_size), book.bars(symbol, 1)
            state.window.clear()
            state.window.extend(self._scaled(vectors))
            self.accounts.load_account_state(
                state.slot, dict(item), float(bars[0, _CLOSE]), float(bars[0, _VOLUME]),
                float(vectors[-1, self.sigma_idx]),
            )  # fmt: skip
            state.action = None if item["action"] is None else int(item["action"])
            state.dead = bool(item["dead"])
            state.seen = book.total(symbol)
            restored.append(symbol)
        return restored

    def _actions(self, observations: npt.NDArray[np.float32]) -> list[int]:
        """The policy's deterministic actions for a batch of observations."""
        if self._net is None:
            actions, _ = self.policy.predict(observations, deterministic=True)
            return [int(a) for a in np.asarray(actions).reshape(-1).tolist()]
        import torch

        with torch.no_grad():
            actions = self._net._predict(torch.from_numpy(observations), deterministic=True)
        return [int(a) for a in actions.reshape(-1).tolist()]


class FrameScorer:
    """Any pyfunc with GPT-Trader's model interface: one `predict` on the book's frame per timestamp."""

    REQUIRED: ClassVar[dict[str, tuple[str, ...]]] = {"transformer": ("p_sell", "p_hold", "p_buy"), "rl": ("position",)}

    def __init__(self, model: Any, kind: str) -> None:
        if kind not in self.REQUIRED:
            raise ValueError(f"model kind must be 'transformer' or 'rl', got {kind!r}")
        self.model, self.kind = model, kind

    def check_output(self, out: Any) -> None:
        """Raise unless `out` has this kind's columns with finite values."""
        missing = [c for c in self.REQUIRED[self.kind] if c not in out.columns]
        if missing:
            raise ValueError(f"prediction lacks columns {missing}")
        values = out[list(self.REQUIRED[self.kind])].to_numpy(dtype=float)
        if len(out) and not np.isfinite(values).all():
            raise ValueError("prediction contains NaN or infinite values")

    def predict(self, frame: Any) -> Any:
        """The model's checked output on `frame`."""
        out = self.model.predict(frame)
        self.check_output(out)
        return out

    def score(self, book: FeatureBook, symbols: Sequence[str]) -> dict[str, ModelView]:
        """Predict on every symbol's rows (multi-asset models need them together); the last row per symbol."""
        frame = book.frame()
        out = self.predict(frame)
        if "symbol" not in out.columns:
            if len(out) != len(frame):
                raise ValueError(
                    f"prediction has no 'symbol' column and {len(out)} rows for {len(frame)} input rows: "
                    "its rows cannot be matched to symbols"
                )
            out = out.assign(symbol=frame["symbol"].to_numpy())  # row-wise output: row i answers input row i
        last = out.groupby("symbol", sort=False).tail(1).set_index("symbol")
        return {s: self._view(last.loc[s]) for s in symbols if s in last.index}

    def _view(self, row: Any) -> ModelView:
        if self.kind == "transformer":
            p_sell, p_hold, p_buy = float(row["p_sell"]), float(row["p_hold"]), float(row["p_buy"])
            total = p_sell + p_hold + p_buy
            target = float(np.clip(row.get("position", p_buy - p_sell), -1, 1))
            return ModelView(
                target,
                max(p_sell, p_hold, p_buy) / total,
                p_sell / total,
                p_hold / total,
                p_buy / total,
                float(row.get("expected_return", 0.0)),
            )
        return ModelView(float(np.clip(row["position"], -1.0, 1.0)), float(np.clip(row.get("confidence", 1.0), 0, 1)))
