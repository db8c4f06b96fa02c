"""Parameters and FLOPs of one architecture at one size (analytic; instant even at 175B).

Prints params (total, non-embedding, active), forward and training FLOPs per token, the
forward breakdown by component, the convention, and with --tokens the total training
FLOPs both ways: analytic (3 x forward x D, attention included) and 6·N·D (N = active
params). Models are built on the meta device, so nothing is allocated.
FLOPs = 2 per multiply-add; per text token at the sequence length (default: the context).
--cross-check also builds the model for real and counts one forward pass with fvcore
and torch's FlopCounterMode (small sizes only).
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from architectures.config import parse_overrides
from harness.cli import add_set_argument

CROSS_CHECK_MAX_PARAMS = 2e9  # --cross-check builds a real model: refuse absurd sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, help="architecture name (see `python -m harness list`)")
    parser.add_argument("--size", help="size preset (default: the architecture's first)")
    parser.add_argument("--seq-len", type=int, help="sequence length T (default: the context)")
    parser.add_argument("--tokens", help="training tokens D, e.g. 300e9: adds total training FLOPs")
    parser.add_argument("--attention-flops", choices=("causal", "full"), default="causal",
                        help="attention count: causal = score entries the mask admits (dense (T+1)/2 keys per query, "
                             "banded the band's exact count; what budgets use by default), full = PaLM's (dense all T)")
    add_set_argument(parser)
    parser.add_argument("--cross-check", action="store_true", help="also count with fvcore and FlopCounterMode")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")


def parse_tokens(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        tokens = float(text)
    except ValueError:
        raise ValueError(f"--tokens needs a number of tokens such as 300e9, got {text!r}.") from None
    if not math.isfinite(tokens) or tokens <= 0:
        raise ValueError(f"--tokens must be a positive number of tokens, got {text!r}.")
    return tokens


def flops_summary(
    arch: str,
    size: str | None = None,
    *,
    seq_len: int | None = None,
    tokens: float | None = None,
    overrides: dict | None = None,
    attention_flops: str = "causal",
) -> dict:
    """Params, FLOPs per token, breakdown and (with ``tokens``) totals, from a meta-device model;
    attention counted by ``attention_flops`` (``harness.flops.ATTENTION_FLOPS``)."""
    import architectures
    from harness.flops import (
        convention,
        forward_breakdown,
        image_prefix_flops_per_image,
        six_n_d,
    )

    spec = architectures.get(arch)
    config = spec.config(size, **(overrides or {}))
    T = config.check_seq_len(seq_len)
    with torch.device("meta"):
        model = spec.build(config)
    counts = model.param_counts()
    breakdown = forward_breakdown(config, T, attention_flops)
    forward = sum(breakdown.values())
    summary = {
        "arch": config.arch,
        "size": config.size,
        "overrides": dict(overrides or {}),
        "seq_len": T,
        "params": counts["params"],
        "non_embedding_params": counts["non_embedding_params"],
        "active_params": counts["active_params"],
        "active_non_embedding_params": counts.get("active_non_embedding_params"),
        "forward_flops_per_token": forward,
        "train_flops_per_token": 3 * forward,
        "breakdown": breakdown,
        "image_prefix_flops_per_image": image_prefix_flops_per_image(config),
        "attention_flops": attention_flops,
        "convention": convention(attention_flops),
        "units": {
            "params": "parameters (tied head counted once)",
            "forward_flops_per_token": "FLOPs per text token (2 per multiply-add)",
            "train_flops_per_token": "FLOPs per text token (forward + backward = 3 x forward)",
            "breakdown": "forward FLOPs per text token by component",
            "train_flops_total": "FLOPs (analytic train FLOPs/token x tokens)",
            "train_flops_total_6nd": "FLOPs (6 x active params x tokens; attention not counted)",
        },
    }
    if tokens is not None:
        summary["tokens"] = tokens
        summary["train_flops_total"] = 3 * forward * tokens
        summary["train_flops_total_6nd"] = six_n_d(counts["active_params"], tokens)
    return summary


def cross_check_summary(arch: str, size: str | None, seq_len: int | None, overrides: dict | None) -> dict:
    """Build the model for real (CPU) and compare analytic, fvcore and FlopCounterMode counts."""
    import architectures
    from harness.flops.cross_checks import cross_check

    spec = architectures.get(arch)
    config = spec.config(size, **(overrides or {}))
    with torch.device("meta"):
        n_params = spec.build(config).param_counts()["params"]
    if n_params > CROSS_CHECK_MAX_PARAMS:
        raise ValueError(
            f"--cross-check builds {arch} {config.size} for real ({n_params / 1e9:.1f}B params); "
            f"use a size under {CROSS_CHECK_MAX_PARAMS / 1e9:.0f}B params."
        )
    torch.manual_seed(0)
    model = spec.build(config)
    return cross_check(model, seq_len, batch_size=1)


def _num(value: float, unit: str) -> str:
    if value == 0:
        return f"0 {unit}"
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix} {unit}"
    return f"{value:.4g} {unit}"


def _params(value: int) -> str:
    for suffix, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.4g}{suffix} params ({value:,})"
    return f"{value} params"


def format_table(summary: dict) -> str:
    lines = [f"{summary['arch']} {summary['size']}  (sequence length T = {summary['seq_len']} tokens)"]
    if summary["overrides"]:
        lines[0] += "  overrides: " + ", ".join(f"{k}={v}" for k, v in summary["overrides"].items())
    rows: list[tuple[str, str]] = [
        ("params, total (tied head once)", _params(summary["params"])),
        ("params, non-embedding (Kaplan)", _params(summary["non_embedding_params"])),
        ("params, active per token (MoE: k of E)", _params(summary["active_params"])),
        ("forward", _num(summary["forward_flops_per_token"], "FLOPs/token")),
        ("training (3 x forward)", _num(summary["train_flops_per_token"], "FLOPs/token")),
    ]
    forward = summary["forward_flops_per_token"]
    breakdown_rows = [
        (f"  {key}", f"{_num(value, 'FLOPs/token')}  ({100 * value / forward:.1f} % of forward)")
        for key, value in summary["breakdown"].items()
        if value
    ]
    total_rows = []
    if "tokens" in summary:
        total_rows = [
            ("training tokens D", f"{summary['tokens']:.4g} tokens"),
            ("training total, analytic (3 x fwd x D)", f"{summary['train_flops_total']:.4g} FLOPs"),
            ("training total, 6·N·D (N active)", f"{summary['train_flops_total_6nd']:.4g} FLOPs"),
        ]
    width = max(len(label) for label, _ in rows + breakdown_rows + total_rows)
    lines.append("")
    for label, value in rows[:3]:
        lines.append(f"{label.ljust(width)}  {value}")
    lines.append("")
    lines.append(f"FLOPs per text token at T (2 FLOPs per multiply-add, matmuls only; attention_flops={summary['attention_flops']}):")
    for label, value in rows[3:]:
        lines.append(f"{label.ljust(width)}  {value}")
    lines.append("forward breakdown by component:")
    for label, value in breakdown_rows:
        lines.append(f"{label.ljust(width)}  {value}")
    if summary["image_prefix_flops_per_image"]:
        lines.append(
            f"{'image prefix (patch projection)'.ljust(width)}  "
            f"{_num(summary['image_prefix_flops_per_image'], 'FLOPs/image')} (forward, once per image)"
        )
    if total_rows:
        lines.append("")
        for label, value in total_rows:
            lines.append(f"{label.ljust(width)}  {value}")
    if "cross_check" in summary:
        check = summary["cross_check"]
        lines.append("")
        lines.append(f"cross-check, forward FLOPs/token at T = {check['seq_len']} (batch {check['batch_size']}, eval mode; "
                     "measured counts see executed work, so the analytic count here is the full convention):")
        for label, key, diff in (
            ("analytic (attention_flops=full)", "analytic_forward_flops_per_token", None),
            ("fvcore (2 x MACs, our handles)", "fvcore_forward_flops_per_token", "fvcore_vs_analytic"),
            ("FlopCounterMode as shipped", "flop_counter_forward_flops_per_token", "flop_counter_vs_analytic"),
            (
                "FlopCounterMode + CPU SDPA formula",
                "flop_counter_cpu_sdpa_forward_flops_per_token",
                "flop_counter_cpu_sdpa_vs_analytic",
            ),
        ):
            note = f"  ({100 * check[diff]:.2f} % from analytic)" if diff else ""
            lines.append(f"  {label.ljust(width - 2)}  {_num(check[key], 'FLOPs/token')}{note}")
    lines.append("")
    lines.append(f"convention: {summary['convention']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set)
    summary = flops_summary(
        args.arch, args.size, seq_len=args.seq_len, tokens=parse_tokens(args.tokens), overrides=overrides,
        attention_flops=args.attention_flops,
    )
    if args.cross_check:
        summary["cross_check"] = cross_check_summary(args.arch, args.size, summary["seq_len"], overrides)
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(summary))
    return 0
