"""GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners").

GPT-1 with LayerNorm moved to each sub-block's input (**pre-LN**), a final LayerNorm
after the last block, residual projections scaled at init by 1/sqrt(2·n_layer), vocab
50,257, context 1,024. Dropout: the paper is silent for pre-training; 0 here (nanoGPT's
choice). Sizes counted correctly (tied head, learned positions, biases): 124M, 355M,
774M, 1558M (the paper names them 117M, 345M, 762M, 1542M).
"""

from architectures.presets import CPU_SIZE_DEFAULTS, CPU_SIZES, SizeDefaults
from architectures.registry import Architecture, register

GPT2_DEFAULTS = dict(
    norm_placement="pre",
    final_norm=True,
    residual_init_scaling=True,
    dropout=0.0,
    attention_pattern=("dense",),
    ffn="mlp",
)

GPT2 = register(
    Architecture(
        name="gpt2",
        summary="pre-LN, final LayerNorm, residual init 1/sqrt(2L) (Radford et al. 2019)",
        defaults=GPT2_DEFAULTS,
        sizes={
            **CPU_SIZES,
            "124m": dict(n_layer=12, d_model=768, n_head=12, context=1024, vocab_size=50257),
            "355m": dict(n_layer=24, d_model=1024, n_head=16, context=1024, vocab_size=50257),
            "774m": dict(n_layer=36, d_model=1280, n_head=20, context=1024, vocab_size=50257),
            "1558m": dict(n_layer=48, d_model=1600, n_head=25, context=1024, vocab_size=50257),
        },
        size_defaults={**CPU_SIZE_DEFAULTS, "124m": SizeDefaults(lr=6e-4), "355m": SizeDefaults(lr=3e-4),
                       "774m": SizeDefaults(lr=2.5e-4), "1558m": SizeDefaults(lr=2e-4)},
    )
)
