"""GPT-1 (Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training").

12 layers, d_model 768, 12 heads, FFN 3072, GELU; **post-LN** (``LN(x + f(x))``) with no
final LayerNorm; learned positions, context 512; BPE vocab 40,478; dropout 0.1 on
residuals, embeddings and attention; N(0, 0.02) init (no residual scaling); tied head.
About 117M parameters.
"""

from architectures.presets import CPU_SIZE_DEFAULTS, CPU_SIZES, SizeDefaults
from architectures.registry import Architecture, register

GPT1 = register(
    Architecture(
        name="gpt1",
        summary="post-LN, no final LayerNorm, dropout 0.1 (Radford et al. 2018)",
        defaults=dict(
            norm_placement="post",
            final_norm=False,
            residual_init_scaling=False,
            dropout=0.1,
            attention_pattern=("dense",),
            ffn="mlp",
        ),
        sizes={
            **CPU_SIZES,
            "117m": dict(n_layer=12, d_model=768, n_head=12, context=512, vocab_size=40478),
        },
        size_defaults={**CPU_SIZE_DEFAULTS, "117m": SizeDefaults(lr=2.5e-4)},
    )
)
