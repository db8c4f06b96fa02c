"""Does a harness run compute what a Hugging Face checkpoint computes? Logits side by side.

``logit_difference(hf_dir, run)`` loads the checkpoint with ``transformers``
(``AutoModelForCausalLM``, fp32, eval mode) and the run with the harness loader, feeds both
the same random token ids and returns max |Δ logit|. Imports and exports are exact up to
float rounding: ≤ 1e-4 in fp32 for the tiny test models.
"""

from __future__ import annotations

import os

import torch


def load_hf_model(directory: str | os.PathLike) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` in fp32, eval mode, eager attention (needs transformers)."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise ValueError("comparing with transformers needs it installed: pip install transformers") from None
    return AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, attn_implementation="eager").eval()


def logits_max_difference(hf_model: torch.nn.Module, model: torch.nn.Module, ids: torch.Tensor) -> float:
    """max |logits_hf − logits_harness| over ``ids`` [B, T] (both in eval mode, no grad)."""
    with torch.no_grad():
        theirs = hf_model(ids).logits.float()
        ours = model(ids).logits.float()
    if theirs.shape != ours.shape:
        raise ValueError(f"logit shapes differ: transformers {tuple(theirs.shape)}, harness {tuple(ours.shape)}.")
    return float((theirs - ours).abs().max())


def random_ids(vocab_size: int, length: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def logit_difference(hf_directory: str | os.PathLike, run: str | os.PathLike, length: int | None = None, seed: int = 0) -> float:
    """max |Δ logit| between the HF checkpoint and the run on random ids of ``length`` (default: the context, ≤ 256)."""
    from harness.runs.run_dir import load_run_model

    model, _, _ = load_run_model(run)
    hf_model = load_hf_model(hf_directory)
    length = length or min(model.config.context, 256)
    ids = random_ids(model.config.vocab_size, length, seed=seed)
    return logits_max_difference(hf_model, model, ids)
