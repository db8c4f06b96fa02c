"""The text run: one short run on a shared corpus, so the tokenizer, the split and bits per byte are gated.

``text_arch`` at ``size`` on ``HARNESS_DATA_DIR/<text_data>``, a byte-level BPE of
``text_vocab_size`` trained on the training split, ``short_budget_flops``. Everything here is
deterministic, so it is gated exactly: the split (``n_train_docs``, ``n_val_docs``,
``n_train_tokens``, ``n_val_tokens``, ``val_bytes``), the tokenizer (``tokenizer``: its name,
which carries a hash of its training text, and ``vocab_size``), the validation tokens and the
documents (``val_tokens``, ``documents``: sha256 prefixes), and the short run's losses and bits
per byte (``SHORT_KEYS``, ``short_val_bpb``, ``short_unigram_val_bpb``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.check.deterministic import measure_short, short_spec
from harness.check.settings import CheckSettings

SPLIT_KEYS = ("n_train_docs", "n_val_docs", "n_train_tokens", "n_val_tokens", "val_bytes", "vocab_size")


class TextDataMissing(FileNotFoundError):
    """The text run's corpus is not under ``HARNESS_DATA_DIR``."""


def text_corpus(settings: CheckSettings) -> Path:
    """The corpus file; raises ``TextDataMissing`` (one sentence) when it is not there."""
    from harness.paths import data_dir

    path = data_dir() / str(settings.text_data)
    if not path.exists():
        raise TextDataMissing(f"the text run's corpus {path.resolve()} is not there; set HARNESS_DATA_DIR to the "
                              f"shared data folder (it holds {settings.text_data}).")
    return path


def missing_is_failure() -> bool:
    """Under CI (``CI=true``) a missing corpus fails the check; elsewhere the text group is skipped with a note."""
    return os.environ.get("CI") == "true"


def text_metrics(settings: CheckSettings, results_dir: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The text group's metrics (see the module docstring)."""
    spec = short_spec(settings.text_arch, settings, overrides, data=str(text_corpus(settings)),
                      vocab_size=settings.text_vocab_size)
    record, metrics = measure_short(spec, results_dir)
    data = record["data"]
    metrics.update({key: data[key] for key in SPLIT_KEYS})
    metrics.update(tokenizer=data["tokenizer"], val_tokens=data["val_sha256"][:16], documents=data["content_hash"][:16],
                   short_val_bpb=record["val_bpb"], short_unigram_val_bpb=record["unigram_val_bpb"],
                   _vocab_size=data["vocab_size"], _seq_len=record["seq_len"])
    return metrics
