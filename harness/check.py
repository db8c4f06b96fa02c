"""The regression gate: retrain every architecture small, evaluate, compare with a committed baseline.

    from harness.check import run_check, update_baseline
    result = run_check("results/baselines/ci-cpu.json")           # CheckResult; result.passed
    print(result.table())
    baseline, diff = update_baseline("results/baselines/ci-cpu.json")

What one check does, per architecture (gpt1..gpt4 at ``nano`` by default): train from
scratch at a fixed seed and a small FLOP budget on the CPU in fp32 (deterministic: the
same numbers run to run on one machine), evaluate the harness probes with a small
``--limit``, and compare with the baseline, metric by metric:

- **exact**: parameter counts, FLOPs per token, planned steps and tokens must be equal;
  the data's entropy floor and unigram loss agree to a relative 1e-6 (``data``).
- **quality**: final validation loss and probe metrics must lie within the tolerance the
  baseline stores for that metric, ``max(TOLERANCE_K x std, floor)``, where ``std`` is the
  sample standard deviation across seeds measured when the baseline was made (seed 0 plus
  ``spread_seeds``): a change larger than the seed-to-seed spread fails, whichever way
  it goes (an unexplained improvement is a change too: refresh the baseline with
  ``--update`` in the same change that explains it).
- **perf**: training throughput as a ratio to a reference matmul timed in the same process,
  ``tokens/s x training FLOPs/token / (1024² fp32 matmul FLOP/s)``, so a slower or busier
  machine moves both; it warns when it falls below ``(1 - PERF_TOLERANCE)`` x the baseline
  (the median of the baseline's runs) and fails only with ``strict_perf``.

Runs use one torch thread (``CheckSettings.threads``): the numbers then do not depend on
the core count, and other work on the machine does not stall the check. Every run goes into a fresh temporary folder (results and caches, so no stale run, token
array or probe file is reused) unless ``workdir`` is given; runs are always retrained.
Derived metrics are left out (``token_perplexity`` = exp(nll), ``excess_*`` = loss - a
fixed floor) so each table row is an independent fact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.paths import temporary_environ

BASELINE_KIND = "harness-check-baseline"
BASELINE_SCHEMA = 1
DEFAULT_BASELINE = Path("results/baselines/ci-cpu.json")

# Tolerance of a quality metric: max(TOLERANCE_K x seed-to-seed std, floor). k = 3: a seed-0
# value outside 3 standard deviations of the seed spread is a change, not noise. With 4
# seeds the std itself is uncertain (a 90 % interval of about 0.6-2.9 x the true sigma), so 3
# rather than 2. A same-machine check reproduces the baseline exactly (delta 0); forcing
# another instruction set (AVX2 instead of AVX-512 kernels: ATEN_CPU_CAPABILITY=avx2,
# ONEDNN_MAX_CPU_ISA=AVX2) moved val loss and held-out nll by at most 3e-7 nats, against
# seed-to-seed standard deviations of 0.003-0.008 nats.
TOLERANCE_K = 3.0
# Floors: losses in nats/token; fractions (acc, exact_match) in documents out of the limit.
LOSS_FLOOR_NATS = 0.005
FRACTION_FLOOR_DOCS = 2
# Throughput: warn when the ratio falls below (1 - PERF_TOLERANCE) x baseline (the median of
# the baseline's runs). Wide and fixed: on a shared 2-core machine the ratio of one run to
# another moved by up to 2.3x (0.22-0.50 for gpt2, four runs) even after dividing by the
# reference matmul, so only a halving is worth a warning.
PERF_TOLERANCE = 0.5
DATA_RTOL = 1e-6
REFERENCE_MATMUL = 1024  # square fp32 matmul timed before each training run (about 0.5 s on one thread)

EXACT_KEYS = ("params", "non_embedding_params", "active_params", "forward_flops_per_token",
              "train_flops_per_token", "planned_steps", "tokens")
DATA_KEYS = ("entropy_floor", "unigram_val_loss")
DERIVED_METRICS = ("token_perplexity", "excess_nll_per_token")
PERF_KEY = "throughput_vs_matmul"


@dataclass
class CheckSettings:
    """What a check trains and evaluates; stored in the baseline so a check repeats it exactly."""

    archs: tuple[str, ...] = ("gpt1", "gpt2", "gpt3", "gpt4")
    size: str = "nano"
    data: str = "synthetic"
    budget_flops: float = 2e11
    seed: int = 0
    spread_seeds: tuple[int, ...] = (1, 2, 3)
    eval_limit: int = 100
    tasks: tuple[str, ...] | None = None  # None: every harness probe
    device: str = "cpu"
    dtype: str = "fp32"
    # torch intra-op threads. One: the numbers then do not depend on the machine's core count,
    # and a busy machine does not slow the check down: with two threads on two cores shared
    # with other work, OpenMP's spinning barriers made a nano training step 15x slower
    # (338 ms against 22 ms with one thread, load average 7).
    threads: int = 1

    def __post_init__(self) -> None:
        self.archs = tuple(self.archs)
        self.spread_seeds = tuple(int(s) for s in self.spread_seeds)
        if self.tasks is not None:
            self.tasks = tuple(self.tasks)
        if not self.archs:
            raise ValueError("a check needs at least one architecture, e.g. archs=('gpt2',).")
        if not (isinstance(self.eval_limit, int) and self.eval_limit >= 1):
            raise ValueError(f"eval_limit must be a positive whole number of documents, got {self.eval_limit!r}.")
        if not (isinstance(self.budget_flops, (int, float)) and math.isfinite(self.budget_flops) and self.budget_flops > 0):
            raise ValueError(f"budget_flops must be a positive number of FLOPs, got {self.budget_flops!r}.")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads must be a positive whole number, got {self.threads!r}.")
        if self.seed in self.spread_seeds:
            raise ValueError(f"spread_seeds {self.spread_seeds} must not include the check's seed {self.seed}.")

    def task_names(self) -> list[str]:
        if self.tasks is not None:
            return list(self.tasks)
        from harness.evaluation.probes import probe_task_names

        return probe_task_names()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["archs"], data["spread_seeds"] = list(self.archs), list(self.spread_seeds)
        data["tasks"] = list(self.tasks) if self.tasks is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckSettings":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown check setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return cls(**data)


# ---- measuring ------------------------------------------------------------------------------


class PartialRun(ValueError):
    """A training run failed or was interrupted, or its evaluation left a metric out."""


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch intra-op threads, restoring the previous number after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def workspace(workdir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A folder for the check's runs and caches (fresh and temporary unless ``workdir``)."""
    if workdir is not None:
        root = Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
        holder = contextlib.nullcontext(str(root))
    else:
        holder = tempfile.TemporaryDirectory(prefix="harness-check-")
    with holder as folder:
        root = Path(folder)
        with temporary_environ(HARNESS_RESULTS_DIR=str(root / "results"), HARNESS_CACHE_DIR=str(root / "cache")):
            yield root


def reference_matmul_flops_per_s(device: str = "cpu", dtype: str = "fp32") -> float:
    """A 1024² matmul in ``dtype`` timed now (best of 8 after warm-up), FLOP/s (2 per multiply-add)."""
    from harness.device import measured_peak_flops_per_s

    # refresh=True: measured in this process now, not read from a cache of another moment.
    return measured_peak_flops_per_s(device, dtype, size=REFERENCE_MATMUL, refresh=True)


def measure_run(
    arch: str,
    settings: CheckSettings,
    seed: int,
    results_dir: Path,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Train ``arch`` at ``seed`` (always from scratch), evaluate the probes; flat {metric: value}."""
    from harness.evaluation import evaluate_run
    from harness.spec import RunSpec
    from harness.train import TrainingFailed, train

    spec = RunSpec(
        arch=arch, size=settings.size, data=settings.data, seed=seed, budget_flops=float(settings.budget_flops),
        overrides=dict(overrides or {}), device=settings.device, dtype=settings.dtype, compile=False,
    )
    reference = reference_matmul_flops_per_s(settings.device, settings.dtype)
    started = time.perf_counter()
    try:
        result = train(spec, results_dir, force=True, progress=False)
    except TrainingFailed as failure:
        raise PartialRun(f"{arch} seed {seed}: {failure}") from None
    record = result.record
    if record.get("status") != "ok":
        raise PartialRun(
            f"{arch} seed {seed}: training ended with status {record.get('status')!r} "
            f"({record.get('error') or 'no reason given'}), so there is nothing to compare."
        )
    trained = time.perf_counter() - started
    captured = io.StringIO()  # lm-eval's progress bars and notices; shown only if evaluation fails
    try:
        with contextlib.redirect_stderr(captured):
            evaluation = evaluate_run(result.run_dir, tasks=settings.task_names(), limit=settings.eval_limit)
    except Exception:
        sys.stderr.write(captured.getvalue())
        raise
    metrics: dict[str, float] = {}
    for key in EXACT_KEYS + DATA_KEYS + ("final_val_loss",):
        if record.get(key) is None:
            raise PartialRun(f"{arch} seed {seed}: the run's record has no {key!r}; the run is incomplete.")
        metrics[key] = record[key]
    for task in settings.task_names():
        values = evaluation.get(task)
        if not values:
            raise PartialRun(f"{arch} seed {seed}: the evaluation returned no metrics for {task}.")
        for name, entry in values.items():
            if name in DERIVED_METRICS:
                continue
            value = entry.get("value") if isinstance(entry, dict) else None
            if value is None:
                raise PartialRun(f"{arch} seed {seed}: {task} metric {name} has no value.")
            metrics[f"{task}.{name}"] = float(value)
    metrics[PERF_KEY] = record["tokens_per_s"] * record["train_flops_per_token"] / reference
    metrics["_vocab_size"] = record["data"]["vocab_size"]
    metrics["_seq_len"] = record["seq_len"]
    if log:
        log(
            f"check: {arch} seed {seed}: {record['steps']} steps in {trained:.1f} s "
            f"({record['tokens_per_s']:.0f} tokens/s), evaluated in {time.perf_counter() - started - trained:.1f} s, "
            f"val loss {record['final_val_loss']:.4f}"
        )
    return metrics


def measure(
    settings: CheckSettings,
    seeds: list[int],
    *,
    archs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    workdir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[int, dict[str, float]]]:
    """{arch: {seed: metrics}} for every arch and seed, in a fresh (or the given) workspace."""
    from harness.device import configure_device

    configure_device(settings.device, settings.dtype, compile=False)  # process-wide switches first
    out: dict[str, dict[int, dict[str, float]]] = {}
    with workspace(workdir) as root, cpu_threads(settings.threads):
        for arch in archs or settings.archs:
            out[arch] = {}
            for seed in seeds:
                out[arch][seed] = measure_run(arch, settings, seed, root / "results", overrides, log)
    return out


# ---- the baseline ---------------------------------------------------------------------------


def _kind(name: str) -> str:
    if name in EXACT_KEYS:
        return "exact"
    if name in DATA_KEYS:
        return "data"
    if name == PERF_KEY:
        return "perf"
    return "quality"


def _lower_is_better(name: str) -> bool:
    return any(word in name for word in ("loss", "nll", "perplexity"))


def _floor(name: str, settings: CheckSettings) -> float:
    if _lower_is_better(name):
        return LOSS_FLOOR_NATS
    return FRACTION_FLOOR_DOCS / settings.eval_limit


def metric_entry(name: str, values_by_seed: dict[int, float], settings: CheckSettings) -> dict[str, Any]:
    """One baseline entry: the check seed's value and, for quality and perf, a tolerance from the spread."""
    value = values_by_seed[settings.seed]
    kind = _kind(name)
    if kind == "exact":
        return {"kind": kind, "value": value}
    if kind == "data":
        return {"kind": kind, "value": value, "rtol": DATA_RTOL}
    values = [values_by_seed[s] for s in sorted(values_by_seed)]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    entry: dict[str, Any] = {"kind": kind, "value": value}
    if kind == "perf":
        # throughput does not depend on the seed: the baseline is the median of every run,
        # and the spread (which here measures the machine's load, not the model) is kept for
        # information only; the tolerance is the fixed, wide PERF_TOLERANCE.
        entry["value"] = statistics.median(values)
        entry["tolerance"] = PERF_TOLERANCE
        entry["tolerance_unit"] = "relative, one-sided (slower)"
    else:
        entry["tolerance"] = max(TOLERANCE_K * std, _floor(name, settings))
        entry["better"] = "lower" if _lower_is_better(name) else "higher"
    entry["seed_std"] = std
    entry["seed_values"] = values
    return entry


def _library_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions = {}
    for name in ("lm_eval", "numpy"):
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_baseline(
    settings: CheckSettings,
    measured: dict[str, dict[int, dict[str, float]]],
    *,
    command: str,
    wall_s: float,
) -> dict[str, Any]:
    """The baseline document from {arch: {seed: metrics}} (seed ``settings.seed`` plus the spread seeds)."""
    import torch

    from harness.device import device_name
    from harness.records import git_commit

    metrics: dict[str, dict[str, Any]] = {}
    shapes: dict[str, dict[str, int]] = {}
    for arch, by_seed in measured.items():
        names = [n for n in by_seed[settings.seed] if not n.startswith("_")]
        metrics[arch] = {
            name: metric_entry(name, {seed: m[name] for seed, m in by_seed.items() if name in m}, settings)
            for name in names
        }
        shapes[arch] = {"vocab_size": by_seed[settings.seed]["_vocab_size"], "seq_len": by_seed[settings.seed]["_seq_len"]}
    return {
        "kind": BASELINE_KIND,
        "schema_version": BASELINE_SCHEMA,
        "produced": {
            "command": command,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "libraries": _library_versions(),
            "machine": {
                "cpu": device_name(settings.device),
                "cores": os.cpu_count(),
                "platform": platform.platform(),
            },
            "git_commit": git_commit(),
            "seeds": [settings.seed, *settings.spread_seeds],
            "wall_s": round(wall_s, 1),
        },
        "tolerance_rule": (
            f"quality: max({TOLERANCE_K:g} x sample std over seeds {[settings.seed, *settings.spread_seeds]}, floor), "
            f"floor {LOSS_FLOOR_NATS} nats for losses, {FRACTION_FLOOR_DOCS} documents / eval_limit for fractions, "
            f"two-sided; perf: median of the runs, warn below (1 - {PERF_TOLERANCE}) x baseline, a failure only "
            f"with --strict-perf; exact: equal; data: relative {DATA_RTOL:g}"
        ),
        "settings": settings.to_dict(),
        "shapes": shapes,
        "metrics": metrics,
    }


def dumps_baseline(baseline: dict[str, Any]) -> str:
    """JSON with one line per metric, so the file stays short and a diff shows what moved."""
    lines = ["{"]
    top = list(baseline.items())
    for index, (key, value) in enumerate(top):
        comma = "," if index < len(top) - 1 else ""
        if key == "metrics":
            lines.append('  "metrics": {')
            archs = list(value.items())
            for a_index, (arch, entries) in enumerate(archs):
                lines.append(f"    {json.dumps(arch)}: {{")
                items = list(entries.items())
                for m_index, (name, entry) in enumerate(items):
                    tail = "," if m_index < len(items) - 1 else ""
                    lines.append(f"      {json.dumps(name)}: {json.dumps(entry)}{tail}")
                lines.append("    }" + ("," if a_index < len(archs) - 1 else ""))
            lines.append("  }" + comma)
        else:
            text = json.dumps(value, indent=2).replace("\n", "\n  ")
            lines.append(f"  {json.dumps(key)}: {text}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def load_baseline(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a baseline; anything wrong is one ``ValueError``/``FileNotFoundError`` sentence."""
    import torch

    path = Path(path)
    create = f"create it with `python -m harness check --update --baseline {path}`"
    if not path.is_file():
        raise FileNotFoundError(f"baseline {path} does not exist; {create}.")
    try:
        baseline = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"baseline {path} is not valid JSON ({error}); {create}.") from None
    if not isinstance(baseline, dict) or baseline.get("kind") != BASELINE_KIND:
        raise ValueError(f"{path} is not a harness check baseline (no \"kind\": \"{BASELINE_KIND}\"); {create}.")
    version = baseline.get("schema_version")
    if version != BASELINE_SCHEMA:
        raise ValueError(
            f"baseline {path} has schema version {version!r} but this harness reads version {BASELINE_SCHEMA}; "
            f"regenerate it with `python -m harness check --update --baseline {path}`."
        )
    for key in ("produced", "settings", "metrics", "shapes"):
        if not isinstance(baseline.get(key), dict):
            raise ValueError(f"baseline {path} has no valid {key!r} section; {create}.")
    made_with = str(baseline["produced"].get("torch_version", ""))
    if made_with.split(".")[0] != torch.__version__.split(".")[0]:
        raise ValueError(
            f"baseline {path} was made with torch {made_with or 'of unknown version'} and this is torch "
            f"{torch.__version__}: results across torch major versions are not comparable; regenerate it with "
            f"`python -m harness check --update --baseline {path}` (or install the torch it names)."
        )
    try:
        settings = CheckSettings.from_dict(baseline["settings"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"baseline {path} has invalid settings ({error}); {create}.") from None
    for arch in settings.archs:
        entries = baseline["metrics"].get(arch)
        if not isinstance(entries, dict) or not entries:
            raise ValueError(f"baseline {path} lists {arch} in its settings but has no metrics for it; {create}.")
        for name, entry in entries.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("value"), (int, float)):
                raise ValueError(f"baseline {path}: {arch} metric {name} has no numeric value; {create}.")
            if entry.get("kind") in ("quality", "perf") and not isinstance(entry.get("tolerance"), (int, float)):
                raise ValueError(f"baseline {path}: {arch} metric {name} has no numeric tolerance; {create}.")
    return baseline


# ---- comparing ------------------------------------------------------------------------------


@dataclass
class Row:
    arch: str
    metric: str
    kind: str
    baseline: float | None
    now: float | None
    tolerance: str
    verdict: str  # ok | FAIL ... | warn ... | new
    failed: bool = False
    warning: bool = False


def _fmt(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.{min(digits, 3)}e}"


def compare_metric(arch: str, name: str, entry: dict | None, now: float | None, strict_perf: bool) -> Row:
    if entry is None:
        return Row(arch, name, _kind(name), None, now, "-", "new (not in baseline; --update adds it)")
    kind, base = entry.get("kind", _kind(name)), entry["value"]
    if now is None:
        return Row(arch, name, kind, base, None, "-", "FAIL missing", failed=True)
    if kind == "exact":
        ok = now == base
        return Row(arch, name, kind, base, now, "exact", "ok" if ok else "FAIL changed", failed=not ok)
    if kind == "data":
        rtol = entry.get("rtol", DATA_RTOL)
        ok = math.isclose(now, base, rel_tol=rtol, abs_tol=0.0)
        return Row(arch, name, kind, base, now, f"rel {rtol:g}", "ok" if ok else "FAIL changed", failed=not ok)
    tolerance = float(entry["tolerance"])
    if kind == "perf":
        limit = base * (1 - tolerance)
        if now >= limit:
            return Row(arch, name, kind, base, now, f"-{tolerance:.0%}", "ok")
        verdict = f"{'FAIL' if strict_perf else 'warn'} slower ({now / base:.2f}x)"
        return Row(arch, name, kind, base, now, f"-{tolerance:.0%}", verdict, failed=strict_perf, warning=not strict_perf)
    delta = now - base
    if not math.isfinite(now) or abs(delta) > tolerance:
        lower = entry.get("better", "lower" if _lower_is_better(name) else "higher") == "lower"
        direction = "worse" if (delta > 0) == lower or not math.isfinite(now) else "better"
        return Row(arch, name, kind, base, now, f"±{_fmt(tolerance, 3)}", f"FAIL {direction} by {_fmt(abs(delta), 3)}", failed=True)
    return Row(arch, name, kind, base, now, f"±{_fmt(tolerance, 3)}", "ok")


@dataclass
class CheckResult:
    rows: list[Row]
    wall_s: float
    notes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # arch -> why its run is incomplete

    @property
    def passed(self) -> bool:
        return not self.errors and not any(row.failed for row in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.failed]

    @property
    def warnings(self) -> list[Row]:
        return [row for row in self.rows if row.warning]

    def table(self) -> str:
        return format_table(self.rows)

    def summary(self) -> str:
        failed = ", ".join(f"{r.arch} {r.metric}" for r in self.failures)
        warned = ", ".join(f"{r.arch} {r.metric}" for r in self.warnings)
        parts = [f"{len(self.rows)} metrics, {len(self.failures)} failed, {len(self.warnings)} warnings, "
                 f"{self.wall_s:.0f} s"]
        if self.errors:
            parts.append("incomplete run: " + ", ".join(self.errors))
        if failed:
            parts.append(f"failed: {failed}")
        if warned:
            parts.append(f"warnings: {warned}")
        return ("PASS: " if self.passed else "FAIL: ") + "; ".join(parts)


def format_table(rows: list[Row]) -> str:
    header = ("arch", "metric", "baseline", "now", "tolerance", "verdict")
    cells = [header] + [(r.arch, r.metric, _fmt(r.baseline), _fmt(r.now), r.tolerance, r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = (False, False, True, True, True, False)

    def line(row) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths))] + [line(r) for r in cells[1:]])


def compare(
    baseline: dict[str, Any],
    measured: dict[str, dict[str, float]],
    *,
    strict_perf: bool = False,
) -> list[Row]:
    """Rows for every (arch, metric) of the baseline and of ``measured`` ({arch: metrics})."""
    rows = []
    for arch, now in measured.items():
        entries = baseline["metrics"].get(arch, {})
        names = list(entries) + [n for n in now if n not in entries and not n.startswith("_")]
        rows.extend(compare_metric(arch, name, entries.get(name), now.get(name), strict_perf) for name in names)
    return rows


def _select_archs(settings: CheckSettings, archs: list[str] | None, path: Path) -> list[str]:
    if not archs:
        return list(settings.archs)
    from architectures import available

    unregistered = [a for a in archs if a not in available()]
    if unregistered:
        raise ValueError(f"unknown architecture(s) {', '.join(unregistered)}; known: {', '.join(available())}.")
    unknown = [a for a in archs if a not in settings.archs]
    if unknown:
        raise ValueError(
            f"baseline {path} has no {', '.join(unknown)} (it has {', '.join(settings.archs)}); "
            f"add it with `python -m harness check --update --archs {','.join(unknown)} --baseline {path}`."
        )
    return list(archs)


def run_check(
    baseline_path: str | os.PathLike = DEFAULT_BASELINE,
    *,
    archs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    strict_perf: bool = False,
    workdir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> CheckResult:
    """Retrain and evaluate with the baseline's settings, compare; ``result.passed`` is the verdict.

    ``archs``: a subset of the baseline's architectures. ``overrides``: model config fields
    set on every architecture (``{"init_std": 0.2}``, ``{"n_layer": 1}``): a deliberately
    changed model, to see the gate bite.
    """
    import torch

    started = time.perf_counter()
    path = Path(baseline_path)
    baseline = load_baseline(path)
    settings = CheckSettings.from_dict(baseline["settings"])
    selected = _select_archs(settings, archs, path)
    notes = []
    made_with = baseline["produced"].get("torch_version")
    if made_with != torch.__version__:
        notes.append(f"baseline made with torch {made_with}, this is {torch.__version__}")
    made_with_eval = (baseline["produced"].get("libraries") or {}).get("lm_eval")
    now_eval = _library_versions()["lm_eval"]
    if made_with_eval and made_with_eval != now_eval:
        notes.append(f"baseline made with lm-eval {made_with_eval}, this is {now_eval}")
    if overrides:
        notes.append(f"model overrides in effect: {overrides}")
    measured: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    from harness.device import configure_device

    configure_device(settings.device, settings.dtype, compile=False)
    with workspace(workdir) as root, cpu_threads(settings.threads):
        for arch in selected:
            try:
                measured[arch] = measure_run(arch, settings, settings.seed, root / "results", overrides, log)
            except PartialRun as error:
                kept = "" if workdir is not None else " (the check's temporary folder is removed: pass workdir / --workdir DIR to keep it)"
                errors[arch] = f"{error}{kept}"
    rows = compare(baseline, measured, strict_perf=strict_perf)
    return CheckResult(rows, time.perf_counter() - started, notes, errors)


# ---- updating -------------------------------------------------------------------------------


def baseline_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """Settings and metrics that differ between two baselines, one line each."""
    if old is None:
        return "new baseline (no previous one to compare with)"
    lines = []
    old_settings, new_settings = old.get("settings", {}), new["settings"]
    for key in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(key) != new_settings.get(key):
            lines.append(f"settings.{key}: {old_settings.get(key)!r} -> {new_settings.get(key)!r}")
    old_metrics = old.get("metrics", {})
    for arch in sorted(set(old_metrics) | set(new["metrics"])):
        before, after = old_metrics.get(arch, {}), new["metrics"].get(arch, {})
        for name in list(before) + [n for n in after if n not in before]:
            a, b = before.get(name), after.get(name)
            if a is None:
                lines.append(f"{arch} {name}: added {_fmt(b['value'])}")
            elif b is None:
                lines.append(f"{arch} {name}: removed (was {_fmt(a['value'])})")
            elif a.get("value") != b.get("value") or a.get("tolerance") != b.get("tolerance"):
                tol = ""
                if a.get("tolerance") != b.get("tolerance"):
                    tol = f" (tolerance {_fmt(a.get('tolerance'), 3)} -> {_fmt(b.get('tolerance'), 3)})"
                lines.append(f"{arch} {name}: {_diff_value(a.get('value'), b['value'])}{tol}")
    return "\n".join(lines) if lines else "no metric changed"


def _diff_value(before: Any, after: Any) -> str:
    """``before -> after`` with enough digits to tell them apart."""
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and _fmt(before) == _fmt(after):
        return f"{before!r} -> {after!r}"
    return f"{_fmt(before)} -> {_fmt(after)}"


def _same_settings(old: Any, new: dict[str, Any]) -> bool:
    """Whether ``old`` is a valid baseline of this schema made with ``new``'s settings (archs aside)."""
    if not isinstance(old, dict) or old.get("kind") != BASELINE_KIND or old.get("schema_version") != BASELINE_SCHEMA:
        return False
    settings = old.get("settings")
    if not isinstance(settings, dict) or not isinstance(old.get("metrics"), dict) or not isinstance(old.get("shapes"), dict):
        return False
    if any(a not in old["metrics"] or a not in old["shapes"] for a in settings.get("archs", [])):
        return False
    return {**settings, "archs": None} == {**new["settings"], "archs": None}


def update_baseline(
    baseline_path: str | os.PathLike = DEFAULT_BASELINE,
    settings: CheckSettings | None = None,
    *,
    archs: list[str] | None = None,
    workdir: str | os.PathLike | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], str]:
    """Measure seed ``settings.seed`` and the spread seeds, write the baseline atomically; (baseline, diff).

    ``archs``: measure only these; when the existing baseline has the same settings, its
    other architectures are kept, else the new file holds only these.
    """
    from harness.io import write_text_atomic

    started = time.perf_counter()
    path = Path(baseline_path)
    settings = settings or CheckSettings()
    old = None
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            old = None  # a malformed baseline is replaced; the diff says so
    measured_archs = list(archs) if archs else list(settings.archs)
    seeds = [settings.seed, *settings.spread_seeds]
    measured = measure(settings, seeds, archs=measured_archs, workdir=workdir, log=log)
    if command is None:
        command = f"harness.check.update_baseline({str(path)!r}, {settings!r})"
    new = build_baseline(settings if not archs else replace(settings, archs=tuple(measured_archs)), measured,
                         command=command, wall_s=time.perf_counter() - started)
    if archs and _same_settings(old, new):
        # keep the previous baseline's other architectures (same settings, so still comparable)
        merged = list(old["settings"]["archs"]) + [a for a in measured_archs if a not in old["settings"]["archs"]]
        new["settings"]["archs"] = merged
        new["metrics"] = {a: new["metrics"][a] if a in measured_archs else old["metrics"][a] for a in merged}
        new["shapes"] = {a: new["shapes"][a] if a in measured_archs else old["shapes"][a] for a in merged}
    write_text_atomic(path, dumps_baseline(new))
    return new, baseline_diff(old if isinstance(old, dict) else None, new)


# ---- static facts, for a cheap test of the committed baseline -------------------------------


def static_metrics(arch: str, size: str, vocab_size: int, seq_len: int, overrides: dict | None = None) -> dict[str, float]:
    """Parameter counts and FLOPs per token of ``arch`` at ``size``, built on the meta device (no memory, no time)."""
    import torch

    from architectures import build_from_config, get
    from harness.flops import forward_flops_per_token, train_flops_per_token

    config = get(arch).config(size, **{**(overrides or {}), "vocab_size": vocab_size})
    with torch.device("meta"):
        model = build_from_config(config)
    counts = model.param_counts()
    return {
        "params": counts["params"],
        "non_embedding_params": counts["non_embedding_params"],
        "active_params": counts["active_params"],
        "forward_flops_per_token": forward_flops_per_token(config, seq_len),
        "train_flops_per_token": train_flops_per_token(config, seq_len),
    }
