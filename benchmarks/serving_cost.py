"""Serving cost per architecture: decode and prefill throughput, KV bytes per token, and the
decode time per token of a banded-only stack against position (flat past the window).

1. For each architecture at ``--size`` (random init, fp32 CPU unless ``--device``):
   ``harness.serving.inference_bench.bench_inference`` at batch 1 and ``--batch-size``, with a
   prompt of half the context and ``--new-tokens`` decoded; KV bytes per token measured (the
   cache's buffers for P + G positions) beside the analytic figure; gpt3 / gpt2 ratio of both.
2. Decode ms per step by position for a **banded-only** stack (the size's gpt3 with
   ``attention_pattern=[banded]``, ``--flat-window`` 128, ``--flat-context`` 1024) and the same
   stack all dense, from position 1 out to 4x the window: medians per window-wide bucket over
   ``--repeats`` rounds, alternating between the two stacks. Last bucket / second bucket (the first past the window) is the
   flatness figure: 1.0 = flat; the dense stack shows the growth the band avoids.

    python benchmarks/serving_cost.py [--size micro] [--batch-size 8] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")


def per_architecture(size: str, batch_size: int, new_tokens: int, device: str, repeats: int) -> list[dict]:
    from harness.serving.inference_bench import bench_inference

    rows = []
    for arch in ARCHS:
        row = {"arch": arch}
        for batch in (1, batch_size):
            result = bench_inference(arch, size, batch_size=batch, new_tokens=new_tokens, dtype="fp32", device=device,
                                     warmup=1, repeats=repeats)
            row[f"decode_tokens_per_s_b{batch}"] = result["decode_tokens_per_s"]
            row[f"prefill_tokens_per_s_b{batch}"] = result["prefill_tokens_per_s"]
            row[f"decode_latency_ms_p50_b{batch}"] = result["decode_latency_ms_p50"]
        row.update({key: result[key] for key in ("kv_bytes_per_token", "kv_bytes_per_token_analytic", "prompt_tokens",
                                                  "new_tokens", "attention_layers")})
        rows.append(row)
    return rows


def decode_ms_by_position(size: str, window: int, context: int, device: str, repeats: int) -> dict[str, list[float]]:
    """{"banded": ..., "dense": ...}: median ms per decode step in window-wide buckets from position 1
    out to 4 windows, for the size's gpt3 all banded and all dense; rounds alternate between the two."""
    import architectures
    from harness.serving.inference_bench import time_decode

    if context < 4 * window:
        raise SystemExit(f"--flat-context {context} must hold 4 windows of {window}.")
    models = {}
    for pattern in ("banded", "dense"):
        torch.manual_seed(0)
        models[pattern] = architectures.build("gpt3", size, context=context, window=window,
                                              attention_pattern=(pattern,)).to(device).eval()
    steps = 4 * window - 1
    rounds: dict[str, list[list[float]]] = {pattern: [] for pattern in models}
    with torch.inference_mode():
        for round_ in range(repeats + 1):  # the first round warms up
            for pattern, model in models.items():
                times = time_decode(model, [[1]], steps, device)
                if round_:
                    rounds[pattern].append(times)
    out = {}
    for pattern, values in rounds.items():
        per_step = [statistics.median(step) for step in zip(*values)]  # step i decodes position i + 1
        buckets = [per_step[max(0, b * window - 1):(b + 1) * window - 1] for b in range(4)]
        out[pattern] = [1e3 * statistics.median(bucket) for bucket in buckets]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="micro")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flat-window", type=int, default=128, help="window of the flatness stacks (tokens)")
    parser.add_argument("--flat-context", type=int, default=1024, help="context of the flatness stacks (≥ 4 windows)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = per_architecture(args.size, args.batch_size, args.new_tokens, args.device, args.repeats)
    window = args.flat_window
    by_position = decode_ms_by_position(args.size, window, args.flat_context, args.device, args.repeats)
    banded, dense = by_position["banded"], by_position["dense"]
    by_arch = {row["arch"]: row for row in rows}
    kv_ratio = by_arch["gpt3"]["kv_bytes_per_token"] / by_arch["gpt2"]["kv_bytes_per_token"]
    kv_ratio_analytic = by_arch["gpt3"]["kv_bytes_per_token_analytic"] / by_arch["gpt2"]["kv_bytes_per_token_analytic"]
    result = {"size": args.size, "device": args.device, "threads": args.threads, "load_1min": os.getloadavg()[0],
              "architectures": rows, "kv_ratio_gpt3_gpt2": kv_ratio, "kv_ratio_gpt3_gpt2_analytic": kv_ratio_analytic,
              "window": window, "banded_only_decode_ms_by_window": banded, "dense_only_decode_ms_by_window": dense,
              "banded_only_flatness": banded[-1] / banded[1], "dense_only_growth": dense[-1] / dense[1]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    B = args.batch_size
    print(f"{args.size}, fp32 {args.device}, {args.threads} thread(s), 1-min load {result['load_1min']:.2f}; prompt "
          f"{rows[0]['prompt_tokens']} + {rows[0]['new_tokens']} new tokens")
    print(f"| arch | decode tokens/s, batch 1 | decode tokens/s, batch {B} | prefill tokens/s, batch 1 | "
          "KV bytes/token measured (analytic) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['arch']} | {row['decode_tokens_per_s_b1']:,.0f} | {row[f'decode_tokens_per_s_b{B}']:,.0f} | "
              f"{row['prefill_tokens_per_s_b1']:,.0f} | {row['kv_bytes_per_token']:,.0f} "
              f"({row['kv_bytes_per_token_analytic']:,.0f}) |")
    print(f"KV bytes per token gpt3 / gpt2: {kv_ratio:.3f} measured, {kv_ratio_analytic:.3f} analytic")
    spans = [f"{b * window}-{(b + 1) * window}" for b in range(len(banded))]
    print(f"decode ms per step by position ({args.size} shape, context {args.flat_context}, window {window}): "
          + ", ".join(spans))
    print("  banded only: " + ", ".join(f"{v:.3f}" for v in banded) + f"  (last / second bucket: {result['banded_only_flatness']:.2f})")
    print("  dense only:  " + ", ".join(f"{v:.3f}" for v in dense) + f"  (last / second bucket: {result['dense_only_growth']:.2f})")


if __name__ == "__main__":
    main()
