"""Market transformer: training throughput and inference latency on this machine's CPU (prints figures only).

Training: optimizer steps per second of the Lightning module's loss (forward + backward + AdamW) on random
windows, in samples (windows) and bar-steps per second, for the local config (params.yaml) and the seed's
512/8/6 config. Inference: p50/p99 latency of one forward pass at batch 1 and for 100 assets at once (100
single-asset windows), eager against `torch.compile` (inductor; TorchScript is deprecated and ONNX Runtime is
not installed). Targets on one CPU thread: local config p99 <= 2 ms at batch 1, a d128/4-layer/seq-128 model
p99 <= 5 ms; the seed config is reported as measured. Nothing is asserted.

    python benchmarks/transformer.py [--threads 1] [--train-threads 2] [--budget 3] [--no-compile] [--compile-seed]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gpt_trader.data.config import FeaturesConfig
from gpt_trader.ml.transformer.model import MarketTransformer
from gpt_trader.ml.transformer.panel import input_columns, market_feature_indices

COLUMNS = input_columns(FeaturesConfig())


@dataclass(frozen=True)
class Spec:
    """A model size to measure; `target_p99_ms` is the batch-1 target, if any."""

    name: str
    d_model: int
    n_heads: int
    n_layers: int
    seq_len: int
    train_batch: int
    target_p99_ms: float | None


SPECS = (
    Spec("local d64/4h/2L seq64", 64, 4, 2, 64, 64, 2.0),
    Spec("d128/4h/4L seq128", 128, 4, 4, 128, 32, 5.0),
    Spec("seed d512/8h/6L seq100", 512, 8, 6, 100, 32, None),
)


def build(spec: Spec) -> MarketTransformer:
    torch.manual_seed(0)
    return MarketTransformer(
        len(COLUMNS),
        1,
        d_model=spec.d_model,
        n_heads=spec.n_heads,
        n_layers=spec.n_layers,
        max_seq_length=spec.seq_len,
        market_features=market_feature_indices(COLUMNS),
    )


def inputs(batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, seq_len, 1, len(COLUMNS))
    minutes = torch.arange(seq_len, dtype=torch.float32) * 60 % 1440
    calendar = torch.stack([minutes, minutes // 1440 % 7, *(torch.zeros(seq_len),) * 3], -1)
    return x, calendar.expand(batch, seq_len, 5).contiguous()


def timed(fn: Callable[[], object], budget_secs: float, *, min_runs: int = 5, max_runs: int = 2000) -> np.ndarray:
    """Latencies (ms) of `fn` after warm-up, as many runs as fit in the budget (within [min_runs, max_runs])."""
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    runs = int(min(max_runs, max(min_runs, budget_secs / max(once, 1e-6))))
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t0) * 1000
    return out


def train_throughput(spec: Spec, steps: int) -> tuple[float, float]:
    """(samples/s, step time s) of full training steps with every step of the window labelled."""
    model = build(spec).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, calendar = inputs(spec.train_batch, spec.seq_len)
    labels = torch.randint(0, 3, (spec.train_batch, spec.seq_len, 1))
    target = torch.randn(spec.train_batch, spec.seq_len, 1)

    def step() -> None:
        logits, expected = model(x, calendar)
        loss = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1)) + 0.5 * F.mse_loss(expected, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up (allocator, kernels)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    return spec.train_batch / per_step, per_step


def latency_rows(spec: Spec, batch: int, budget: float, compile_too: bool) -> list[str]:
    model = build(spec).eval()
    x, calendar = inputs(batch, spec.seq_len)
    rows = []
    variants: list[tuple[str, Callable[[torch.Tensor, torch.Tensor], object]]] = [("eager", model)]
    if compile_too:
        variants.append(("torch.compile", torch.compile(model, dynamic=False)))
    reference = None
    for name, fn in variants:
        with torch.inference_mode():
            started = time.perf_counter()
            out = fn(x, calendar)
            first = time.perf_counter() - started
            logits = out[0] if isinstance(out, tuple) else out
            if reference is None:
                reference = logits
            diff = float((logits - reference).abs().max())  # compiled output must match eager
            ms = timed(lambda fn=fn: fn(x, calendar), budget)
        p50, p99 = np.percentile(ms, [50, 99])
        target = ""
        if spec.target_p99_ms is not None and batch == 1:
            verdict = "meets" if p99 <= spec.target_p99_ms else "MISSES"
            target = f"  target p99 <= {spec.target_p99_ms} ms: {verdict}"
        extra = f"  first call {first:.1f} s, max |diff| vs eager {diff:.1e}" if name != "eager" else ""
        rows.append(
            f"  {spec.name:<24} batch {batch:>3}  {name:<13} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  "
            f"({len(ms)} runs){target}{extra}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for inference (targets: 1)")
    parser.add_argument("--train-threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per latency figure")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first call compiles)")
    parser.add_argument(
        "--compile-seed", action="store_true", help="also torch.compile the seed config (minutes of compiling)"
    )
    args = parser.parse_args()

    print(f"torch {torch.__version__}, CPU, {len(COLUMNS)} input features, one asset per window")
    print(f"== training throughput ({args.train_threads} threads, every window step labelled)")
    for spec in SPECS:
        torch.set_num_threads(args.train_threads)
        samples, per_step = train_throughput(spec, args.train_steps)
        print(
            f"  {spec.name:<24} batch {spec.train_batch:>3}: {samples:9.1f} samples/s  "
            f"{samples * spec.seq_len:10.0f} bar-steps/s  ({per_step * 1000:.0f} ms/step)"
        )
    if torch.cuda.is_available():
        print("  GPU present but not benchmarked by this script")
    else:
        print("  GPU: not run (no CUDA device on this machine); the seed claims 10,000+ samples/s with a GPU")

    torch.set_num_threads(args.threads)
    print(f"== inference latency, one forward pass ({args.threads} thread(s)), p50/p99")
    for spec in SPECS:
        for batch in (1, 100):
            compile_too = not args.no_compile and (spec.target_p99_ms is not None or args.compile_seed)
            for row in latency_rows(spec, batch, args.budget, compile_too):
                print(row, flush=True)


if __name__ == "__main__":
    main()
