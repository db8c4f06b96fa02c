"""Throughput of one architecture: training and prefill tokens/s, achieved FLOP/s, MFU, memory.

Builds the model with the trainer's device defaults (harness.device.configure_device), runs
--warmup steps, then reports the median of --steps timed steps. A training step is forward,
backward, clip to norm 1 and an AdamW step; prefill is an inference forward over the batch.
achieved FLOP/s = analytic training FLOPs/token (3 x forward, 2 per multiply-add) x train
tokens/s; peak FLOP/s is this device's own matmul ceiling in the dtype, measured once with a
large matmul and cached under HARNESS_CACHE_DIR; MFU = achieved / peak.
--run results/<id> takes the model shape of a run instead (trained or imported, e.g. by
`harness import`), with --set overrides on top.
--inference benchmarks serving instead (harness.serving.inference_bench): prefill of
--prompt-tokens and greedy cached decoding of --new-tokens, at --batch-size (default 1),
--steps timed rounds (default 3); with --run, the run's own weights.
"""

from __future__ import annotations

import argparse
import json

from architectures.config import parse_overrides
from harness.cli import add_set_argument, bench_inference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="architecture name (see `python -m harness list`)")
    which.add_argument("--run", help="a run directory (trained or imported): benchmark its model shape")
    parser.add_argument("--size", help="size preset (default: the architecture's first)")
    parser.add_argument("--batch-size", type=int, help="sequences per step (default: 8 on CPU, 32 on CUDA)")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default: the context)")
    add_set_argument(parser)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), help="compute dtype (default: chosen per device)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    parser.add_argument("--steps", type=int, help="timed steps; the median is reported (default: 10; --inference: 3 rounds)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 3; --inference: 1 round)")
    compile_group = parser.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile")
    compile_group.add_argument("--no-compile", dest="compile", action="store_false", help="no torch.compile")
    parser.add_argument(
        "--remeasure-peak",
        action="store_true",
        help="measure the matmul ceiling again (the cache keeps the best rate seen; do it on a quiet machine)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    bench_inference.add_arguments(parser)


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {suffix}{unit}"
    return f"{value:.4g} {unit}"


def format_table(result: dict) -> str:
    defaults = ", ".join(f"{name}={d['value']} ({d['source']})" for name, d in result["defaults"].items())
    rows = [
        ("train", f"{result['train_tokens_per_s']:,.0f} tokens/s (median of {result['steps']} steps, "
         f"{result['train_step_s_median'] * 1e3:.1f} ms/step of {result['tokens_per_step']} tokens)"),
        ("prefill", f"{result['prefill_tokens_per_s']:,.0f} tokens/s (inference forward, median)"
         if result["prefill_tokens_per_s"] else "not measured"),
        ("train FLOPs per token", _si(result["train_flops_per_token"], "FLOPs/token") + " (analytic, 3 x forward)"),
        ("achieved", _si(result["achieved_flops_per_s"], "FLOP/s") + " (analytic FLOPs/token x tokens/s)"),
        ("peak", _si(result["peak_flops_per_s"], "FLOP/s") + f" ({result['peak_flops_source']})"),
        ("MFU", f"{100 * result['mfu']:.2f} % of peak (achieved / peak)"),
        ("peak memory", f"{result['peak_memory_bytes'] / 2**20:,.1f} MiB ({result['peak_memory_kind']})"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{result['arch']} {result['size']} on {result['device']} ({result['device_name']}), {result['dtype']}"]
    lines.append(f"defaults: {defaults}")
    lines.append("settings: " + "; ".join(result["settings"]["notes"]))
    lines.append("")
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    lines.append("")
    lines.append(f"convention: {result['convention']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from harness.bench import DEFAULT_STEPS, DEFAULT_WARMUP, bench

    if args.inference:
        return bench_inference.main(args)

    result = bench(
        args.arch,
        args.size,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        overrides=parse_overrides(args.set),
        dtype=args.dtype,
        device=args.device,
        steps=DEFAULT_STEPS if args.steps is None else args.steps,
        warmup=DEFAULT_WARMUP if args.warmup is None else args.warmup,
        compile=args.compile,
        refresh_peak=args.remeasure_peak,
        run=args.run,
    )
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0
