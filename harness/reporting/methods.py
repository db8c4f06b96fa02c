"""The comparison report's Methods section: data, recipe, budget, hardware, software, code, how to reproduce.

Every line is read from the run records (the first record for what all runs share; every
record where they may differ), except the report machine and the installed library versions.
"""

from __future__ import annotations

import math
import platform
from typing import Any, Iterable

import pandas as pd

from harness.reporting.formatting import fmt_count, fmt_sci
from harness.reporting.inputs import arch_order, numeric, run_groups

STATISTICS = ("- **Statistics**: 95 % confidence intervals over seeds from the t-distribution; Welch's t-test "
              "for differences; isoFLOP parabolas by least squares with covariance and a seed bootstrap.")


def _unique(values: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))))


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _data_lines(first: dict[str, Any]) -> list[str]:
    """Data and tokenizer; a field the record lacks is left out of the sentence, never printed as None."""
    data = first.get("data") or {}
    line = f"- **Data**: `{data.get('spec')}` ({data.get('kind', 'kind not recorded')})"
    if _known(data.get("n_train_tokens")):
        line += (f"; {fmt_count(data.get('n_train_tokens'))} training and {fmt_count(data.get('n_val_tokens'))} "
                 "validation tokens")
    if data.get("content_hash"):
        line += f"; content hash `{str(data['content_hash'])[:12]}`"
    held_out = (f"the first {fmt_count(first['val_tokens'])} held-out tokens" if _known(first.get("val_tokens"))
                else "the held-out tokens")
    tokenizer = f"- **Tokenizer**: {data.get('tokenizer') or 'as recorded in each run directory'}"
    if _known(data.get("vocab_size")):
        tokenizer += f" with a vocabulary of {data['vocab_size']} tokens"
    return [
        line + f". Validation metrics use {held_out}, the same for every run. Batches are a pure function of "
        "(seed, step), so every architecture at a seed sees the same tokens in the same order.",
        tokenizer + " (one tokenizer for every architecture).",
    ]


def _step_shape(recipe: dict[str, Any]) -> str:
    """``8 sequences × 256 tokens × 1 accumulation step(s) × 1 process(es)``, leaving out factors not recorded."""
    parts = [(recipe.get("micro_batch_size"), "sequences"), (recipe.get("seq_len"), "tokens"),
             (recipe.get("grad_accum"), "accumulation step(s)"), (recipe.get("world_size"), "process(es)")]
    return " × ".join(f"{value} {unit}" for value, unit in parts if _known(value))


def _recipe_line(records: list[dict[str, Any]]) -> str:
    recipe = dict(records[0].get("recipe") or {})
    differing = sorted({k for r in records for k, v in (r.get("recipe") or {}).items() if recipe.get(k) != v})
    shape = _step_shape(recipe)
    return (
        f"- **Recipe** (identical for every architecture{'' if not differing else ' except ' + ', '.join(differing)}): "
        f"AdamW β = ({recipe.get('beta1')}, {recipe.get('beta2')}), ε = {recipe.get('eps')}, weight decay "
        f"{recipe.get('weight_decay')} on matrices only, gradient clipping at global norm {recipe.get('grad_clip')}, "
        f"peak learning rate {recipe.get('lr')} with linear warm-up over {recipe.get('warmup_fraction')} of the steps "
        f"then cosine decay to {recipe.get('min_lr_ratio')} × peak; {recipe.get('batch_tokens')} tokens per optimizer "
        f"step" + (f" ({shape})." if shape else ".")
    )


def convention_line(records: list[dict[str, Any]]) -> str:
    """The FLOP convention the records' budgets were counted in (records written before the
    ``attention_flops`` field counted attention in the ``full`` convention)."""
    from harness.flops import convention

    used = _unique(r.get("attention_flops") or "full" for r in records)
    return "; ".join(convention(name) for name in used)


def _budget_lines(runs: pd.DataFrame, meta: dict | None, records: list[dict[str, Any]]) -> list[str]:
    budgets = sorted(set(numeric(runs["budget_flops"]).dropna()))
    steps = ", ".join(f"{a} {v}: {int(numeric(g['steps']).mean())}"
                      for _, v, a, g in run_groups(runs, arch_order(runs, meta)))
    return [
        f"- **Budget**: {', '.join(fmt_sci(b) for b in budgets)} training FLOPs per run. Steps = ⌊budget ÷ "
        f"(train FLOPs/token × tokens/step)⌋, so a cheaper model trains on more tokens (steps: {steps}).",
        f"- **FLOP convention**: {convention_line(records)}. Parameters counted per `model.param_counts()`; "
        "isoFLOP fits use active parameters (embeddings included).",
    ]


def hardware_line(records: list[dict[str, Any]]) -> str:
    """Devices, dtypes, the peak used for MFU and the CPU threads (``device_settings.threads``)."""
    peaks = _unique(fmt_sci(r.get("peak_flops_per_s")) for r in records if r.get("peak_flops_per_s"))
    settings = records[0].get("device_settings") or {}
    line = (f"- **Hardware**: {', '.join(_unique(r.get('device') for r in records))}; "
            f"dtype {', '.join(_unique(r.get('dtype') for r in records))}")
    if peaks:
        line += f"; peak used for MFU: {', '.join(peaks)} FLOP/s"
        if settings.get("peak_source"):
            line += f" ({settings['peak_source']})"
    if settings.get("threads"):
        line += f"; {settings['threads']} CPU threads"
    return line + f"; report machine: {platform.machine()} {platform.system()}, Python {platform.python_version()}."


def software_line(records: list[dict[str, Any]]) -> str:
    software = [f"torch {', '.join(_unique(r.get('torch_version') for r in records))} (training)"]
    for module in ("numpy", "pandas", "scipy", "matplotlib"):
        try:
            software.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    try:
        from importlib.metadata import version

        software.append(f"lm-eval {version('lm_eval')}")
    except Exception:  # noqa: BLE001 - optional
        pass
    tasks = sorted({f"{task} v{entry.get('version')}" for r in records
                    for task, metrics in (r.get("evaluation") or {}).items() for entry in (metrics or {}).values()
                    if isinstance(entry, dict) and entry.get("version") is not None})
    return f"- **Software**: {', '.join(software)}" + (f"; lm-eval tasks {', '.join(tasks)}" if tasks else "") + "."


def code_line(records: list[dict[str, Any]]) -> str:
    from harness.runs.records import git_commit

    commits = _unique(r.get("git_commit") for r in records)
    several = " (the checkout changed during the sweep: `git diff` them to see what)" if len(commits) > 1 else ""
    return (f"- **Code**: runs trained at git commit {', '.join(f'`{c}`' for c in commits) or 'unknown'}{several}; "
            f"report generated at `{git_commit() or 'unknown'}`.")


def _reproduce(records: list[dict[str, Any]], meta: dict | None, report_command: str) -> list[str]:
    lines = ["", "**Reproduce**", "", "```bash"]
    if meta and meta.get("command"):
        lines.append(meta["command"] + "    # trains (or reuses) every run, then writes this report")
    else:
        lines += [f"# a run was made with: {command}" for command in _unique(r.get("command") for r in records)]
    return lines + [report_command + "    # regenerates this report from the records alone", "```"]


def methods_section(records: list[dict[str, Any]], runs: pd.DataFrame, meta: dict | None, report_command: str) -> str:
    """The Methods section's markdown for the finished trained runs of a report."""
    lines = _data_lines(records[0]) + [_recipe_line(records)] + _budget_lines(runs, meta, records)
    lines += [hardware_line(records), software_line(records), code_line(records), STATISTICS]
    return "\n".join(lines + _reproduce(records, meta, report_command))
