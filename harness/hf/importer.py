"""Import a Hugging Face checkpoint as a harness run directory.

``import_checkpoint(source, out)`` writes an ordinary run directory, loadable by
``harness.runs.run_dir.load_run_model`` like a trained one:

- ``checkpoint.pt``: ``{"model": state dict (fp32), "config": ModelConfig dict, "run_id", "step": 0}``
- ``config.json``: ``{"run": None, "model": ..., "run_id", "imported": provenance}``
- ``tokenizer/``: the checkpoint's ``tokenizer.json`` + special tokens (kind ``hf``)
- ``record.json``: status ``ok``, ``imported`` (source, hub commit, sha256 of each weight
  file, the transformers config, the HF class), parameter counts and FLOPs per token of the
  model, ``data.kind = "text"``, and no training: ``budget_flops``, ``flops_used``,
  ``tokens`` and ``steps`` are null.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness.hf.families import HF_CLASSES, config_from_hf
from harness.hf.source import HFCheckpoint, resolve_checkpoint
from harness.hf.weights import IGNORED, state_from_hf
from harness.io import write_json_atomic
from harness.runs.records import git_commit, write_record
from harness.runs.run_dir import CONFIG_NAME, TOKENIZER_DIR, save_checkpoint


def source_label(checkpoint: HFCheckpoint) -> str:
    """A short model name for the record's ``size``: the hub repo, or the folder's name."""
    if checkpoint.hub:
        return checkpoint.hub["repo_id"].split("/")[-1]
    return checkpoint.directory.resolve().name


def _tokenizer_folder(checkpoint: HFCheckpoint, scratch: Path) -> Path:
    """A folder holding the checkpoint's ``tokenizer.json``; converted by transformers when only slow files exist."""
    if (checkpoint.directory / "tokenizer.json").is_file():
        return checkpoint.directory
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ValueError(
            f"{checkpoint.directory} has no tokenizer.json; install transformers (pip install transformers) "
            f"to convert its slow tokenizer files, or save the tokenizer with save_pretrained first."
        ) from None
    try:
        AutoTokenizer.from_pretrained(str(checkpoint.directory), use_fast=True).save_pretrained(str(scratch))
    except Exception as error:
        raise ValueError(f"{checkpoint.directory} has no usable tokenizer ({type(error).__name__}: {error}).") from None
    return scratch


def source_parameter_count(hf_state: dict[str, torch.Tensor]) -> int:
    """Parameters of the HF checkpoint: every stored tensor but mask buffers and a tied head."""
    return sum(v.numel() for k, v in hf_state.items() if not IGNORED.search(k) and not k.endswith("lm_head.weight"))


def _notes(model: torch.nn.Module, source_params: int) -> list[str]:
    extra = model.param_counts()["params"] - source_params
    if extra and model.config.arch == "gpt3":
        return [f"GPT-Neo has no q/k/v biases: the harness model holds them as {extra} zeros, counted in params; "
                f"√d_head is folded into the query weights (GPT-Neo does not scale scores)."]
    return []


def _record(run_id: str, checkpoint: HFCheckpoint, model: torch.nn.Module, tokenizer: Any, source_params: int) -> dict[str, Any]:
    from harness.flops import DEFAULT_ATTENTION_FLOPS, convention, forward_flops_per_token, train_flops_per_token

    config = model.config
    return {
        "run_id": run_id,
        "status": "ok",
        "error": None,
        "arch": config.arch,
        "size": config.size,
        **model.param_counts(),
        "seq_len": config.context,
        "forward_flops_per_token": forward_flops_per_token(config, config.context),
        "train_flops_per_token": train_flops_per_token(config, config.context),
        "flop_convention": convention(DEFAULT_ATTENTION_FLOPS),
        "attention_flops": DEFAULT_ATTENTION_FLOPS,
        "budget_flops": None,  # imported, not trained here: no training FLOPs
        "flops_used": None,
        "tokens": None,
        "steps": None,
        "seed": None,
        "imported": {
            "format": "huggingface",
            "source": checkpoint.source,
            "hub": checkpoint.hub or None,
            "model_type": checkpoint.model_type,
            "hf_class": (checkpoint.config.get("architectures") or [None])[0],
            "mapped_as": HF_CLASSES[checkpoint.model_type],
            "weights": checkpoint.weight_hashes(),
            "source_params": source_params,
            "notes": _notes(model, source_params),
            "transformers_config": checkpoint.config,
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "data": {"kind": "text", "spec": None, "tokenizer": tokenizer.name,
                 "vocab_size": int(tokenizer.vocab_size), "eot_id": int(tokenizer.eot_id)},
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
    }


def import_checkpoint(
    source: str | os.PathLike, out: str | os.PathLike, *, force: bool = False, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Convert ``source`` (folder or ``hf:NAME``) into the run directory ``out``; returns ``out``.

    Refuses (``ValueError``) an existing non-empty ``out`` unless ``force``, an unsupported
    family and anything that cannot map exactly (see ``harness.hf.families``). The directory
    is assembled in a temporary sibling and renamed into place: a failed import leaves nothing.
    """
    from architectures import build_from_config
    from harness.data.tokenizer import ImportedTokenizer

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} already exists and is not empty; choose another --out or pass --force to replace it.")
    checkpoint = resolve_checkpoint(source, cache_dir=cache_dir)
    config = config_from_hf(checkpoint.config, label=source_label(checkpoint))
    hf_state = checkpoint.load_state_dict()
    source_params = source_parameter_count(hf_state)
    state = state_from_hf(checkpoint.model_type, config, hf_state)
    del hf_state
    model = build_from_config(config)
    model.load_state_dict(state)
    run_id = out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer = ImportedTokenizer.from_folder(_tokenizer_folder(checkpoint, tmp / "converted-tokenizer"),
                                            name=f"hf:{source_label(checkpoint)}")
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size} embeddings.")
        tokenizer.save(tmp / TOKENIZER_DIR)
        shutil.rmtree(tmp / "converted-tokenizer", ignore_errors=True)
        save_checkpoint(tmp, {"model": model.state_dict(), "config": config.to_dict(),
                              "run_id": run_id, "step": 0, "imported_from": checkpoint.source})
        record = _record(run_id, checkpoint, model, tokenizer, source_params)
        write_json_atomic(tmp / CONFIG_NAME, {"run": None, "model": config.to_dict(), "run_id": run_id,
                                                "imported": {k: record["imported"][k] for k in ("source", "hub", "weights")}})
        write_record(tmp, record)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
