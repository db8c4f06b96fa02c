"""`harness bench --inference`: prefill and decode measured apart (harness.serving.inference_bench)."""

from __future__ import annotations

import argparse
import json

from architectures.config import parse_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inference (--inference)")
    group.add_argument("--inference", action="store_true",
                       help="benchmark serving instead of training: prefill, then greedy decoding with the KV cache")
    group.add_argument("--prompt-tokens", type=int, help="prompt length P (default: half the context)")
    group.add_argument("--new-tokens", type=int, help="decoded tokens G (default: min(128, context - P))")
    group.add_argument("--record", action="store_true",
                       help="with --run: keep the figures in the run's record (serving.b<B>) for compare and study reports")


def format_table(result: dict) -> str:
    mib = 2**20
    kv = result["kv_bytes_per_token"]
    rows = [
        ("prefill", f"{result['prefill_tokens_per_s']:,.0f} tokens/s ({result['prefill_s_median'] * 1e3:.1f} ms median for "
         f"{result['batch_size']} x {result['prompt_tokens']} prompt tokens and the first new token)"),
        ("decode", f"{result['decode_tokens_per_s']:,.0f} tokens/s ({result['new_tokens']} greedy steps, cache on, "
         f"batch {result['batch_size']})"),
        ("decode latency", "p50 {:.2f} / p90 {:.2f} / p99 {:.2f} ms per step".format(
            *(result[f"decode_latency_ms_p{q}"] for q in (50, 90, 99)))),
        ("KV cache", f"{kv:,.0f} bytes/token measured, {result['kv_bytes_per_token_analytic']:,.0f} analytic "
         f"({result['kv_cache_bytes'] / mib:,.2f} MiB for {result['batch_size']} x {result['kv_positions_per_row']} positions)"
         if kv is not None else "not measured (the model's cache does not report its bytes)"),
        ("peak memory", f"{result['peak_memory_bytes'] / mib:,.1f} MiB ({result['peak_memory_kind']})"),
    ]
    layers = result["attention_layers"]
    width = max(len(label) for label, _ in rows)
    lines = [f"{result['arch']} {result['size']} on {result['device']} ({result['device_name']}), {result['dtype']}, "
             f"{result['weights']}",
             f"attention: {layers['dense']} dense, {layers['banded']} banded layers"
             + (f" (window {layers['window']} tokens)" if layers["window"] else ""), ""]
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    lines += ["", f"convention: {result['convention']}"]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from harness.serving.inference_bench import bench_inference, record_serving

    if args.record and not args.run:
        raise ValueError("--record keeps the figures in a run's record; give the run with --run results/<id>.")
    if args.seq_len is not None:
        raise ValueError("--seq-len is for training; with --inference give --prompt-tokens and --new-tokens.")
    result = bench_inference(
        args.arch,
        args.size,
        run=args.run,
        overrides=parse_overrides(args.set),
        batch_size=1 if args.batch_size is None else args.batch_size,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        dtype=args.dtype,
        device=args.device,
        warmup=args.warmup if args.warmup is not None else 1,
        repeats=args.steps if args.steps is not None else 3,
    )
    if args.record:
        record_serving(args.run, result)
    print(json.dumps(result, indent=2) if args.format == "json" else format_table(result))
    return 0
