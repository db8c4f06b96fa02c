"""The method protocol the engine trains through (one implementation per file in this folder).

A method decides, for a model the run has built or loaded:

- ``prepare(model)``: the model to train, with ``requires_grad`` set on exactly the parameters
  that train (it may wrap the model, as LoRA does);
- ``flops_per_token(config, seq_len, tokens_per_forward, attention_flops)``: training FLOPs per
  token by part, ``total`` being what the budget is planned with, under ``flop_convention`` (2 per
  multiply-add) with attention counted by ``attention_flops`` (``harness.flops.ATTENTION_FLOPS``);
- ``plain_state(model)`` / ``checkpoint_extras(model)`` / ``load_state(model, checkpoint)``:
  the checkpoint's ``model`` weights (always a plain harness model's state dict, so eval, export
  and fine-tuning read it unchanged), anything else the method needs to resume, and the reverse;
- ``record_fields()``: what a fine-tuning record says about the method (``finetune`` entry);
- ``lr_scale``: the default fine-tuning peak learning rate as a multiple of the size's pre-training one;
- ``save_artifacts(model, run_dir)``: files a finished run leaves besides the checkpoint.

``Method`` is also the base class: every parameter trains, 3 × forward FLOPs per token.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from harness.flops import DEFAULT_ATTENTION_FLOPS, forward_flops_per_token

FULL_CONVENTION = "FLOPs = 2 per multiply-add, per token at the run's seq_len; training = 3 x forward (every parameter trains)"


class Method:
    """Every parameter trains; a training token costs 3 × forward (forward, activation and weight gradients)."""

    name = "full"
    flop_convention = FULL_CONVENTION
    lr_scale = 1.0  # default fine-tuning peak lr = lr_scale × the size's pre-training lr

    @property
    def slug(self) -> str:
        """The method's name as it appears in run ids (letters and digits only)."""
        return "".join(char for char in self.name if char.isalnum())

    def prepare(self, model: nn.Module) -> nn.Module:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def flops_per_token(self, config, seq_len: int, tokens_per_forward: int,
                        attention_flops: str = DEFAULT_ATTENTION_FLOPS) -> dict[str, float]:
        forward = forward_flops_per_token(config, seq_len, attention_flops)
        return {"forward": forward, "backward": 2 * forward, "total": 3 * forward}

    def plain_state(self, model: nn.Module) -> dict:
        return model.state_dict()

    def checkpoint_extras(self, model: nn.Module) -> dict:
        return {}

    def load_state(self, model: nn.Module, checkpoint: dict) -> None:
        model.load_state_dict(checkpoint["model"])

    def record_fields(self) -> dict:
        return {"method": self.name, "targets": "all parameters"}

    def save_artifacts(self, model: nn.Module, run_dir: Path) -> None:
        return None


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that train (``requires_grad``), tied weights once."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def parameter_counts(model: nn.Module) -> dict[str, float]:
    """``trainable_params`` (requires_grad), ``total_params``, ``fraction_trainable``; tied weights once."""
    seen, trainable, total = set(), 0, 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return {"trainable_params": trainable, "total_params": total, "fraction_trainable": trainable / total}
