"""Idle-machine optimizer-step times of a study's models: ``reports/<name>/data/step_times.json``.

``measure_step_times(spec, report_dir)`` builds, for every (sweep, arch) of the study, the model
exactly as the sweep trains it — size, overrides, the vocabulary of its data, the recipe's
micro-batch, gradient accumulation and seq_len, dtype, compile, torch ``threads`` — and times
whole optimizer steps with ``harness.bench.TrainingStep`` (forward + backward over every
micro-batch, clip, AdamW; random tokens, data loading not timed): ``warmup`` untimed steps,
then ``steps`` timed ones, one architecture at a time. It writes the median seconds per step,
every timing, tokens per step and the threads, with the machine (``harness.machine``) and its
1-minute load average before and after, so a reader can see the machine was idle. Nothing is
trained and ``results/`` is not touched. A load average above ``MAX_LOAD_PER_CORE`` per core
is refused (``MachineBusy``) unless ``force``; forced, the file records it.

The matched wall-clock view of the study report (``harness.reporting.wallclock``) reads it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.io import write_json_atomic
from harness.machine import describe_machine, machine_load
from harness.runs.compact import DATA_DIR
from harness.runs.spec import RunSpec

STEP_TIMES_NAME = "step_times.json"
DEFAULT_STEPS = 20  # about 10 s per architecture at size mini on one CPU thread
DEFAULT_WARMUP = 3
MAX_LOAD_PER_CORE = 0.5  # 1-minute load average per core above which the machine is not idle
CONVENTION = ("s/step = median wall-clock seconds of one optimizer step (forward and backward over every "
              "micro-batch of the recipe, gradient clipping, AdamW), timed on random tokens after warm-up steps, "
              "one architecture at a time; load = 1-minute load average (runnable processes, os.getloadavg)")


class MachineBusy(ValueError):
    """The machine's load average says other work would distort the step times."""


@dataclass(frozen=True)
class BenchSettings:
    """``steps`` timed and ``warmup`` untimed optimizer steps per architecture, torch ``threads``
    (the sweep's own), and ``force``: measure even on a busy machine."""

    steps: int = DEFAULT_STEPS
    warmup: int = DEFAULT_WARMUP
    threads: int = 1
    force: bool = False

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("warmup", 0), ("threads", 1)):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= low):
                raise ValueError(f"--bench-{name} must be a whole number ≥ {low}, got {value!r}.")


def check_idle(load: dict[str, Any], force: bool) -> str | None:
    """None on an idle machine; a loud warning when busy and ``force``; else ``MachineBusy`` (one sentence)."""
    one, cores = load.get("loadavg_1m"), load.get("cpu_count") or 1
    if one is None or one <= MAX_LOAD_PER_CORE * cores:
        return None
    message = (f"the 1-minute load average is {one:.2f} on {cores} cores (above {MAX_LOAD_PER_CORE} per core), so "
               f"other work would slow the timed steps")
    if not force:
        raise MachineBusy(f"{message}; wait until the machine is idle, or pass --force to measure anyway.")
    return f"WARNING: {message}; measuring anyway (--force), and step_times.json records it."


def sweep_models(plan) -> dict[str, RunSpec]:
    """One RunSpec per architecture of a planned sweep (seed 0: step time does not depend on the seed)."""
    if len(plan.variants) > 1:
        raise ValueError(f"the step-time benchmark takes one model per architecture; this sweep has "
                         f"{len(plan.variants)} ({', '.join(v.label for v in plan.variants)}).")
    models: dict[str, RunSpec] = {}
    for spec in plan.specs:
        models.setdefault(spec.arch, spec)
    return models


def time_model(spec: RunSpec, settings: BenchSettings) -> dict[str, Any]:
    """Median seconds per optimizer step of ``spec``'s model as its run trains it (see the module docstring)."""
    import torch

    from architectures import build_from_config
    from harness.bench import TrainingStep
    from harness.data import prepare_data
    from harness.device import configure_device
    from harness.threads import torch_threads
    from harness.training.optim import make_optimizer
    from harness.training.placement import micro_batch_per_rank

    recipe = spec.recipe
    with torch_threads(settings.threads):
        vocab = prepare_data(spec.data, vocab_size=spec.vocab_size, seed=spec.seed).tokenizer.vocab_size
        config = spec.model_config(vocab)
        device = configure_device(spec.device, spec.dtype, compile=spec.compile)
        rows = recipe.batch_tokens // recipe.seq_len
        micro = micro_batch_per_rank(rows, recipe.micro_batch_size, recipe.seq_len, recipe.batch_tokens, 1)
        torch.manual_seed(spec.seed)
        model = build_from_config(config).to(device.device)
        runner = TrainingStep(model, device, micro, recipe.seq_len, vocab, grad_clip=recipe.grad_clip,
                              optimizer=make_optimizer(model, recipe, fused=device.fused_adamw),
                              micro_steps=rows // micro, seed=spec.seed)
        for _ in range(settings.warmup):
            runner.step()
        times = [runner.step() for _ in range(settings.steps)]
    return {"s_per_step_median": statistics.median(times), "step_s": times, "tokens_per_step": runner.tokens_per_step,
            "threads": settings.threads, "micro_batch_size": micro, "grad_accum": rows // micro,
            "seq_len": recipe.seq_len, "size": spec.size, "overrides": dict(spec.overrides), "vocab_size": vocab,
            "device": device.device, "dtype": device.dtype, "example_run_id": spec.run_id()}


def measure_step_times(study, plans: dict, report_dir: str | Path, settings: BenchSettings,
                       log: Callable[[str], None] = lambda message: None) -> Path:
    """Time every (sweep, arch) of ``study`` (its ``plans``: sweep name → ``SweepPlan``) and write
    ``<report_dir>/data/step_times.json`` atomically; returns its path. Raises ``MachineBusy`` first
    when the machine is loaded and not ``settings.force``."""
    before = machine_load()
    warning = check_idle(before, settings.force)
    if warning:
        log(warning)
    models = {name: sweep_models(plan) for name, plan in plans.items()}  # every sweep checked before timing
    sweeps: dict[str, dict[str, Any]] = {}
    for name, by_arch in models.items():
        sweeps[name] = {}
        for arch, spec in by_arch.items():
            sweeps[name][arch] = time_model(spec, settings)
            log(f"{name} {arch}: {sweeps[name][arch]['s_per_step_median']:.4g} s/step (median of {settings.steps})")
    payload = {"study": study.name, "convention": CONVENTION, "steps": settings.steps, "warmup": settings.warmup,
               "threads": settings.threads, "max_load_per_core": MAX_LOAD_PER_CORE, "forced_while_busy": bool(warning),
               "machine": describe_machine(), "load_before": before, "load_after": machine_load(), "sweeps": sweeps}
    return write_json_atomic(Path(report_dir) / DATA_DIR / STEP_TIMES_NAME, payload)


def threads_for(executor) -> int:
    """The torch threads each run of the study trains with under ``executor`` (``ExecutorOptions``),
    as the executors choose them (``harness.sweeps.executors``)."""
    import torch

    if executor.kind == "inline":
        return executor.threads or torch.get_num_threads()
    if executor.kind == "slurm":
        return executor.threads or executor.slurm.cpus_per_task or executor.threads_per_job()
    return executor.threads_per_job()
