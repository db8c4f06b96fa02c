"""GPT-4-style: a documented composite of public techniques, **not** a replica.

The GPT-4 Technical Report (OpenAI 2023) discloses no architecture, size or compute; it
says only that the model is a Transformer-style next-token predictor that accepts image
and text input. This architecture therefore combines:

- GPT-3's layout (pre-LN, alternating dense and locally banded attention);
- a **mixture-of-experts FFN** in every block (Shazeer 2017; Switch, Fedus et al. 2021;
  Mixtral, Jiang et al. 2024): top-k of E experts, softmax over the k selected logits,
  Switch load-balancing loss (α = 0.01), ST-MoE router z-loss (1e-3), router in float32,
  capacity factor 1.25 in training with the dropped fraction reported. By default each
  expert has d_ff/k hidden units, so the **active** FFN FLOPs per token equal the dense
  model's and gpt4 at a size is compute-matched to gpt3 at that size;
- an **image-input stub** (ViT, Dosovitskiy et al. 2020): P×P patches projected to
  d_model with learned patch positions, prepended to the text as a prefix; the loss is
  on text only, and text-only input works unchanged.

Sizes ``125m-e8`` and ``1.3b-e16`` are our own choice: GPT-3 125M / 1.3B shapes whose
FFNs become 8 experts (top-2) and 16 experts (top-2).
"""

from architectures.gpt3 import GPT3_SIZE_DEFAULTS, GPT3_SIZES
from architectures.gpt2 import GPT2_DEFAULTS
from architectures.presets import CPU_SIZE_DEFAULTS, CPU_SIZES
from architectures.registry import Architecture, register

GPT4 = register(
    Architecture(
        name="gpt4",
        summary="GPT-3 layout + top-2 mixture-of-experts FFN + image-patch prefix (composite)",
        defaults={
            **GPT2_DEFAULTS,
            "attention_pattern": ("dense", "banded"),
            "ffn": "moe",
            "n_experts": 8,
            "top_k": 2,
            "capacity_factor": 1.25,
            "patch_size": 4,
            "image_size": 16,
        },
        sizes={
            **CPU_SIZES,
            "125m-e8": {**GPT3_SIZES["125m"], "n_experts": 8, "top_k": 2, "patch_size": 16, "image_size": 224},
            "1.3b-e16": {**GPT3_SIZES["1.3b"], "n_experts": 16, "top_k": 2, "patch_size": 16, "image_size": 224},
        },
        size_defaults={**CPU_SIZE_DEFAULTS, "125m-e8": GPT3_SIZE_DEFAULTS["125m"], "1.3b-e16": GPT3_SIZE_DEFAULTS["1.3b"]},
    )
)
