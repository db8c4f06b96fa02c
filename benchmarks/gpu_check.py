"""The prepared GPU check: CUDA tests, MFU, banded vs dense, MoE vs dense, a short compare.

    bash benchmarks/gpu_check.sh OUTDIR                      # one CUDA GPU; < 8 minutes on an H100/H200
    python benchmarks/gpu_check.py --out OUTDIR              # the same, without the wrapper
    python benchmarks/gpu_check.py --dry-run --out OUTDIR    # every step with tiny shapes on the CPU (a test)

Sections (each one independent: a failure is recorded and the next one runs; a section that
no longer fits in ``--time-limit`` is skipped and says so):

1. ``cuda_tests``: ``pytest -m cuda`` (CUDA against CPU results; tests/test_gpu_paths.py).
2. ``gpt2_mfu``: ``harness.bench`` training throughput of gpt2 124m at context 1024, bf16,
   ``torch.compile``: tokens/s and MFU against the measured bf16 matmul peak.
3. ``banded_vs_dense``: one attention layer at T=2048 (12 heads of 64), window 256, forward
   + backward: FlexAttention with the band's block mask against dense causal SDPA (flash);
   and the whole gpt3 125m model, banded/dense alternation against all-dense layers.
4. ``moe_vs_dense``: gpt4 125m-e8 (top-2 of 8 experts, each d_ff/2 wide, so the active
   FLOPs per token equal the dense FFN's) against gpt3 125m, its dense twin, at T=2048.
5. ``compare``: ``python -m harness compare`` of gpt1..gpt4 at the ``micro`` size and its
   default budget (matched training FLOPs), no lm-eval: losses, FLOPs used, tokens/s.
6. ``fsdp2`` (2 or more GPUs; skipped on one): gpt2 124m under torchrun on 2 GPUs with
   ``--parallel ddp`` and ``--parallel fsdp2``: final validation losses, tokens/s, and the
   fsdp2 run's ``checkpoint.pt`` loaded (``benchmarks/gpu_check_fsdp.py``).

Targets (measured here, never asserted by unit tests): MFU ≥ 45 % for gpt2 124m; banded
layer ≥ 2× faster than dense at T=2048, w=256; MoE ≥ 0.6× the dense twin's tokens/s. Each is
printed with whether it was met (``not judged`` in a dry run or off CUDA).

Writes ``OUTDIR/gpu_check.json`` (everything measured), ``OUTDIR/gpu_check.md`` (tables),
``OUTDIR/pytest_cuda.log`` and ``OUTDIR/compare.log``; compare's runs go to
``OUTDIR/results`` and its report to ``OUTDIR/reports``. Exit status 1 if a section failed
(unmet targets do not fail the check).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.gpu_check_fsdp import fsdp2, fsdp2_markdown  # noqa: E402

TARGETS = {
    "mfu": ("gpt2 124m training MFU (bf16, T=1024, compiled) ≥ 45 %", 0.45),
    "banded": ("banded attention layer (T=2048, w=256) ≥ 2× faster than dense", 2.0),
    "moe": ("MoE top-2 of 8 ≥ 0.6× the dense twin's tokens/s at matched active FLOPs", 0.6),
}

# Shapes on a GPU and in the CPU dry run (tiny: the dry run is a unit test).
GPU = {
    "mfu": dict(arch="gpt2", size="124m", seq_len=1024, batch_size=16, dtype="bf16", steps=20, warmup=5),
    "layer": dict(batch=8, heads=12, seq_len=2048, d_head=64, window=256, block=64, dtype=torch.bfloat16, iters=20),
    "models": dict(size="125m", moe_size="125m-e8", seq_len=2048, batch_size=8, dtype="bf16", steps=10, warmup=3),
    "compare": ["--archs", "gpt1,gpt2,gpt3,gpt4", "--size", "micro", "--seeds", "1"],
}
DRY = {
    "mfu": dict(arch="gpt2", size="nano", seq_len=64, batch_size=2, dtype="fp32", steps=2, warmup=1),
    "layer": dict(batch=1, heads=2, seq_len=256, d_head=16, window=32, block=32, dtype=torch.float32, iters=3),
    "models": dict(size="nano", moe_size="nano", seq_len=64, batch_size=2, dtype="fp32", steps=2, warmup=1),
    "compare": ["--archs", "gpt2,gpt4", "--size", "nano", "--seeds", "1", "--budget", "3e9", "--dtype", "fp32"],
}
# rough seconds each section needs on an H100 (compilation included); a section starts only if it fits
SECTION_SECONDS = {"cuda_tests": 150, "gpt2_mfu": 100, "banded_vs_dense": 90, "moe_vs_dense": 40, "compare": 90,
                   "fsdp2": 150}


class Deadline:
    def __init__(self, seconds: float):
        self.start = time.perf_counter()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001 - best effort between sections
        pass


def subprocess_env(out: Path, dry_run: bool = False) -> dict:
    env = dict(os.environ)
    if dry_run:  # tiny shapes: one thread each is fastest, and robust to a loaded machine
        env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["HARNESS_RESULTS_DIR"] = str(out / "results")
    env["HARNESS_REPORTS_DIR"] = str(out / "reports")
    return env


# ---- 1. the CUDA-marked tests ------------------------------------------------------------------


def cuda_tests(out: Path, dry_run: bool, timeout: float) -> dict:
    # the dry run collects only this file (every CUDA test is skipped off CUDA: it checks the plumbing)
    paths = [str(REPO / "tests" / "test_gpu_paths.py")] if dry_run else [str(REPO / "tests")]
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider", *paths]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=subprocess_env(out, dry_run), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        (out / "pytest_cuda.log").write_text(str(expired.stdout or "") + str(expired.stderr or ""))
        return {"status": "failed", "error": f"pytest -m cuda did not finish in {timeout:.0f} s", "log": "pytest_cuda.log"}
    (out / "pytest_cuda.log").write_text(done.stdout + done.stderr)
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|deselected|error|errors)", done.stdout)}
    result = {"command": " ".join(command[1:]), "returncode": done.returncode, "counts": counts,
              "seconds": round(time.perf_counter() - started, 1), "log": "pytest_cuda.log"}
    if done.returncode in (0, 5):  # 5: no test collected
        result["status"] = "ok" if counts.get("passed") else "skipped"
        if result["status"] == "skipped":
            result["note"] = "no CUDA device: every CUDA test skipped" if not torch.cuda.is_available() else "no test ran"
    else:
        result["status"] = "failed"
        failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        result["error"] = "; ".join(failed[:10]) or done.stdout[-500:]
    return result


# ---- 2. throughput and MFU ---------------------------------------------------------------------


def run_bench(device: str, *, arch: str, size: str, seq_len: int, batch_size: int, dtype: str, steps: int,
              warmup: int, compile: bool | None = None, overrides: dict | None = None) -> dict:
    """``harness.bench.bench`` (the trainer's own device settings); on CUDA OOM retries at half the batch."""
    from harness.bench import bench

    while True:
        try:
            result = bench(arch, size, batch_size=batch_size, seq_len=seq_len, dtype=dtype, device=device,
                           steps=steps, warmup=warmup, compile=compile, prefill=False, overrides=overrides)
            break
        except torch.cuda.OutOfMemoryError:
            free_memory()
            if batch_size == 1:
                raise
            log(f"{arch} {size}: out of memory at batch {batch_size}; retrying at {batch_size // 2}")
            batch_size //= 2
    free_memory()
    keep = ("arch", "size", "overrides", "device_name", "dtype", "batch_size", "seq_len", "train_step_s_median",
            "train_tokens_per_s", "train_flops_per_token", "achieved_flops_per_s", "peak_flops_per_s", "mfu",
            "peak_memory_bytes", "params", "active_params", "final_loss")
    summary = {key: result.get(key) for key in keep}
    summary["compile"] = result.get("settings", {}).get("compile")
    return summary


def gpt2_mfu(device: str, shapes: dict) -> dict:
    shape = dict(shapes["mfu"])
    result = run_bench(device, **shape, compile=None)  # the device default: compiled on CUDA
    return {"status": "ok", **result}


# ---- 3. banded vs dense ------------------------------------------------------------------------


def time_layer(fn, q, k, v, iters: int, device: str) -> tuple[float, float]:
    """Median seconds of (forward, forward + backward) of ``fn(q, k, v)``."""
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    grad = torch.randn_like(q)
    for _ in range(2):  # warm-up (FlexAttention compiles here)
        fn(q, k, v).backward(grad)
    forward, both = [], []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        out = fn(q, k, v)
        sync()
        middle = time.perf_counter()
        out.backward(grad)
        sync()
        end = time.perf_counter()
        forward.append(middle - start)
        both.append(end - start)
        q.grad = k.grad = v.grad = None
    return statistics.median(forward), statistics.median(both)


def banded_vs_dense(device: str, shapes: dict, dry_run: bool) -> dict:
    from architectures import attention

    layer = shapes["layer"]
    generator = torch.Generator().manual_seed(0)
    B, H, T, D, w = layer["batch"], layer["heads"], layer["seq_len"], layer["d_head"], layer["window"]
    q, k, v = [torch.randn(B, H, T, D, generator=generator).to(device, layer["dtype"]).requires_grad_(True)
               for _ in range(3)]
    kernel = "flex_attention (block mask)" if device == "cuda" else "blocked (CPU)"
    dense_f, dense_fb = time_layer(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
                                   q, k, v, layer["iters"], device)
    band_f, band_fb = time_layer(lambda a, b, c: attention.banded_attention(a, b, c, w, layer["block"]),
                                 q, k, v, layer["iters"], device)
    del q, k, v
    free_memory()
    result = {
        "status": "ok",
        "layer": {"batch": B, "heads": H, "seq_len": T, "d_head": D, "window": w, "dtype": str(layer["dtype"]),
                  "banded_kernel": kernel, "dense_kernel": "sdpa causal",
                  "dense_fwd_ms": dense_f * 1e3, "dense_fwd_bwd_ms": dense_fb * 1e3,
                  "banded_fwd_ms": band_f * 1e3, "banded_fwd_bwd_ms": band_fb * 1e3},
        "layer_speedup": dense_fb / band_fb,
        "layer_speedup_forward": dense_f / band_f,
    }
    models = shapes["models"]
    common = dict(seq_len=models["seq_len"], batch_size=models["batch_size"], dtype=models["dtype"],
                  steps=models["steps"], warmup=models["warmup"], compile=False)
    banded = run_bench(device, arch="gpt3", size=models["size"], **common)
    dense = run_bench(device, arch="gpt3", size=models["size"], overrides={"attention_pattern": ("dense",)}, **common)
    result["models"] = {"gpt3_banded": banded, "gpt3_all_dense": dense}
    result["model_speedup"] = banded["train_tokens_per_s"] / dense["train_tokens_per_s"]
    return result


# ---- 4. MoE vs its dense twin -------------------------------------------------------------------


def moe_vs_dense(device: str, shapes: dict, dense_twin: dict | None) -> dict:
    models = shapes["models"]
    common = dict(seq_len=models["seq_len"], batch_size=models["batch_size"], dtype=models["dtype"],
                  steps=models["steps"], warmup=models["warmup"], compile=False)
    moe = run_bench(device, arch="gpt4", size=models["moe_size"], **common)
    dense = dense_twin or run_bench(device, arch="gpt3", size=models["size"], **common)
    return {
        "status": "ok",
        "moe": moe,
        "dense": dense,
        "tokens_per_s_ratio": moe["train_tokens_per_s"] / dense["train_tokens_per_s"],
        "active_flops_ratio": moe["train_flops_per_token"] / dense["train_flops_per_token"],
        "achieved_flops_ratio": moe["achieved_flops_per_s"] / dense["achieved_flops_per_s"],
    }


# ---- 5. a short matched-compute compare --------------------------------------------------------


def compare(out: Path, shapes: dict, device: str, timeout: float, dry_run: bool) -> dict:
    if importlib.util.find_spec("harness.cli.compare") is None or importlib.util.find_spec("harness.sweeps.compare") is None:
        return {"status": "skipped", "note": "`harness compare` is not in this checkout (harness/cli/compare.py missing)."}
    name = "gpu-check-compare"
    command = [sys.executable, "-m", "harness", "compare", *shapes["compare"], "--no-eval", "--device", device,
               "--name", name]
    if device == "cuda":
        command.append("--no-compile")  # small models: compilation would cost more than it saves
    try:
        done = subprocess.run(command, cwd=REPO, env=subprocess_env(out, dry_run), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"compare did not finish in {timeout:.0f} s", "command": " ".join(command[1:])}
    (out / "compare.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 and "invalid choice: 'compare'" in done.stderr:
        return {"status": "skipped", "note": "`harness compare` is not registered in this checkout."}
    result = {"command": " ".join(command[1:]), "returncode": done.returncode, "log": "compare.log", "runs": []}
    runs_file = out / "reports" / name / "runs.json"
    run_ids = json.loads(runs_file.read_text()).get("run_ids", []) if runs_file.exists() else []
    from harness.runs.records import record_path

    for run_id in run_ids:
        record_file = record_path(out / "results" / run_id)
        if record_file.exists():
            record = json.loads(record_file.read_text())
            result["runs"].append({key: record.get(key) for key in (
                "arch", "size", "status", "steps", "budget_flops", "flops_used", "final_val_loss", "excess_loss",
                "tokens_per_s", "mfu", "wall_s")})
    if done.returncode != 0:
        result["status"] = "failed"
        result["error"] = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    else:
        result["status"] = "ok"
        result["report"] = str(out / "reports" / name)
    return result


# ---- the check ---------------------------------------------------------------------------------


def judge(result: dict, device: str, dry_run: bool) -> list[dict]:
    sections = {s["name"]: s for s in result["sections"]}
    measured = {
        "mfu": sections.get("gpt2_mfu", {}).get("mfu"),
        "banded": sections.get("banded_vs_dense", {}).get("layer_speedup"),
        "moe": sections.get("moe_vs_dense", {}).get("tokens_per_s_ratio"),
    }
    judged = device == "cuda" and not dry_run
    targets = []
    for key, (text, threshold) in TARGETS.items():
        value = measured[key]
        met = (value >= threshold) if (judged and value is not None) else None
        targets.append({"name": key, "target": text, "threshold": threshold, "measured": value, "met": met})
    return targets


def fmt(value, kind: str = "g") -> str:
    if value is None:
        return "–"
    if kind == "%":
        return f"{100 * value:.1f} %"
    if kind == "x":
        return f"{value:.2f}×"
    if kind == "tok":
        return f"{value:,.0f}"
    if kind == "ms":
        return f"{value:.2f}"
    return f"{value:.4g}"


def markdown(result: dict) -> str:
    lines = [
        f"# GPU check: {result['device_name']} (torch {result['torch_version']}, {result['started']})",
        "",
        f"{'Dry run on the CPU with tiny shapes: numbers check the plumbing, targets are not judged.' if result['dry_run'] else ''}".strip(),
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    kinds = {"mfu": "%", "banded": "x", "moe": "x"}
    for t in result["targets"]:
        met = "not judged" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {fmt(t['measured'], kinds[t['name']])} | {met} |")
    lines += ["", "| section | status | notes |", "|---|---|---|"]
    for s in result["sections"]:
        note = s.get("error") or s.get("note") or ""
        if s["name"] == "cuda_tests" and "counts" in s:
            note = ", ".join(f"{n} {k}" for k, n in s["counts"].items()) + (f"; {note}" if note else "")
        lines.append(f"| {s['name']} | {s['status']} | {note.replace('|', '/')} |")

    benches = []
    sections = {s["name"]: s for s in result["sections"]}
    if sections.get("gpt2_mfu", {}).get("status") == "ok":
        compiled = " (compiled)" if sections["gpt2_mfu"].get("compile") else ""
        benches.append((f"gpt2{compiled}", sections["gpt2_mfu"]))
    for label, key in (("gpt3 banded/dense", "gpt3_banded"), ("gpt3 all dense", "gpt3_all_dense")):
        model = sections.get("banded_vs_dense", {}).get("models", {}).get(key)
        if model:
            benches.append((label, model))
    if sections.get("moe_vs_dense", {}).get("status") == "ok":
        benches.append(("gpt4 MoE top-2/8", sections["moe_vs_dense"]["moe"]))
    if benches:
        lines += ["", "## Training throughput (`harness.bench`)", "",
                  "| model | size | T | batch | dtype | tokens/s | train FLOPs/token | MFU | step ms | peak mem GiB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for label, b in benches:
            memory = b.get("peak_memory_bytes")
            lines.append(
                f"| {label} | {b['size']} | {b['seq_len']} | {b['batch_size']} | {b['dtype']} | "
                f"{fmt(b['train_tokens_per_s'], 'tok')} | {fmt(b['train_flops_per_token'])} | {fmt(b['mfu'], '%')} | "
                f"{fmt(1e3 * b['train_step_s_median'], 'ms')} | {fmt(memory / 2**30 if memory else None, 'ms')} |"
            )
    band = sections.get("banded_vs_dense", {})
    if band.get("status") == "ok":
        layer = band["layer"]
        lines += ["", f"## Attention layer: B={layer['batch']}, H={layer['heads']}, T={layer['seq_len']}, "
                      f"D={layer['d_head']}, window {layer['window']}, {layer['dtype']}", "",
                  "| kernel | forward ms | forward + backward ms |", "|---|---|---|",
                  f"| dense: {layer['dense_kernel']} | {fmt(layer['dense_fwd_ms'], 'ms')} | {fmt(layer['dense_fwd_bwd_ms'], 'ms')} |",
                  f"| banded: {layer['banded_kernel']} | {fmt(layer['banded_fwd_ms'], 'ms')} | {fmt(layer['banded_fwd_bwd_ms'], 'ms')} |",
                  "", f"Layer speed-up (fwd+bwd) {fmt(band['layer_speedup'], 'x')}; whole gpt3 model, banded/dense "
                      f"alternation vs all dense: {fmt(band['model_speedup'], 'x')} tokens/s."]
    moe = sections.get("moe_vs_dense", {})
    if moe.get("status") == "ok":
        lines += ["", f"MoE vs dense twin: tokens/s {fmt(moe['tokens_per_s_ratio'], 'x')}, active training FLOPs/token "
                      f"{fmt(moe['active_flops_ratio'], 'x')}, achieved FLOP/s {fmt(moe['achieved_flops_ratio'], 'x')}."]
    runs = sections.get("compare", {}).get("runs")
    if runs:
        lines += ["", "## Matched-compute compare", "", "| arch | size | status | steps | FLOPs used | val loss | tokens/s |",
                  "|---|---|---|---|---|---|---|"]
        for r in runs:
            lines.append(f"| {r['arch']} | {r['size']} | {r['status']} | {r['steps']} | {fmt(r['flops_used'])} | "
                         f"{fmt(r['final_val_loss'])} | {fmt(r['tokens_per_s'], 'tok')} |")
    lines += fsdp2_markdown(sections.get("fsdp2", {}))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="output folder (default $OUT)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks the script end to end")
    parser.add_argument("--time-limit", type=float, default=450.0, help="seconds for the whole check (default 450)")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dry_run = args.dry_run
    if not dry_run and not torch.cuda.is_available():
        print("error: no CUDA device is visible; run on a GPU machine, or use --dry-run to check the script on the CPU.",
              file=sys.stderr)
        return 2
    device = "cpu" if dry_run else "cuda"
    if dry_run:
        torch.set_num_threads(1)
    shapes = DRY if dry_run else GPU
    deadline = Deadline(args.time_limit)
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    from harness.device import device_name

    result = {
        "dry_run": dry_run,
        "device": device,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python": platform.python_version(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "time_limit_s": args.time_limit,
        "sections": [],
    }

    def section(name: str, fn) -> dict:
        need = 0 if dry_run else SECTION_SECONDS[name]
        if name in skip:
            entry = {"status": "skipped", "note": "--skip"}
        elif deadline.left() < need:
            entry = {"status": "skipped", "note": f"not started: {deadline.left():.0f} s left of --time-limit, needs ~{need} s"}
        else:
            log(f"{name} ...")
            started = time.perf_counter()
            try:
                entry = fn()
            except Exception as error:  # noqa: BLE001 - one section's failure must not stop the others
                entry = {"status": "failed", "error": f"{type(error).__name__}: {str(error).strip()[:500]}",
                         "traceback": traceback.format_exc()[-4000:]}
                free_memory()
            entry["seconds"] = round(time.perf_counter() - started, 1)
        entry = {"name": name, **entry}
        log(f"{name}: {entry['status']}" + (f" ({entry.get('error') or entry.get('note')})" if entry['status'] != 'ok' else ""))
        result["sections"].append(entry)
        write(out, result)
        return entry

    section("cuda_tests", lambda: cuda_tests(out, dry_run, timeout=max(30.0, deadline.left() - 200 if not dry_run else 240)))
    section("gpt2_mfu", lambda: gpt2_mfu(device, shapes))
    band = section("banded_vs_dense", lambda: banded_vs_dense(device, shapes, dry_run))
    twin = band.get("models", {}).get("gpt3_banded")
    section("moe_vs_dense", lambda: moe_vs_dense(device, shapes, twin))
    section("compare", lambda: compare(out, shapes, device, timeout=max(30.0, deadline.left() - 5), dry_run=dry_run))
    section("fsdp2", lambda: fsdp2(out, device, dry_run, timeout=max(60.0, deadline.left() - 5) if not dry_run else 240,
                                   env=subprocess_env(out, dry_run)))

    result["wall_s"] = round(time.perf_counter() - deadline.start, 1)
    result["targets"] = judge(result, device, dry_run)
    write(out, result)
    print(markdown(result))
    for t in result["targets"]:
        verdict = "not judged (dry run / no CUDA)" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        value = "not measured" if t["measured"] is None else f"{t['measured']:.3g}"
        print(f"target: {t['target']}: measured {value} → {verdict}")
    print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'} ({result['wall_s']:.0f} s)")
    return 1 if any(s["status"] == "failed" for s in result["sections"]) else 0


def write(out: Path, result: dict) -> None:
    from harness.io import write_json_atomic, write_text_atomic

    write_json_atomic(out / "gpu_check.json", result)
    if "targets" in result:
        write_text_atomic(out / "gpu_check.md", markdown(result))


if __name__ == "__main__":
    sys.exit(main())
