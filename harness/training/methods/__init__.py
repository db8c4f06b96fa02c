"""Training methods: how a run prepares its model, which parameters train, and what a step costs.

One file per method (``pretrain``, ``full``, ``lora``, ``top``), each a small class honouring
``harness.training.methods.base.Method``; the engine (``harness.training.engine``) calls only that
protocol, so a new method is a new file here and a line in ``get_method``.

    method = get_method("top:2")          # "pretrain", "full", "lora" (with LoraSettings), "top:N"
    model = method.prepare(model)         # sets requires_grad (LoRA: wraps the model)
    method.flops_per_token(config, seq_len, tokens_per_forward)["total"]
"""

from __future__ import annotations

from harness.training.methods.base import Method
from harness.training.methods.full import FullMethod, PretrainMethod
from harness.training.methods.lora import LoraMethod
from harness.training.methods.top import TopMethod, parse_top

FINETUNE_METHODS = ("full", "lora", "top:N")  # as users spell them; N: a number of blocks


def is_finetune_method(name: str) -> bool:
    """Whether ``name`` is a fine-tuning method (``full``, ``lora`` or ``top:N`` with N ≥ 1)."""
    if name in ("full", "lora"):
        return True
    try:
        parse_top(name)
    except ValueError:
        return False
    return True


def get_method(name: str, lora_settings=None) -> Method:
    """The method called ``name``; LoRA takes ``lora_settings`` (``harness.training.lora.LoraSettings``)."""
    if name == "pretrain":
        return PretrainMethod()
    if name == "full":
        return FullMethod()
    if name == "lora":
        if lora_settings is None:
            raise ValueError("the lora method needs its rank and alpha (LoraSettings).")
        return LoraMethod(lora_settings)
    if name.startswith("top"):
        return TopMethod(parse_top(name))
    raise ValueError(f"unknown method {name!r}; choose pretrain, {', '.join(FINETUNE_METHODS)}.")


__all__ = ["FINETUNE_METHODS", "FullMethod", "LoraMethod", "Method", "PretrainMethod", "TopMethod", "get_method",
           "is_finetune_method", "parse_top"]
