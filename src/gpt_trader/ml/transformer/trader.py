"""`TransformerTrader`: the seed's train/predict API around the Lightning module, tracked in MLflow.

`train_data`, `val_data` and `live_data` are polars or pandas frames of one or several symbols, holding either
feature rows (from `build_features`, e.g. data/features/bundled/*.parquet) or raw bars (ts, symbol, open, high,
low, close, volume), from which features are built with the trader's `FeaturesConfig`. Several symbols are
modelled together (aligned on common timestamps). `predict` returns one prediction per (timestamp, symbol) whose
window of `max_seq_length` bars is complete.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import torch

from gpt_trader.core.errors import DataError
from gpt_trader.core.fs import atomic_write_bytes, atomic_write_text
from gpt_trader.data.config import FeaturesConfig
from gpt_trader.ml.transformer.config import TransformerConfig
from gpt_trader.ml.transformer.datamodule import MarketDataModule, window_ends
from gpt_trader.ml.transformer.model import MarketTransformer
from gpt_trader.ml.transformer.panel import (
    CLASS_NAMES,
    Normalizer,
    Panel,
    build_panel,
    ensure_features,
    input_columns,
    market_feature_indices,
)
from gpt_trader.registry.config import RegistryConfig
from gpt_trader.trading.config import CostConfig

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_INFERENCE_BATCH = 256


def resolve_precision(precision: str) -> str:
    """`auto` means bf16-mixed on a CUDA GPU and full precision on CPU."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


class TransformerTrader:
    """Train a `MarketTransformer` on market frames and turn it into Buy/Hold/Sell signals.

    Every `train` call is an MLflow run (unless `track=False`) in the store of `registry` (default: the SQLite
    store under `mlflow_dir`).
    """

    def __init__(
        self,
        config: TransformerConfig | None = None,
        *,
        features: FeaturesConfig | None = None,
        registry: RegistryConfig | None = None,
        costs: CostConfig | None = None,
        mlflow_dir: str | Path = "mlflow",
        track: bool = True,
    ) -> None:
        self.config = config or TransformerConfig()
        self.features = features or FeaturesConfig()
        self.registry = registry or RegistryConfig()
        self.costs = costs or CostConfig()
        self.mlflow_dir = Path(mlflow_dir)
        self.track = track
        self.columns = input_columns(self.features)
        self.model: MarketTransformer | None = None
        self.normalizer: Normalizer | None = None
        self.symbols: tuple[str, ...] = ()
        self.metrics: dict[str, float] = {}
        self.run_id: str | None = None
        self.model_uri: str | None = None

    # --- training ---

    def train(
        self,
        train_data: Any,
        val_data: Any = None,
        *,
        data_files: Iterable[str | Path] = (),
        run_name: str | None = None,
        **trainer_kwargs: Any,
    ) -> dict[str, float]:
        """Fit on `train_data`, early-stopping on `val_data` (default: the last `val_fraction` of the training
        rows after an embargo); returns the final metrics. `trainer_kwargs` go to `lightning.Trainer`.
        """
        train_frame = ensure_features(train_data, self.features, name="train_data")
        train_panel = build_panel(train_frame, self.columns, name="train_data")
        if val_data is None:
            train_panel, val_panel, val_start = self._split_validation(train_panel)
            val_frame = None
        else:
            val_frame = ensure_features(val_data, self.features, name="val_data")
            val_panel = build_panel(val_frame, self.columns, train_panel.symbols, name="val_data")
            val_start = 0
        if not self.track:
            return self.fit_panels(train_panel, val_panel, val_label_start=val_start, **trainer_kwargs)
        from gpt_trader.ml.transformer import tracking

        with tracking.training_run(self, run_name=run_name) as run:
            metrics = self.fit_panels(
                train_panel,
                val_panel,
                val_label_start=val_start,
                logger=tracking.lightning_logger(self, run),
                **trainer_kwargs,
            )
            tracking.log_training(
                self,
                train_frame=train_frame,
                val_frame=val_frame,
                val_panel=val_panel,
                val_label_start=val_start,
                data_files=list(data_files),
            )
        return metrics

    def _split_validation(self, panel: Panel) -> tuple[Panel, Panel, int]:
        """Hold out the last `val_fraction` rows (with `seq_len - 1` rows of context before them)."""
        n, seq_len = len(panel), self.config.max_seq_length
        embargo = max(self.config.evaluation.embargo_bars, self.features.label_horizon)
        n_val = int(n * self.config.val_fraction)
        val_start = n - n_val
        train_stop = val_start - embargo
        if n_val < 1 or train_stop < seq_len:
            raise DataError(
                f"train_data has {n} aligned rows: too few to hold out {self.config.val_fraction:.0%} for validation "
                f"with windows of {seq_len} and embargo {embargo}; pass val_data or more rows"
            )
        context = max(0, val_start - (seq_len - 1))
        return panel.rows(0, train_stop), panel.rows(context, n), val_start - context

    def fit_panels(
        self,
        train: Panel,
        val: Panel | None,
        *,
        val_label_start: int = 0,
        logger: Any = False,
        **trainer_kwargs: Any,
    ) -> dict[str, float]:
        """Fit on aligned panels: normalization from `train` only, early stopping and checkpointing on `val`."""
        import lightning as L
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

        from gpt_trader.ml.transformer.module import MarketTransformerModule

        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        self.symbols = train.symbols
        self.normalizer = Normalizer.fit(train)
        module = MarketTransformerModule(
            self.model_kwargs(len(train.symbols)),
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            regression_weight=cfg.regression_weight,
            max_epochs=cfg.max_epochs,
        )
        data = MarketDataModule(
            train,
            val,
            self.normalizer,
            seq_len=cfg.max_seq_length,
            batch_size=cfg.batch_size,
            stride=cfg.window_stride,
            all_steps=cfg.loss_on_all_steps,
            val_label_start=val_label_start,
        )
        with tempfile.TemporaryDirectory(prefix="gpt-trader-ckpt-") as ckpt_dir:
            callbacks: list[Any] = []
            checkpoint = None
            if val is not None:
                checkpoint = ModelCheckpoint(dirpath=ckpt_dir, monitor="val_loss", mode="min", save_top_k=1)
                callbacks = [checkpoint, EarlyStopping("val_loss", patience=cfg.early_stopping_patience)]
            options: dict[str, Any] = {
                "max_epochs": cfg.max_epochs,
                "accelerator": cfg.accelerator,
                "devices": 1,
                "precision": resolve_precision(cfg.precision),
                "gradient_clip_val": cfg.gradient_clip_val or None,
                "logger": logger,
                "callbacks": callbacks,
                "enable_checkpointing": checkpoint is not None,
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "log_every_n_steps": 1,
                "num_sanity_val_steps": 0,
                "default_root_dir": ckpt_dir,
                **trainer_kwargs,
            }
            trainer = L.Trainer(**options)
            with _quiet_lightning():
                trainer.fit(module, datamodule=data)
            best = checkpoint.best_model_path if checkpoint is not None else ""
            if best:
                state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
                module.load_state_dict(state)
        self.model = module.model.to("cpu").float().eval()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
        if checkpoint is not None and checkpoint.best_model_score is not None:
            metrics["best_val_loss"] = float(checkpoint.best_model_score)
        metrics["epochs"] = float(trainer.current_epoch)
        self.metrics = metrics
        return metrics

    def model_kwargs(self, n_assets: int) -> dict[str, Any]:
        """Constructor arguments of the `MarketTransformer` for this config and feature set."""
        cfg = self.config
        return {
            "n_features": len(self.columns),
            "n_assets": n_assets,
            "d_model": cfg.d_model,
            "n_heads": cfg.n_heads,
            "n_layers": cfg.n_layers,
            "d_ff": cfg.feedforward_dim,
            "dropout": cfg.dropout,
            "max_seq_length": cfg.max_seq_length,
            "market_features": market_feature_indices(self.columns),
            "cross_asset_attention": cfg.cross_asset_attention,
            "attention_window": cfg.attention_window,
        }

    # --- inference ---

    def _require_model(self) -> tuple[MarketTransformer, Normalizer]:
        if self.model is None or self.normalizer is None:
            raise RuntimeError("the trader has no model: call train() or TransformerTrader.load() first")
        return self.model, self.normalizer

    def predict_panel(
        self, panel: Panel, ends: npt.NDArray[np.int64], *, return_attention: bool = False
    ) -> dict[str, npt.NDArray[Any]]:
        """Last-step outputs of the windows ending at `ends`: probabilities (E, A, 3), expected_return (E, A)
        in log-return units, and attention (E, A, layers, heads, T) of the last step over its window.
        """
        model, normalizer = self._require_model()
        seq_len = self.config.max_seq_length
        x = torch.from_numpy(normalizer.transform(panel.features))
        calendar = torch.from_numpy(panel.calendar)
        probs, expected, attention = [], [], []
        with torch.inference_mode():
            for chunk in np.array_split(ends, max(1, int(np.ceil(len(ends) / _INFERENCE_BATCH)))):
                idx = torch.as_tensor(chunk)[:, None] + torch.arange(-seq_len + 1, 1)
                if return_attention:
                    logits, ret, weights = model.forward_with_attention(x[idx], calendar[idx])
                    # (layers, B, A, heads, T, T) -> last query row -> (B, A, layers, heads, T)
                    attention.append(weights[..., -1, :].permute(1, 2, 0, 3, 4).numpy())
                else:
                    logits, ret = model(x[idx], calendar[idx])
                probs.append(logits[:, -1].softmax(-1).numpy())
                expected.append(ret[:, -1].numpy())
        out = {
            "probabilities": np.concatenate(probs).astype(np.float64),
            "expected_return": np.concatenate(expected).astype(np.float64) * normalizer.target_std
            + normalizer.target_mean,
        }
        if return_attention:
            out["attention"] = np.concatenate(attention)
        return out

    def predict_windows(
        self, features: npt.NDArray[np.floating[Any]], calendar: npt.NDArray[np.floating[Any]]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Last-step outputs of ready-made windows, the serving fast path (no data frame, one forward pass).

        `features` (B, T, A, F) raw (not normalized) in `columns` order and `symbols` asset order, `calendar`
        (B, T, 5) in `CALENDAR_COLUMNS` order; returns probabilities (B, A, 3) in Sell/Hold/Buy order and the
        expected forward log return (B, A). Equal to `predict_panel` on the same windows.
        """
        model, normalizer = self._require_model()
        if features.ndim != 4 or features.shape[-1] != len(self.columns) or features.shape[2] != len(self.symbols):
            raise DataError(
                f"features must be (B, T, {len(self.symbols)}, {len(self.columns)}), got {tuple(features.shape)}"
            )
        x = torch.from_numpy(normalizer.transform(features.astype(np.float32)))
        if len(calendar) > 1 and (calendar == calendar[:1]).all():
            calendar = calendar[:1]  # windows of one timestamp share it: encode once, broadcast over the batch
        cal = torch.from_numpy(np.ascontiguousarray(calendar, dtype=np.float32))
        with torch.inference_mode():
            logits, ret = model.forward_last(x, cal)
            probs = logits.softmax(-1).numpy().astype(np.float64)
            expected = ret.numpy().astype(np.float64) * normalizer.target_std + normalizer.target_mean
        return probs, expected

    def predict(self, live_data: Any, *, return_attention: bool = False, last_only: bool = False) -> dict[str, Any]:
        """Buy/Hold/Sell per (timestamp, symbol) with a complete window (only the latest ones if `last_only`).

        Returns `predictions` (array of "Buy"/"Hold"/"Sell"), `probabilities` (n, 3) in Sell/Hold/Buy order,
        `expected_return` (forward log return over the label horizon), `signal` (-1/0/+1), `ts`, `symbol`,
        `frame` (all of these as a polars DataFrame) and, if asked, `attention` (n, layers, heads, window).
        """
        self._require_model()
        frame = ensure_features(live_data, self.features, name="live_data")
        panel = build_panel(frame, self.columns, self.symbols, name="live_data")
        seq_len = self.config.max_seq_length
        if len(panel) < seq_len:
            raise DataError(
                f"live_data has {len(panel)} aligned rows after the feature warm-up; the model needs {seq_len}"
            )
        ends = np.array([len(panel) - 1]) if last_only else window_ends(len(panel), seq_len)
        raw = self.predict_panel(panel, ends, return_attention=return_attention)
        n_assets = len(self.symbols)
        probabilities = raw["probabilities"].reshape(-1, 3)
        classes = probabilities.argmax(axis=1)
        out: dict[str, Any] = {
            "predictions": np.asarray(CLASS_NAMES, dtype=object)[classes],
            "probabilities": probabilities,
            "expected_return": raw["expected_return"].reshape(-1),
            "signal": classes.astype(np.int64) - 1,
            "ts": np.repeat(panel.ts[ends], n_assets),
            "symbol": np.tile(np.asarray(self.symbols, dtype=object), len(ends)),
        }
        if return_attention:
            att = raw["attention"]
            out["attention"] = att.reshape(-1, *att.shape[2:])
        out["frame"] = pl.DataFrame(
            {
                "ts": pl.Series(out["ts"]).dt.replace_time_zone("UTC"),
                "symbol": out["symbol"].astype(str),
                "prediction": out["predictions"].astype(str),
                "p_sell": probabilities[:, 0],
                "p_hold": probabilities[:, 1],
                "p_buy": probabilities[:, 2],
                "expected_return": out["expected_return"],
            }
        )
        return out

    # --- persistence ---

    def save(self, path: str | Path) -> Path:
        """Write the model directory: `model.pt` (weights) and `trader.json` (configs, symbols, normalizer)."""
        model, normalizer = self._require_model()
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        import io

        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write_bytes(root / "model.pt", buffer.getvalue())
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "features": self.features.model_dump(mode="json"),
            "symbols": list(self.symbols),
            "columns": self.columns,
            "normalizer": normalizer.to_dict(),
            "metrics": self.metrics,
            "run_id": self.run_id,
        }
        atomic_write_text(root / "trader.json", json.dumps(meta, indent=2))
        return root

    @classmethod
    def load(cls, path: str | Path, *, track: bool = False) -> TransformerTrader:
        """Load a directory written by `save`."""
        root = Path(path)
        meta_path = root / "trader.json"
        if not meta_path.is_file():
            raise DataError(f"{root} is not a saved TransformerTrader (no trader.json)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{meta_path}: unsupported format_version {meta.get('format_version')}")
        trader = cls(
            TransformerConfig.model_validate(meta["config"]),
            features=FeaturesConfig.model_validate(meta["features"]),
            track=track,
        )
        if trader.columns != meta["columns"]:
            raise DataError(f"{meta_path}: saved columns {meta['columns']} differ from {trader.columns}")
        trader.symbols = tuple(meta["symbols"])
        trader.normalizer = Normalizer.from_dict(meta["normalizer"])
        trader.metrics = meta.get("metrics", {})
        trader.run_id = meta.get("run_id")
        model = MarketTransformer(**trader.model_kwargs(len(trader.symbols)))
        model.load_state_dict(torch.load(root / "model.pt", map_location="cpu", weights_only=True))
        trader.model = model.eval()
        return trader


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's advice that does not apply here (in-memory windows need no loader workers)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        yield
