"""Per-device defaults shared by the trainer and the benchmark, and the measured matmul peak.

``configure_device(device=None, dtype=None, compile=None) -> DeviceSettings`` picks CUDA when
it is available (else the CPU), applies the process-wide switches below and says what it
chose in ``settings.notes``. The trainer and ``harness bench`` both call it, so a benchmark
measures the configuration training uses.

CPU defaults (measured on the development CPU — AMD EPYC, 2 cores, AVX-512 BF16, no AMX —
torch 2.13; single-thread CPU time, which other processes' load does not distort):

- ``torch.set_flush_denormal(True)`` (FTZ/DAZ): on this CPU denormal inputs cost nothing in
  multiplies and adds but ~15x in divisions and square roots — exactly AdamW's
  ``exp_avg / (sqrt(exp_avg_sq) + eps)``. An AdamW step over a 1024² tensor whose moments
  are denormal takes 13.6 ms instead of 1.8 ms single-tensor (7.7x) and 0.74 instead of
  0.55 ms fused (1.35x); with flushing, results that would be denormal are stored as 0,
  so they never reach the square root (3.0 / 0.54 ms). Moments go denormal where
  gradients stay zero for ~700+ steps (position rows past the trained length, experts
  that receive no tokens, dead units). In the first 30-200 steps of gpt2 nano/micro no
  denormals appeared and flushing changed nothing, so the slowdown is a long-run hazard,
  not the "tens of times" on every step it was said to be. It changes no result that
  matters (values below 1.2e-38 become 0).
- bf16 autocast when the CPU multiplies bf16 natively (AVX-512 BF16 or AMX): a 2048²
  matmul runs at ~1.0 TFLOP/s in bf16 against 0.23 in fp32 (2 threads, quiet machine);
  a whole gpt2 ``micro`` training step (batch 8 x 256, forward+backward+clip+AdamW) is
  2.1x faster (0.46 s against 0.98 s CPU time; 0.23 s against 0.47 s wall on 2 threads);
  at ``nano`` the two are even (1.08x: overheads dominate). Without native bf16 the default
  stays fp32 (emulated bf16 is slower). Weights and optimizer state stay fp32 either way
  (autocast, not a bf16 model).
- fused AdamW when torch has the CPU kernel (torch >= 2.4): one kernel instead of a Python
  loop over parameters (~15x faster optimizer step; a few % of a micro step).
- no ``torch.compile`` (``CPU_COMPILE_DECISION``, recorded as ``settings.compile_decision``):
  measured with inductor on this CPU (torch 2.13, 1 thread, process CPU time, median of 10
  steps after the warm-up) on a machine shared with other jobs: gpt2 ``micro`` bf16 (batch
  8 x 256) 0.91x eager (slower) after 184 s of compiling; gpt2 ``nano`` fp32 (8 x 64) 0.91x
  after 156 s in one run and 1.09x after 24 s (inductor's cache warm) in another. At best,
  nano saves ~2.5 ms a step, so compiling pays back only after ~10,000 steps with a warm
  cache (~60,000 cold); the regression check and the CPU presets plan a few hundred to a
  few thousand. Off by default; ``compile=True`` turns it on. (The tanh GELU, which
  compiling would fuse, costs 10.1 ms forward+backward per micro layer in bf16 against
  4.1 ms for the exact GELU: ~4 % of a micro step.)

CUDA defaults: bf16 autocast, TF32 matmuls (``fp32`` then means TF32 matmuls), fused AdamW,
``torch.compile`` (``compile=False`` turns it off).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field

import torch

from harness.paths import cache_dir

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

CPU_COMPILE_DECISION = (
    "off by default on the CPU: compiled training steps measured 0.91x eager at gpt2 micro bf16 and "
    "0.91-1.09x at nano fp32 after 24-184 s of compiling, paying back after >= ~10,000 steps at best "
    "(see harness/device.py); compile=True turns it on"
)


@dataclass
class DeviceSettings:
    """What ``configure_device`` chose; ``autocast()`` is the context to run forward passes in."""

    device: str  # "cpu" or "cuda" (or "cuda:N")
    dtype: str  # compute precision: "fp32" or "bf16" (bf16 = autocast over fp32 weights)
    device_name: str
    autocast_dtype: torch.dtype | None = None
    flush_denormal: bool = False
    compile: bool = False
    tf32: bool = False
    fused_adamw: bool = False
    compile_decision: str = ""  # why compile is on or off
    notes: list[str] = field(default_factory=list)

    @property
    def dtype_name(self) -> str:
        """Alias of ``dtype`` (the trainer's name for it)."""
        return self.dtype

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    def autocast(self):
        """Autocast to the low-precision dtype, or a no-op in fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    def peak_flops_per_s(self, refresh: bool = False) -> float:
        """The device's measured dense matmul ceiling in this dtype (FLOPs/s), cached."""
        return measured_peak_flops_per_s(self.device, self.dtype, refresh=refresh)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["autocast_dtype"] = str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else None
        data["dtype_name"] = self.dtype
        data["threads"] = torch.get_num_threads() if self.device_type == "cpu" else None
        return data


def device_name(device: str) -> str:
    """A stable name for the cache key: the GPU's name, or the CPU model and thread count."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "cpu"
    return f"{model} ({torch.get_num_threads()} threads)"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except RuntimeError:
                pass
    return False


def fused_adamw_available(device: str) -> bool:
    """Whether ``torch.optim.AdamW(fused=True)`` accepts parameters on this device."""
    try:
        torch.optim.AdamW([torch.zeros(1, device=device, requires_grad=True)], lr=1e-3, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def resolve_dtype(device: str | None, dtype: str | None) -> str:
    """The compute dtype a run on ``device`` (None: CUDA if available, else the CPU) uses:
    ``dtype`` when given; else bf16 on CUDA and on a CPU with native bf16, fp32 otherwise.

    No side effects, so a run's identity can be resolved before the device is configured.
    """
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
        return dtype
    kind = (device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":", 1)[0]
    return "bf16" if kind == "cuda" or cpu_has_native_bf16() else "fp32"


def configure_device(
    device: str | None = None, dtype: str | None = None, compile: bool | None = None
) -> DeviceSettings:
    """Pick the device (CUDA if available), apply its fast defaults, say what was chosen in ``notes``."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":", 1)[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}.")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use --device cpu.")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    notes: list[str] = []
    if kind == "cuda":
        dtype = resolve_dtype(device, dtype)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        settings = DeviceSettings(
            device=device,
            dtype=dtype,
            device_name=device_name(device),
            autocast_dtype=DTYPES[dtype] if dtype != "fp32" else None,
            compile=compile is not False,
            compile_decision="given" if compile is not None else "on by default on CUDA",
            tf32=True,
            fused_adamw=fused_adamw_available(device),
        )
        notes.append(
            f"CUDA: {dtype}{' autocast' if dtype != 'fp32' else ''}, TF32 matmuls, "
            f"{'fused' if settings.fused_adamw else 'unfused'} AdamW"
            + (", torch.compile" if settings.compile else ", no torch.compile")
        )
    else:
        flushed = torch.set_flush_denormal(True)  # False where the CPU has no FTZ/DAZ (then a no-op)
        if dtype is None:
            dtype = resolve_dtype(device, None)
            notes.append(
                "CPU dtype default bf16 autocast: native bf16 matmuls, ~2.1x faster training steps at micro"
                if dtype == "bf16"
                else "CPU dtype default fp32: no native bf16 on this CPU (emulated bf16 is slower)"
            )
        settings = DeviceSettings(
            device=device,
            dtype=dtype,
            device_name=device_name(device),
            autocast_dtype=DTYPES[dtype] if dtype != "fp32" else None,
            flush_denormal=flushed,
            compile=bool(compile),
            compile_decision="given" if compile is not None else CPU_COMPILE_DECISION,
            fused_adamw=fused_adamw_available(device),
        )
        notes.append(
            f"CPU: {'denormals flushed to zero' if flushed else 'denormals not flushed (unsupported here)'}, {dtype}{' autocast' if dtype != 'fp32' else ''}, "
            f"{'fused' if settings.fused_adamw else 'unfused'} AdamW, {torch.get_num_threads()} threads"
            + (", torch.compile" if settings.compile else ", no torch.compile")
        )
    settings.notes = notes
    return settings


# ---- the measured ceiling ---------------------------------------------------------------

PEAK_CACHE_FILE = "peak_flops.json"


def _peak_key(device: str, dtype: str) -> str:
    return f"{torch.device(device).type}|{device_name(device)}|{dtype}|torch {torch.__version__}"


def measured_peak_flops_per_s(
    device: str, dtype: str, *, size: int | None = None, refresh: bool = False, repeats: int = 8
) -> float:
    """The device's dense matmul rate in ``dtype`` (FLOPs/s, 2 per multiply-add), measured once.

    A square ``size``² matmul (2048 on the CPU, 8192 on CUDA) in that dtype, best of
    ``repeats`` after warm-up; on CUDA with TF32 enabled, fp32 measures the TF32 rate. The
    result is cached in ``harness.paths.cache_dir()/peak_flops.json`` under the device
    name (CPU: model and thread count), dtype and torch version, so it is measured once
    per machine; ``refresh`` measures again and keeps the higher of the two (a measurement
    taken while other processes share the CPU reads low; the ceiling is the best rate seen).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    key = _peak_key(device, dtype)
    path = cache_dir() / PEAK_CACHE_FILE
    cached: dict = {}
    if path.exists():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}
    if not refresh and isinstance(cached.get(key), (int, float)) and cached[key] > 0:
        return float(cached[key])
    peak = _measure_matmul(device, DTYPES[dtype], size or (8192 if torch.device(device).type == "cuda" else 2048), repeats)
    previous = cached.get(key)
    if isinstance(previous, (int, float)) and previous > peak:
        peak = float(previous)  # a ceiling is the best rate seen: a busy machine measures low
    cached[key] = peak
    from harness.io import write_json_atomic

    os.makedirs(path.parent, exist_ok=True)
    write_json_atomic(path, cached)
    return peak


def _measure_matmul(device: str, dtype: torch.dtype, size: int, repeats: int) -> float:
    is_cuda = torch.device(device).type == "cuda"
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        if is_cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        if is_cuda:
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best
