"""GPT-3-style (Brown et al. 2020, "Language Models are Few-Shot Learners").

GPT-2's model, init and pre-normalisation, with layers **alternating dense and locally
banded sparse attention** (similar to the Sparse Transformer): even layers dense, odd
layers banded. The band width is not published; the default window is context/8 with a
floor of 32 (256 at context 2,048, GPT-Neo's choice). Context 2,048 and d_ff = 4·d_model
for every size; Table 2.1 shapes below. The 13B row lists d_model 5,140 with 40 heads of
128 (n_head·d_head = 5,120 ≠ d_model); we keep the table's numbers, with d_head given.
The paper's parameter counts are rounded (e.g. "350M" counts 356M with positions).
"""

from architectures.gpt2 import GPT2_DEFAULTS
from architectures.presets import CPU_SIZE_DEFAULTS, CPU_SIZES, SizeDefaults
from architectures.registry import Architecture, register


def _table(n_layer: int, d_model: int, n_head: int, d_head: int) -> dict:
    return dict(n_layer=n_layer, d_model=d_model, n_head=n_head, d_head=d_head, context=2048, vocab_size=50257)


GPT3_SIZES = {
    "125m": _table(12, 768, 12, 64),
    "350m": _table(24, 1024, 16, 64),
    "760m": _table(24, 1536, 16, 96),
    # The table's 24 heads × 128 = 3,072 ≠ d_model and would count 1.5B; 16 × 128 keeps both
    # d_model and d_head and counts the stated 1.3B.
    "1.3b": _table(24, 2048, 16, 128),
    "2.7b": _table(32, 2560, 32, 80),
    "6.7b": _table(32, 4096, 32, 128),
    "13b": _table(40, 5140, 40, 128),
    "175b": _table(96, 12288, 96, 128),
}

# Table 2.1's peak learning rates
GPT3_SIZE_DEFAULTS = {
    size: SizeDefaults(lr=lr)
    for size, lr in (("125m", 6e-4), ("350m", 3e-4), ("760m", 2.5e-4), ("1.3b", 2e-4), ("2.7b", 1.6e-4),
                     ("6.7b", 1.2e-4), ("13b", 1e-4), ("175b", 0.6e-4))
}

GPT3 = register(
    Architecture(
        name="gpt3",
        summary="GPT-2 with alternating dense / locally banded attention (Brown et al. 2020)",
        defaults={**GPT2_DEFAULTS, "attention_pattern": ("dense", "banded")},
        sizes={**CPU_SIZES, **GPT3_SIZES},
        size_defaults={**CPU_SIZE_DEFAULTS, **GPT3_SIZE_DEFAULTS},
    )
)
