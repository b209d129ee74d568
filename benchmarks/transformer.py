"""Market transformer: training throughput and inference latency on this machine (prints figures only).

Training: optimizer steps per second of the Lightning module's loss (forward + backward + AdamW) on random
windows, in samples (windows) and bar-steps per second, for the local config (params.yaml) and the seed's
512/8/6 config. Inference: p50/p99 latency of one forward pass at batch 1 and for 100 assets at once (100
single-asset windows), eager against `torch.compile` (inductor). At batch 1 on CPU, serving's own call
(`forward_last`, the last step only) is also timed eager and as a TorchScript trace (`torch.jit.trace`;
deprecated by PyTorch but still shipped, and the classic batch-1 serving export; ONNX Runtime is not installed).
Serving many symbols (local config, `--serving-symbols`): re-running every symbol's window against the
sliding-attention model's one-bar step from cached keys (`MarketTransformer.step`), one batched call each.
Targets on one CPU thread: local config p99 <= 2 ms at batch 1, a d128/4-layer/seq-128 model p99 <= 5 ms; the
seed config is reported as measured. Nothing is asserted.

With a CUDA device (torch.cuda.is_available()), the local and seed configs are also measured on the GPU:
training throughput in fp32, bf16-mixed (autocast to bfloat16 over fp32 weights, as Lightning's
`precision="bf16-mixed"`) and bf16-mixed + torch.compile, and inference latency eager vs torch.compile; every
GPU timing is bracketed by torch.cuda.synchronize().

    python benchmarks/transformer.py [--threads 1] [--train-threads 2] [--budget 3] [--no-compile] [--compile-seed]
        [--no-script] [--only SUBSTRING] [--gpu-batch 256] [--gpu-train-steps 20] [--no-gpu]
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import cast

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
# Measured on a GPU too: the local config and the seed's (d128 is a CPU-serving target only).
GPU_SPECS = (SPECS[0], SPECS[2])


Forward = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def build(spec: Spec, device: str = "cpu", attention_window: int | None = None) -> MarketTransformer:
    torch.manual_seed(0)
    return MarketTransformer(
        len(COLUMNS),
        1,
        d_model=spec.d_model,
        n_heads=spec.n_heads,
        n_layers=spec.n_layers,
        max_seq_length=spec.seq_len,
        market_features=market_feature_indices(COLUMNS),
        attention_window=attention_window,
    ).to(device)


def inputs(batch: int, seq_len: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, seq_len, 1, len(COLUMNS))
    minutes = torch.arange(seq_len, dtype=torch.float32) * 60 % 1440
    calendar = torch.stack([minutes, minutes // 1440 % 7, *(torch.zeros(seq_len),) * 3], -1)
    return x.to(device), calendar.expand(batch, seq_len, 5).contiguous().to(device)


def synchronizer(device: str) -> Callable[[], None]:
    """Waits for the device's queued kernels (CUDA launches are asynchronous); a no-op on CPU."""
    return torch.cuda.synchronize if device.startswith("cuda") else lambda: None


def timed(
    fn: Callable[[], object],
    budget_secs: float,
    *,
    min_runs: int = 5,
    max_runs: int = 2000,
    sync: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """Latencies (ms) of `fn` after warm-up, as many runs as fit in the budget (within [min_runs, max_runs]).

    `sync` runs before each clock start and inside each timed region, so a GPU call is timed to completion.
    """
    for _ in range(3):
        fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    once = time.perf_counter() - start
    runs = int(min(max_runs, max(min_runs, budget_secs / max(once, 1e-6))))
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        out[i] = (time.perf_counter() - t0) * 1000
    return out


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager[object]:
    """Lightning's "bf16-mixed": bfloat16 autocast over fp32 weights; "32": plain fp32."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_throughput(
    spec: Spec,
    steps: int,
    *,
    device: str = "cpu",
    batch: int | None = None,
    precision: str = "32",
    compiled: bool = False,
) -> tuple[float, float]:
    """(samples/s, step time s) of full training steps with every step of the window labelled."""
    batch = batch or spec.train_batch
    model = build(spec, device).train()
    forward = cast(Forward, torch.compile(model)) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, calendar = inputs(batch, spec.seq_len, device)
    labels = torch.randint(0, 3, (batch, spec.seq_len, 1), device=device)
    target = torch.randn(batch, spec.seq_len, 1, device=device)
    sync = synchronizer(device)

    def step() -> None:
        with autocast(device, precision):
            logits, expected = forward(x, calendar)
            loss = F.cross_entropy(logits.reshape(-1, 3).float(), labels.reshape(-1))
            loss = loss + 0.5 * F.mse_loss(expected.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up (allocator, kernels; compiling when `compiled`)
    if device != "cpu":
        step()  # cuDNN/cuBLAS heuristics settle on the second step
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    per_step = (time.perf_counter() - start) / steps
    return batch / per_step, per_step


class LastStep(torch.nn.Module):
    """`forward_last` (serving's call) as a module's forward, so torch.jit.trace can record it."""

    def __init__(self, model: MarketTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, calendar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_last(x, calendar)


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """torch.jit.trace warns that it is deprecated and that the model's shape checks become constants."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def latency_rows(
    spec: Spec, batch: int, budget: float, compile_too: bool, *, script: bool = False, device: str = "cpu"
) -> list[str]:
    """p50/p99 rows: eager and compiled `forward`; with `script`, eager and TorchScript-traced `forward_last`."""
    model = build(spec, device).eval()
    x, calendar = inputs(batch, spec.seq_len, device)
    sync = synchronizer(device)
    rows = []
    # (name, how to build it, which eager output it must match)
    variants: list[tuple[str, Callable[[], Forward], str]] = [("eager", lambda: model, "forward")]
    if compile_too:
        variants.append(("torch.compile", lambda: cast(Forward, torch.compile(model, dynamic=False)), "forward"))
    if script:
        last = LastStep(model).eval()
        variants.append(("eager last-step", lambda: last, "last"))

        def trace() -> Forward:
            with quiet_tracing():
                return cast(Forward, torch.jit.trace(last, (x, calendar), check_trace=False))

        variants.append(("TorchScript last-step", trace, "last"))
    references: dict[str, torch.Tensor] = {}
    for name, make, kind in variants:
        with torch.inference_mode():
            sync()
            started = time.perf_counter()
            fn = make()
            logits = fn(x, calendar)[0]
            sync()
            first = time.perf_counter() - started
            reference = references.setdefault(kind, logits)
            diff = float((logits - reference).abs().max())  # compiled/traced output must match eager
            ms = timed(partial(fn, x, calendar), budget, sync=sync)
        p50, p99 = np.percentile(ms, [50, 99])
        target = ""
        if spec.target_p99_ms is not None and batch == 1 and device == "cpu":
            verdict = "meets" if p99 <= spec.target_p99_ms else "MISSES"
            target = f"  target p99 <= {spec.target_p99_ms} ms: {verdict}"
        extra = f"  first call {first:.1f} s, max |diff| vs eager {diff:.1e}" if not name.startswith("eager") else ""
        rows.append(
            f"  {spec.name:<24} batch {batch:>3}  {name:<21} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  "
            f"({len(ms)} runs){target}{extra}"
        )
    return rows


def gpu_rows(specs: tuple[Spec, ...], args: argparse.Namespace, device: str = "cuda") -> None:
    """Training (fp32 / bf16-mixed / bf16-mixed + compile) and inference (eager / compile) on the CUDA device."""
    props = torch.cuda.get_device_properties(0)
    bf16 = torch.cuda.is_bf16_supported()
    print(f"== GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}); bf16: {bf16}")
    print(f"== GPU training throughput ({args.gpu_train_steps} timed steps after warm-up)")
    precisions = [("fp32", "32", False)]
    if bf16:
        precisions.append(("bf16-mixed", "bf16-mixed", False))
        if not args.no_compile:
            precisions.append(("bf16-mixed+compile", "bf16-mixed", True))
    for spec in specs:
        for batch in sorted({spec.train_batch, args.gpu_batch}):
            baseline = None
            for label, precision, compiled in precisions:
                samples, per_step = train_throughput(
                    spec, args.gpu_train_steps, device=device, batch=batch, precision=precision, compiled=compiled
                )
                baseline = baseline or samples
                print(
                    f"  {spec.name:<24} batch {batch:>4} {label:<19} {samples:11.1f} samples/s  "
                    f"{samples * spec.seq_len:12.0f} bar-steps/s  ({per_step * 1000:.1f} ms/step, "
                    f"{samples / baseline:.2f}x fp32)",
                    flush=True,
                )
            torch.cuda.empty_cache()
    print("== GPU inference latency, one forward pass (fp32), p50/p99, timed to torch.cuda.synchronize()")
    for spec in specs:
        for batch in (1, 100):
            for row in latency_rows(spec, batch, args.budget, not args.no_compile, device=device):
                print(row, flush=True)


def streaming_rows(spec: Spec, symbols: int, budget: float, window: int = 32) -> None:
    """Serving `symbols` symbols one new bar each: the window re-run (`forward_last` over each symbol's last
    `seq_len` bars, what a full-attention model must do) against the sliding-attention model's one-bar `step` from
    cached keys (what `serving/streaming.py` does), same size with `attention_window`; both batched."""
    print(f"== serving {symbols} symbols one new bar each ({torch.get_num_threads()} thread(s)), p50/p99")
    full, sliding = build(spec).eval(), build(spec, attention_window=window).eval()
    x, calendar = inputs(symbols, spec.seq_len)
    cache = sliding.new_cache(symbols)
    bar = 0

    def step() -> None:
        nonlocal bar
        sliding.step(x[:, bar % spec.seq_len], calendar[:, bar % spec.seq_len], cache)
        bar += 1

    with torch.inference_mode():
        rows = (
            ("window re-run (forward_last), full attention", lambda: full.forward_last(x, calendar)),
            ("window re-run (forward_last), sliding", lambda: sliding.forward_last(x, calendar)),
            (f"one-bar step, sliding window {window} (cached)", step),
        )
        base = None
        for label, fn in rows:
            ms = timed(fn, budget)
            base = base or float(np.percentile(ms, 50))
            p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
            print(f"  {spec.name:<24} {label:<48} p50 {p50:7.2f}  p99 {p99:7.2f} ms  (x{base / p50:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for inference (targets: 1)")
    parser.add_argument("--train-threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per latency figure")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first call compiles)")
    parser.add_argument(
        "--compile-seed", action="store_true", help="also torch.compile the seed config on CPU (minutes of compiling)"
    )
    parser.add_argument("--no-script", action="store_true", help="skip the TorchScript (batch-1 CPU) rows")
    parser.add_argument("--only", default="", help="measure only the configs whose name contains this (e.g. local)")
    parser.add_argument("--gpu-batch", type=int, default=256, help="GPU training batch besides the config's own")
    parser.add_argument("--gpu-train-steps", type=int, default=20)
    parser.add_argument("--no-gpu", action="store_true", help="skip the CUDA measurements even with a GPU")
    parser.add_argument("--serving-symbols", type=int, default=50, help="symbols in the streaming-serving rows")
    args = parser.parse_args()
    specs = tuple(s for s in SPECS if args.only in s.name)
    if not specs:
        parser.error(f"--only {args.only!r} matches none of {[s.name for s in SPECS]}")

    print(f"torch {torch.__version__}, CPU, {len(COLUMNS)} input features, one asset per window")
    print(f"== training throughput ({args.train_threads} threads, every window step labelled)")
    for spec in specs:
        torch.set_num_threads(args.train_threads)
        samples, per_step = train_throughput(spec, args.train_steps)
        print(
            f"  {spec.name:<24} batch {spec.train_batch:>3}: {samples:9.1f} samples/s  "
            f"{samples * spec.seq_len:10.0f} bar-steps/s  ({per_step * 1000:.0f} ms/step)"
        )

    torch.set_num_threads(args.threads)
    print(f"== inference latency, one forward pass ({args.threads} thread(s)), p50/p99")
    for spec in specs:
        for batch in (1, 100):
            compile_too = not args.no_compile and (spec.target_p99_ms is not None or args.compile_seed)
            script = batch == 1 and not args.no_script
            for row in latency_rows(spec, batch, args.budget, compile_too, script=script):
                print(row, flush=True)

    if any("local" in spec.name for spec in specs):
        streaming_rows(SPECS[0], args.serving_symbols, args.budget)

    gpu_specs = tuple(s for s in specs if s in GPU_SPECS)
    if args.no_gpu:
        print("== GPU: skipped (--no-gpu)")
    elif not torch.cuda.is_available():
        print("== GPU: not run (no CUDA device on this machine); the seed claims 10,000+ samples/s with a GPU")
    elif gpu_specs:
        gpu_rows(gpu_specs, args)


if __name__ == "__main__":
    main()
