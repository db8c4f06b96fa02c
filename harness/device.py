"""Per-device defaults shared by the trainer and the benchmark, and the measured matmul peak.

``configure_device(device=None, dtype=None, compile=None) -> DeviceSettings`` picks CUDA when
it is available (else the CPU), applies the process-wide switches below and says what it
chose in ``settings.notes``. The trainer and ``harness bench`` both call it, so a benchmark
measures the configuration training uses.

CPU defaults (measured on the 2-core AVX-512-BF16 development CPU, torch 2.13; see
``python -m harness bench`` and ``benchmarks/nanogpt_reference.py``):

- ``torch.set_flush_denormal(True)``: denormal floats (tiny gradients, AdamW's decaying
  moments, bf16 autocast's products) take a microcode slow path on x86; a training step
  that meets them runs several times slower. Flushing them to zero changes no result that
  matters (they are below 1.2e-38).
- bf16 autocast when the CPU multiplies bf16 natively (AVX-512 BF16 or AMX): a 2048²
  matmul runs at about 1.0 TFLOP/s in bf16 against 0.23 in fp32, and a whole gpt2
  ``micro`` training step (batch 8 × 256) is about 2× faster (0.23 s against 0.47 s).
  Without native bf16 the default stays fp32 (emulated bf16 is slower). Weights and
  optimizer state stay fp32 either way (autocast, not a bf16 model).
- fused AdamW when torch has the CPU kernel (torch ≥ 2.4): one kernel instead of a
  Python loop over parameters (about 15× faster optimizer step, a few % of a step).
- no ``torch.compile``: minutes of compilation on two cores for no reliable gain at these
  sizes; ``compile=True`` turns it on.

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
        dtype = dtype or "bf16"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        settings = DeviceSettings(
            device=device,
            dtype=dtype,
            device_name=device_name(device),
            autocast_dtype=DTYPES[dtype] if dtype != "fp32" else None,
            compile=compile is not False,
            tf32=True,
            fused_adamw=fused_adamw_available(device),
        )
        notes.append(
            f"CUDA: {dtype}{' autocast' if dtype != 'fp32' else ''}, TF32 matmuls, "
            f"{'fused' if settings.fused_adamw else 'unfused'} AdamW"
            + (", torch.compile" if settings.compile else ", no torch.compile")
        )
    else:
        torch.set_flush_denormal(True)
        native_bf16 = cpu_has_native_bf16()
        if dtype is None:
            dtype = "bf16" if native_bf16 else "fp32"
            notes.append(
                "CPU dtype default bf16 autocast: native bf16 matmuls, ~2x faster training steps at micro"
                if native_bf16
                else "CPU dtype default fp32: no native bf16 on this CPU (emulated bf16 is slower)"
            )
        settings = DeviceSettings(
            device=device,
            dtype=dtype,
            device_name=device_name(device),
            autocast_dtype=DTYPES[dtype] if dtype != "fp32" else None,
            flush_denormal=True,
            compile=bool(compile),
            fused_adamw=fused_adamw_available(device),
        )
        notes.append(
            f"CPU: denormals flushed to zero, {dtype}{' autocast' if dtype != 'fp32' else ''}, "
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
