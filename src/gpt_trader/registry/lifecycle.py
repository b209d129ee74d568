"""A model's life in the registry: every training registers a challenger; the gate promotes it or says why not.

`register_training` is called by the training stages (CLI, DVC and Prefect alike) and `promote_model` by the
promote flow and CLI; both are plain functions over `Settings` and an MLflow client.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt_trader.core.errors import DataError
from gpt_trader.registry.config import RegistryConfig
from gpt_trader.registry.models import (
    CHALLENGER,
    CHAMPION,
    NoChallengerError,
    RegistryError,
    alias_version,
    promote,
    record_rejection,
)
from gpt_trader.registry.promotion import Evidence, PromotionDecision, decide_promotion
from gpt_trader.trading.shadow import ShadowEvidence

if TYPE_CHECKING:
    import polars as pl
    from mlflow import MlflowClient

    from gpt_trader.settings import Settings

KINDS = ("transformer", "ppo", "dqn")
# MLflow stores model-version tag values up to 5,000 characters; the full params are in the run and its model dir.
MAX_TAG_CHARS = 5000
# Run metrics copied onto the version as `metric.<name>` tags (the most useful first), so `models list` and the
# registry UI show them without opening the run.
MAX_METRIC_TAGS = 40
TRAINING_TAGS = ("training.symbols", "training.first_ts", "training.last_ts", "training.heldout_start_ts")


def model_name(config: RegistryConfig, kind: str) -> str:
    """The registered model name of `kind` ("transformer", "ppo" or "dqn")."""
    names = {"transformer": config.transformer_model, "ppo": config.rl_ppo_model, "dqn": config.rl_dqn_model}
    if kind not in names:
        raise RegistryError(f"unknown model kind {kind!r}; expected one of {list(names)}")
    return names[kind]


def registry_client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured store (tracking and registry in the same place).

    Also points MLflow's process-wide URIs there: `mlflow.pyfunc.load_model("models:/...")` (scoring, sanity
    checks) resolves through them, not through a client.
    """
    import mlflow
    from mlflow import MlflowClient

    from gpt_trader.registry.tracking import tracking_uri

    uri = tracking_uri(settings.registry, settings.paths.mlflow)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def params_tags(params: dict[str, Any]) -> dict[str, str]:
    """`params` (JSON, truncated to fit a tag) and `params_sha256` (of the full JSON, so identity stays exact)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    shown = text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 14] + "...(truncated)"
    return {"params": shown, "params_sha256": hashlib.sha256(text.encode()).hexdigest()}


def metric_tags(metrics: dict[str, float]) -> dict[str, str]:
    """Finite metrics as `metric.<name>` tags with 6 significant digits (the first `MAX_METRIC_TAGS`, in order)."""
    finite = [(k, float(v)) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(float(v))]
    return {f"metric.{k}": f"{v:.6g}" for k, v in finite[:MAX_METRIC_TAGS]}


def register_training(
    settings: Settings,
    *,
    kind: str,
    model_uri: str,
    run_id: str,
    timeframe: str,
    data_files: Iterable[str | Path],
    params: dict[str, Any],
    seeds: Sequence[int],
    metrics: dict[str, float] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> str | None:
    """Register a trained model as the new `challenger` of its kind with its lineage; None when registering is off.

    Tags: kind, run_id, git commit (+ dirty flag), sha256 of the feature files and the DVC md5 of `data/features`
    when the pipeline ran under DVC, params JSON, seeds, library versions, the training range recorded on the run
    (`training.*`, which the promotion window is checked against) and the metrics (`metric.*`: `metrics` plus
    the run's own).
    """
    from gpt_trader.registry.models import register_challenger
    from gpt_trader.registry.tracking import dvc_data_tag, provenance_tags

    if not settings.registry.register_models:
        return None
    files = list(data_files)
    client = registry_client(settings)
    run = client.get_run(run_id)
    run_tags = run.data.tags
    missing = [t for t in ("training.symbols", "training.heldout_start_ts") if t not in run_tags]
    if missing:
        raise RegistryError(f"run {run_id} has no {missing} tags: cannot register a model without its training range")
    tags: dict[str, Any] = {
        "kind": kind,
        "run_id": run_id,
        "model_uri": model_uri,
        "training.timeframe": timeframe,
        "seeds": ",".join(map(str, seeds)),
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **provenance_tags(files),
        "dvc_data_md5": dvc_data_tag(files),
        **{t: run_tags[t] for t in TRAINING_TAGS if t in run_tags},
        **params_tags(params),
        # The stage's headline figures first, then the run's other metrics.
        **metric_tags({**(metrics or {}), **{k: v for k, v in run.data.metrics.items() if k not in (metrics or {})}}),
        **(extra_tags or {}),
    }
    return register_challenger(client, model_name(settings.registry, kind), model_uri, tags)


@dataclass(frozen=True, slots=True)
class PromotionReport:
    """What the gate saw and decided for one model kind."""

    kind: str
    name: str
    decision: PromotionDecision
    challenger: Evidence
    champion: Evidence | None
    window: str
    refusals: tuple[str, ...] = field(default=())

    def rows(self) -> list[dict[str, Any]]:
        """One row per scored model (challenger first) for a markdown table."""
        out = []
        for role, ev in (("challenger", self.challenger), ("champion", self.champion)):
            if ev is None:
                continue
            m = ev.metrics
            out.append(
                {
                    "model": self.name,
                    "role": role,
                    "version": ev.version,
                    "sharpe": m.get("sharpe"),
                    "total_return": m.get("total_return"),
                    "max_drawdown": m.get("max_drawdown"),
                    "buy_and_hold_sharpe": m.get("buy_and_hold_sharpe"),
                    "sane": not ev.sanity.failures(math.inf),
                }
            )
        return out


def features_frame(settings: Settings, symbols: Sequence[str], timeframe: str) -> tuple[pl.DataFrame, list[Path]]:
    """The current feature rows of `symbols` (configured datasets first, else the bundled file) and their files."""
    import polars as pl

    from gpt_trader.data.config import DatasetSpec
    from gpt_trader.data.store import dataset_path

    specs = {(d.symbol, d.timeframe): d for d in settings.data.datasets}
    paths = []
    for symbol in symbols:
        spec = specs.get((symbol, timeframe)) or DatasetSpec(source="bundled", symbol=symbol, timeframe=timeframe)
        path = dataset_path(Path(settings.paths.data), "features", spec)
        if not path.is_file():
            raise DataError(f"features {path} not found: run the data stages (`gpt-trader data features`) first")
        paths.append(path)
    return pl.concat([pl.read_parquet(p) for p in paths], how="vertical_relaxed"), paths


def promote_model(settings: Settings, kind: str, *, extra_tags: dict[str, str] | None = None) -> PromotionReport:
    """Score the challenger and the champion of `kind` on the same recent window; promote or record the rejection.

    The window is the latest `registry.promotion.window_bars` bars of the challenger's training symbols; it must
    start at or after both models' held-out start (else the comparison is refused, the champion untouched). The
    challenger's input signature must accept the champion's (or, with no champion, the feature columns).
    """
    from gpt_trader.registry.scoring import promotion_window, score_version, serving_input, window_overlap
    from gpt_trader.trading.costs import CostModel

    cfg = settings.registry.promotion
    client = registry_client(settings)
    name = model_name(settings.registry, kind)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise NoChallengerError(name)
    champion = alias_version(client, name, CHAMPION)
    ch_tags = dict(client.get_model_version(name, challenger).tags)
    symbols = tuple(s for s in ch_tags.get("training.symbols", "").split(",") if s)
    if not symbols:
        raise RegistryError(f"{name} v{challenger} has no training.symbols tag: it was not registered by a training")
    frame, _ = features_frame(settings, symbols, ch_tags.get("training.timeframe", "1d"))
    window = promotion_window(frame, symbols, cfg.window_bars)
    refusals = [window_overlap(window, ch_tags, f"challenger v{challenger}")]
    if champion is not None:
        champ_tags = dict(client.get_model_version(name, champion).tags)
        refusals.append(window_overlap(window, champ_tags, f"champion v{champion}"))
    problems = tuple(r for r in refusals if r)
    cost_model = CostModel(settings.costs)
    # "Signature matches": the challenger must accept what the champion is served now (or, first model ever, the
    # feature columns).
    serving = serving_input(f"models:/{name}/{champion}" if champion else None, champion, frame)
    chal_ev = score_version(
        f"models:/{name}/{challenger}",
        frame,
        window,
        cost_model,
        version=challenger,
        lookback_bars=cfg.lookback_bars,
        serving=serving,
    )
    champ_ev = None
    if champion is not None and not problems:
        champ_ev = score_version(
            f"models:/{name}/{champion}", frame, window, cost_model, version=champion, lookback_bars=cfg.lookback_bars
        )
    if problems:
        decision = PromotionDecision(False, problems, challenger, champion)
    else:
        decision = decide_promotion(chal_ev, champ_ev, cfg, ShadowEvidence.from_tags(ch_tags))
    tags = {
        **decision.as_tags(),
        "promotion.decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "promotion.window": window.label,
        **{f"promotion.{k}": f"{v:.6g}" for k, v in chal_ev.metrics.items() if math.isfinite(v)},
        **(
            {f"promotion.champion_{k}": f"{v:.6g}" for k, v in champ_ev.metrics.items() if math.isfinite(v)}
            if champ_ev
            else {}
        ),
        **(extra_tags or {}),
    }
    if decision.promote:
        promote(client, name, challenger, reason="; ".join(decision.reasons), tags=tags)
    else:
        record_rejection(client, name, challenger, tags)
    return PromotionReport(kind, name, decision, chal_ev, champ_ev, window.label, problems)


def challenger_version(settings: Settings, kind: str) -> str | None:
    """The version the `challenger` alias of `kind` points at (None when there is none)."""
    return alias_version(registry_client(settings), model_name(settings.registry, kind), CHALLENGER)


def run_link(settings: Settings, run_id: str) -> str:
    """A URL for an MLflow run: its UI page when tracking is an http server, else its artifact directory."""
    from gpt_trader.registry.tracking import run_url, tracking_uri

    uri = tracking_uri(settings.registry, settings.paths.mlflow)
    info = registry_client(settings).get_run(run_id).info
    return run_url(uri, str(info.experiment_id), run_id, str(info.artifact_uri))


def retrain_tags(reason: str, dataset: str | None, flow_run_id: str | None = None) -> dict[str, str]:
    """Version tags saying why a retrain registered it (schedule, drift of which dataset, which Prefect run)."""
    return {"retrain.reason": reason, "retrain.dataset": dataset or "-", "retrain.flow_run_id": flow_run_id or "-"}
