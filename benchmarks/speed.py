"""Every speed ratio of the README's table, measured in one run, with the machine's load noted.

    python benchmarks/speed.py                       # all sections, 1 thread (CPU time: load-proof)
    python benchmarks/speed.py --only eval,banded    # some sections
    python benchmarks/speed.py --threads 2 --format json

Sections (each prints its ratios and the 1-minute load average before and after it):

- ``nanogpt``: gpt2 micro training step (batch 8 x 256) against the faithful nanoGPT in
  ``nanogpt_reference.py``, both in their best CPU configuration (bf16 autocast, fused
  AdamW, no compile: compile loses on this CPU, see ``compile``), alternating steps, ratio
  of medians (wall and process CPU time).
- ``eval``: packed log-likelihood vs one request per forward (the synthetic multiple-choice
  requests of ``harness/speed_ratios.py``), and vs lm-eval's ``HFLM`` on the
  same weights/tokenizer/requests (piqa + hellaswag + lambada, ``eval_vs_hflm.py``).
- ``banded``: banded (T = 2048, w = 256, block 64) vs dense causal SDPA attention at gpt3
  125m's heads (12 x 64), the attention core and the whole layer, fp32 and bf16,
  forward+backward.
- ``moe``: gpt4 micro (top-2 of 8 experts, expert width d_ff/2) vs gpt3 micro, equal active
  FLOPs per token, training step time.
- ``compile``: ``torch.compile`` (inductor) vs eager, gpt2 nano fp32 training step: compile
  time, step time, break-even steps.

Ratios are "how many times faster" (time of the other / time of ours). With one thread
(the default) the process's CPU time is the figure quoted: other processes on a shared
machine barely change it, while wall time moves with them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.speed_ratios import cpu_median, moe_per_active_flop, packed_eval_speedup  # noqa: E402

SECTIONS = ("nanogpt", "eval", "banded", "moe", "compile")


def _load(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load1() -> float:
    return os.getloadavg()[0]


def section_nanogpt(steps: int = 20) -> dict:
    ref = _load("nanogpt_reference", ROOT / "benchmarks" / "nanogpt_reference.py")
    r = ref.compare(steps=steps, warmup=5, batch_size=8, seq_len=256, size="micro")
    return {"ours_vs_nanogpt_wall": r["ratio_ours_over_nanogpt"], "ours_vs_nanogpt_cpu": r["ratio_ours_over_nanogpt_cpu"],
            "median_step_s": r["median_step_s"], "dtype": r["settings"]["dtype"], "target": 1.2}


def section_eval(limit: int = 200, repeats: int = 2) -> dict:
    hflm = _load("eval_vs_hflm", ROOT / "benchmarks" / "eval_vs_hflm.py")
    synthetic = packed_eval_speedup(repeats)
    tasks = hflm.measure(limit, repeats)
    return {
        "synthetic_ours_vs_one_per_forward_cpu": synthetic, "target_one_per_forward": 5.0,
        "tasks_requests": tasks["requests"], "tasks_max_abs_diff": tasks["max_abs_diff"],
        "tasks_ours_vs_one_per_forward_cpu": tasks["ours_vs_one_per_forward_cpu"],
        "tasks_ours_vs_hflm_cpu": tasks["ours_vs_hflm_cpu"], "tasks_ours_vs_hflm_wall": tasks["ours_vs_hflm"],
        "tasks_cpu_seconds": tasks["cpu_seconds"], "target_hflm": 2.0,
    }


def section_banded(T: int = 2048, window: int = 256, repeats: int = 5) -> dict:
    import torch.nn.functional as F

    import architectures
    from architectures.attention import CausalSelfAttention, banded_attention_blocked

    config = architectures.get("gpt3").config("125m")
    H, D, block = config.n_head, config.d_head, config.banded_block or 64
    out = {"T": T, "window": window, "block": block, "heads": H, "d_head": D, "target": 3.0}
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, H, T, D, generator=g).to(dtype).requires_grad_() for _ in range(3))

        def core(kernel):
            def run():
                kernel(q, k, v).float().sum().backward()
            return run

        dense = cpu_median(core(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)), repeats)
        banded = cpu_median(core(lambda q, k, v: banded_attention_blocked(q, k, v, window, block)), repeats)
        x = torch.randn(1, T, config.d_model, generator=g, requires_grad=True)
        layers = {kind: CausalSelfAttention(config, window=w) for kind, w in (("dense", None), ("banded", window))}
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16)

        def layer_step(layer):
            def run():
                with autocast:
                    y = layer(x)
                y.float().sum().backward()
            return run

        layer_dense, layer_banded = (cpu_median(layer_step(layers[kind]), repeats) for kind in ("dense", "banded"))
        out[dtype_name] = {"core_speedup": dense / banded, "layer_speedup": layer_dense / layer_banded,
                           "core_ms": {"dense": dense * 1e3, "banded": banded * 1e3}}
    return out


def section_moe(repeats: int = 5) -> dict:
    r = moe_per_active_flop(repeats)
    return {"moe_step_over_dense_step": r["step_cpu_s"]["gpt4"] / r["step_cpu_s"]["gpt3"],
            "active_flops_ratio": r["active_flops_ratio"], "step_cpu_s": r["step_cpu_s"], "dtype": r["dtype"]}


def section_compile(repeats: int = 10) -> dict:
    import architectures
    from harness.bench import TrainingStep
    from harness.device import configure_device

    out = {}
    for compiled in (False, True):
        settings = configure_device("cpu", "fp32", compile=compiled)
        torch.manual_seed(0)
        model = architectures.build("gpt2", "nano")
        step = TrainingStep(model, settings, 8, 64, model.config.vocab_size)
        start = time.perf_counter()
        step.step()  # compiles, when compiling
        first = time.perf_counter() - start
        out["compiled" if compiled else "eager"] = {"first_step_wall_s": first, "step_cpu_s": cpu_median(step.step, repeats)}
    gain = out["eager"]["step_cpu_s"] - out["compiled"]["step_cpu_s"]
    extra = out["compiled"]["first_step_wall_s"] - out["eager"]["first_step_wall_s"]
    out["compiled_vs_eager"] = out["eager"]["step_cpu_s"] / out["compiled"]["step_cpu_s"]
    out["break_even_steps"] = extra / gain if gain > 0 else None
    return out


RUNNERS = {"nanogpt": section_nanogpt, "eval": section_eval, "banded": section_banded, "moe": section_moe,
           "compile": section_compile}


def summary_lines(name: str, r: dict) -> list[str]:
    if name == "nanogpt":
        return [f"ours vs nanoGPT (gpt2 micro training, {r['dtype']}): {r['ours_vs_nanogpt_cpu']:.2f}x CPU time, "
                f"{r['ours_vs_nanogpt_wall']:.2f}x wall (target {r['target']}x)"]
    if name == "eval":
        return [f"packed eval vs one request per forward (synthetic multiple choice): {r['synthetic_ours_vs_one_per_forward_cpu']:.2f}x (target 5x)",
                f"packed eval vs one request per forward (piqa+hellaswag+lambada {sum(r['tasks_requests'].values())} requests): "
                f"{r['tasks_ours_vs_one_per_forward_cpu']:.2f}x",
                f"ours vs lm-eval HFLM (same requests/weights, max |Δ ll| {r['tasks_max_abs_diff']:.1e}): "
                f"{r['tasks_ours_vs_hflm_cpu']:.2f}x CPU time, {r['tasks_ours_vs_hflm_wall']:.2f}x wall (target 2x)"]
    if name == "banded":
        return [f"banded vs dense attention, T={r['T']} w={r['window']} {dtype} fwd+bwd: core {r[dtype]['core_speedup']:.2f}x, "
                f"layer {r[dtype]['layer_speedup']:.2f}x (target 3x)" for dtype in ("fp32", "bf16")]
    if name == "moe":
        return [f"MoE (gpt4 micro) step / dense (gpt3 micro) step at {r['active_flops_ratio']:.2f}x the active FLOPs: "
                f"{r['moe_step_over_dense_step']:.2f}x the time ({r['dtype']})"]
    if name == "compile":
        be = r["break_even_steps"]
        return [f"torch.compile vs eager (gpt2 nano fp32 training step): {r['compiled_vs_eager']:.2f}x, compile "
                f"{r['compiled']['first_step_wall_s']:.0f} s, break-even {'never' if be is None else f'{be:.0f} steps'}"]
    return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated sections of {', '.join(SECTIONS)} (default all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU time is load-proof)")
    parser.add_argument("--eval-limit", type=int, default=200, help="documents per task for the HFLM comparison")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "torch": torch.__version__, "cpus": os.cpu_count()}
    for name in names:
        before = load1()
        r = RUNNERS[name](limit=args.eval_limit) if name == "eval" else RUNNERS[name]()
        r["load_average"] = [before, load1()]
        results[name] = r
        if args.format == "text":
            for line in summary_lines(name, r):
                print(f"{line}  [load {before:.1f}→{load1():.1f}, {args.threads} thread(s)]", flush=True)
    if args.format == "json":
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
