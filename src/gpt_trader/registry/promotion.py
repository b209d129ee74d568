"""The promotion gate: a challenger replaces the champion only on evidence.

`decide_promotion` is pure: it weighs sanity checks and held-out metrics measured on the same, most recent window
for both models. `check_model` gathers the sanity evidence for any MLflow pyfunc model; given the serving input
(`ServingInput`), it also checks that the model's input signature accepts it (`signature_mismatches`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gpt_trader.registry.config import PromotionConfig
from gpt_trader.trading.shadow import ShadowEvidence

if TYPE_CHECKING:
    from mlflow.types import Schema


@dataclass(frozen=True, slots=True)
class SanityCheck:
    """Whether a registered model is fit to serve: it loads, predicts finite values in time, and its signature
    accepts the serving input."""

    loads: bool
    predicts: bool = False
    finite: bool = False
    has_signature: bool = False
    # Why the input signature does not accept the serving input (None: it does, or no serving input was given).
    signature_mismatch: str | None = None
    # p99 over repeated predictions on the input example of min(wall time, process CPU time) per call.
    latency_p99_ms: float = math.inf
    error: str | None = None

    def failures(self, latency_budget_ms: float) -> list[str]:
        """Human-readable reasons this model must not serve; empty when it is fit."""
        if not self.loads:
            return [f"does not load: {self.error}"]
        problems = []
        if not self.predicts:
            problems.append(f"cannot predict on its input example: {self.error}")
        elif not self.finite:
            problems.append("predictions contain NaN or infinite values")
        if not self.has_signature:
            problems.append("has no model signature")
        elif self.signature_mismatch:
            problems.append(self.signature_mismatch)
        if self.predicts and self.latency_p99_ms > latency_budget_ms:
            problems.append(f"p99 latency {self.latency_p99_ms:.2f} ms exceeds the {latency_budget_ms:g} ms budget")
        return problems


@dataclass(frozen=True, slots=True)
class Evidence:
    """What is known about one model version: its sanity and its metrics on the evaluation window."""

    version: str
    sanity: SanityCheck
    metrics: dict[str, float] = field(default_factory=dict)
    window: str = ""
    # Why metrics are missing (e.g. the model could not predict the window), for the decision's reasons.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    """The gate's verdict and every reason behind it."""

    promote: bool
    reasons: tuple[str, ...]
    challenger_version: str
    champion_version: str | None

    def as_tags(self) -> dict[str, str]:
        """The decision as MLflow version tags (values are strings, reasons joined)."""
        return {
            "promotion.decision": "promoted" if self.promote else "rejected",
            "promotion.reasons": "; ".join(self.reasons)[:5000],
            "promotion.against": self.champion_version or "none",
        }


def decide_promotion(
    challenger: Evidence, champion: Evidence | None, config: PromotionConfig, live: ShadowEvidence | None = None
) -> PromotionDecision:
    """Promote only a sane challenger that beats the champion by the margin (and buy-and-hold, if required).

    A champion that is itself broken is replaced by any sane challenger; the first model ever needs only sanity
    and, where configured, to beat buy-and-hold. `live` is the challenger's shadow record against a champion:
    counted when it holds `shadow_min_bars` bars against the current champion, where it must not trail the
    champion's live return by more than `max_shadow_shortfall` (and is required with `require_shadow`).
    """
    decision, final = _decide_offline(challenger, champion, config)
    if final:
        return decision  # unfit, unscored or not comparable: live evidence cannot rescue it
    ok, reasons = decision.promote, list(decision.reasons)
    champ_version = champion.version if champion else None
    usable = live is not None and live.champion_version == champ_version and live.bars >= config.shadow_min_bars
    if live is not None and not usable:
        against = f"v{live.champion_version}" if live.champion_version else "no champion"
        reasons.append(
            f"live shadow evidence not used: {live.bars} bars against {against} "
            f"(needs {config.shadow_min_bars} against the current champion)"
        )
    if usable and live is not None:
        shortfall = live.champion_return - live.challenger_return
        text = (
            f"live shadow over {live.bars} bars: challenger {live.challenger_return:+.2%} vs "
            f"{'champion v' + champ_version if champ_version else 'flat'} {live.champion_return:+.2%}"
        )
        if shortfall > config.max_shadow_shortfall:
            ok = False
            reasons.append(f"{text}: trails by more than {config.max_shadow_shortfall:.2%}")
        else:
            reasons.append(text)
    elif config.require_shadow:
        ok = False
        reasons.append(f"no live shadow evidence of {config.shadow_min_bars}+ bars (registry.promotion.require_shadow)")
    return PromotionDecision(ok, tuple(reasons), challenger.version, champ_version)


def _decide_offline(
    challenger: Evidence, champion: Evidence | None, config: PromotionConfig
) -> tuple[PromotionDecision, bool]:
    """The verdict on the held-out window alone, and whether it is final (nothing else can change it)."""
    reasons: list[str] = []
    champ_version = champion.version if champion else None
    problems = challenger.sanity.failures(config.latency_budget_ms)
    if problems:
        unfit = tuple(f"challenger {p}" for p in problems)
        return PromotionDecision(False, unfit, challenger.version, champ_version), True
    if champion is not None and champion.window != challenger.window:
        return PromotionDecision(
            False,
            (f"models were scored on different windows ({challenger.window!r} vs {champion.window!r})",),
            challenger.version,
            champ_version,
        ), True
    score = challenger.metrics.get(config.metric)
    if score is None or not math.isfinite(score):
        return PromotionDecision(
            False,
            (f"challenger has no finite {config.metric!r} on the evaluation window", *challenger.notes),
            challenger.version,
            champ_version,
        ), True
    sign = 1.0 if config.higher_is_better else -1.0
    ok = True
    if config.require_beat_buy_and_hold:
        baseline = challenger.metrics.get(config.baseline_metric)
        if baseline is None or not math.isfinite(baseline):
            ok = False
            reasons.append(f"no buy-and-hold {config.baseline_metric!r} to compare with")
        elif sign * (score - baseline) <= 0:
            ok = False
            reasons.append(f"{config.metric} {score:.4f} does not beat buy-and-hold {baseline:.4f}")
        else:
            reasons.append(f"{config.metric} {score:.4f} beats buy-and-hold {baseline:.4f}")
    if champion is None:
        reasons.append("no current champion")
    elif champion.sanity.failures(config.latency_budget_ms):
        reasons.append(
            f"current champion v{champion.version} is unfit: {champion.sanity.failures(config.latency_budget_ms)[0]}"
        )
    else:
        incumbent = champion.metrics.get(config.metric)
        if incumbent is None or not math.isfinite(incumbent):
            reasons.append(f"champion v{champion.version} has no finite {config.metric!r}; challenger wins by default")
        elif sign * (score - incumbent) > config.min_improvement:
            reasons.append(
                f"{config.metric} {score:.4f} beats champion v{champion.version} {incumbent:.4f} "
                f"by more than {config.min_improvement:g}"
            )
        else:
            ok = False
            reasons.append(
                f"{config.metric} {score:.4f} vs champion v{champion.version} {incumbent:.4f}: "
                f"improvement within the {config.min_improvement:g} margin"
            )
    return PromotionDecision(ok, tuple(reasons), challenger.version, champ_version), False


@dataclass(frozen=True, slots=True)
class ServingInput:
    """The input a promoted model will be served: its MLflow schema and where that schema came from."""

    schema: Schema
    # Named in the gate's reasons, e.g. "champion v3's input signature" or "the feature columns".
    source: str


# Input types MLflow's schema enforcement converts safely into a signature's column type (besides the same type):
# int -> long, float -> double, int -> double (`mlflow.models.utils._enforce_mlflow_datatype`).
_SAFE_UPCASTS = {"long": {"integer"}, "double": {"float", "integer"}}


def signature_mismatches(model_inputs: Schema, serving: Schema) -> list[str]:
    """Why a model whose input signature is `model_inputs` cannot take `serving`; empty when it accepts it.

    Columns are matched by name: each required model column must be present in `serving` with the same type or
    one MLflow upcasts safely to it; an optional model column, when present, must be compatible too. Extra serving
    columns are fine (the model ignores them). Tensor signatures must equal the serving tensors.
    """
    if model_inputs.is_tensor_spec() or serving.is_tensor_spec():
        if model_inputs.is_tensor_spec() and serving.is_tensor_spec():
            return [] if model_inputs == serving else [f"tensor input {model_inputs} differs from {serving}"]
        kind = "tensors" if model_inputs.is_tensor_spec() else "named columns"
        return [f"the model takes {kind}, the serving input does not"]
    if not model_inputs.has_input_names():
        return ["the model's input signature has unnamed columns"]
    offered = {spec.name: spec.type for spec in serving.inputs if spec.name is not None}
    missing, wrong = [], []
    for spec in model_inputs.inputs:
        name = str(spec.name)
        if name not in offered:
            if spec.required:
                missing.append(name)
        elif not _accepts(spec.type, offered[name]):
            wrong.append(f"{name!r} is {_type_name(offered[name])} there but the model wants {_type_name(spec.type)}")
    problems = [f"columns missing there: {missing}"] if missing else []
    return problems + wrong


def _accepts(wanted: Any, given: Any) -> bool:
    from mlflow.types import DataType
    from mlflow.types.schema import AnyType

    if isinstance(wanted, AnyType) or wanted == given:
        return True
    if isinstance(wanted, DataType) and isinstance(given, DataType):
        return given.name in _SAFE_UPCASTS.get(wanted.name, set())
    return False


def _type_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype))


def check_model(
    model_uri: str, *, n_timings: int = 50, input_example: Any = None, serving_input: ServingInput | None = None
) -> SanityCheck:
    """Load a pyfunc model and predict on its input example: does it load, predict finite values, and how fast;
    with `serving_input`, also whether its signature accepts that input."""
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # any loader failure means the model cannot serve
        return SanityCheck(loads=False, error=f"{type(exc).__name__}: {exc}")
    return check_loaded_model(model, n_timings=n_timings, input_example=input_example, serving_input=serving_input)


def check_loaded_model(
    model: Any, *, n_timings: int = 50, input_example: Any = None, serving_input: ServingInput | None = None
) -> SanityCheck:
    """`check_model` on an already loaded pyfunc model (scoring loads each model once)."""
    signature = model.metadata.signature
    has_signature = signature is not None
    mismatch = None
    if signature is not None and serving_input is not None:
        inputs = signature.inputs
        problems = ["it has no input schema"] if inputs is None else signature_mismatches(inputs, serving_input.schema)
        if problems:
            mismatch = f"input signature does not match {serving_input.source}: {'; '.join(problems)}"
    example = input_example if input_example is not None else model.input_example
    if example is None:
        return SanityCheck(
            True,
            has_signature=has_signature,
            signature_mismatch=mismatch,
            error="no input example was logged with the model",
        )
    try:
        output = model.predict(example)
        timings = []
        for _ in range(n_timings):
            wall, cpu = time.perf_counter(), time.process_time()
            model.predict(example)
            # The gate judges the model, not the machine's load: on a busy machine a call's wall time includes
            # waiting for a core, its CPU time does not (and with several threads the wall time is the smaller).
            timings.append(min(time.perf_counter() - wall, time.process_time() - cpu) * 1000)
    except Exception as exc:
        return SanityCheck(
            True, has_signature=has_signature, signature_mismatch=mismatch, error=f"{type(exc).__name__}: {exc}"
        )
    return SanityCheck(
        loads=True,
        predicts=True,
        finite=_all_finite(output),
        has_signature=has_signature,
        signature_mismatch=mismatch,
        latency_p99_ms=float(np.percentile(timings, 99)),
    )


def _all_finite(output: Any) -> bool:
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        numeric = output.select_dtypes(include="number")
        return bool(np.isfinite(numeric.to_numpy(dtype=float)).all()) if numeric.size else True
    if isinstance(output, dict):
        return all(_all_finite(v) for v in output.values())
    array = np.asarray(output)
    return bool(np.isfinite(array.astype(float)).all()) if array.dtype.kind in "fiub" else True
