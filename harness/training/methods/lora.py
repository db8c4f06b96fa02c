"""``lora``: rank-r adapters (peft) on a frozen parent; adapters, FLOPs and peft plumbing in
``harness.training.lora``. The checkpoint's ``model`` is the merged plain model, ``adapter`` the
adapter weights alone; a finished run leaves ``adapter/`` in peft's format."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from harness.training import lora


class LoraMethod:
    """LoRA at ``settings`` (rank, alpha) over ``harness.training.lora.LINEAR_TARGETS`` and the MoE experts."""

    name = slug = "lora"
    flop_convention = lora.FLOP_CONVENTION
    lr_scale = 3.0  # adapters start at B = 0 and move a low-rank update: a larger step (nano: 9e-3)

    def __init__(self, settings: lora.LoraSettings):
        self.settings = settings

    def prepare(self, model: nn.Module) -> nn.Module:
        return lora.apply_lora(model, self.settings)  # base frozen, adapters trainable (B = 0)

    def flops_per_token(self, config, seq_len: int, tokens_per_forward: int,
                        attention_flops: str = "causal") -> dict[str, float]:
        return lora.lora_flops_per_token(config, seq_len, self.settings.rank, tokens_per_forward, attention_flops)

    def plain_state(self, model: nn.Module) -> dict:
        return lora.merged_copy(model).state_dict()

    def checkpoint_extras(self, model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
        return {"adapter": lora.adapter_state(model)}

    def load_state(self, model: nn.Module, checkpoint: dict) -> None:
        lora.load_adapter_state(model, checkpoint["adapter"])

    def record_fields(self) -> dict:
        return {"method": self.name, "targets": {"modules": lora.LINEAR_TARGETS, "parameters": list(lora.EXPERT_TARGETS)}}

    def save_artifacts(self, model: nn.Module, run_dir: Path) -> None:
        from harness.runs.run_dir import ADAPTER_DIR

        model.save_pretrained(str(Path(run_dir) / ADAPTER_DIR))
