"""List every architecture with its sizes and parameter counts.

Counts are exact (models are built on the meta device, so 175B costs no memory):
params = all parameters (tied head once); non_embedding = minus token/position
embeddings (Kaplan et al.); active = what one token uses (MoE: k of E experts).

Vocabulary: counts are at each size's preset vocabulary (the vocab column: 4,096 tokens for
nano/mini/micro, the paper's 50,257 for the paper sizes). A run's record counts the model it
trained, at its data's vocabulary (synthetic data: 512 tokens; text: the BPE's --vocab-size),
so its params differ from this table while non-embedding params agree.
"""

from __future__ import annotations

import argparse
import json

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    parser.add_argument("--arch", help="only this architecture")


def architecture_rows(arch: str | None = None) -> list[dict]:
    """One row per (architecture, size): counts and shape."""
    import architectures

    names = [architectures.get(arch).name] if arch else architectures.available()
    rows = []
    for name in names:
        spec = architectures.get(name)
        for size in spec.sizes:
            config = spec.config(size)
            with torch.device("meta"):
                model = spec.build(config)
            counts = model.param_counts()
            rows.append(
                {
                    "arch": name,
                    "size": size,
                    "params": counts["params"],
                    "non_embedding_params": counts["non_embedding_params"],
                    "active_params": counts["active_params"],
                    "n_layer": config.n_layer,
                    "d_model": config.d_model,
                    "n_head": config.n_head,
                    "context": config.context,
                    "vocab_size": config.vocab_size,
                }
            )
    return rows


def _human(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(count)


def main(args: argparse.Namespace) -> int:
    rows = architecture_rows(args.arch)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    header = ("arch", "size", "params", "non-emb params", "active params", "layers", "d_model", "heads", "context",
              "vocab")
    table = [header] + [
        (
            r["arch"],
            r["size"],
            _human(r["params"]),
            _human(r["non_embedding_params"]),
            _human(r["active_params"]),
            str(r["n_layer"]),
            str(r["d_model"]),
            str(r["n_head"]),
            str(r["context"]),
            f"{r['vocab_size']:,}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * width for width in widths))
    print("\nparams count the embeddings at the vocab shown; a run's record counts them at its data's vocabulary "
          "(synthetic: 512 tokens; text: --vocab-size), so only non-emb params are the same there.")
    return 0
