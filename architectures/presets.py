"""Size presets shared by every architecture, so CPU comparisons are like for like."""

CPU_SIZES = {
    # for tests: seconds on a laptop CPU
    "nano": dict(n_layer=2, d_model=64, n_head=4, context=64, vocab_size=4096),
    # between the two: the CPU study's size (micro's context and band, a quarter of its width)
    "mini": dict(n_layer=4, d_model=128, n_head=4, context=256, vocab_size=4096),
    # CPU minutes
    "micro": dict(n_layer=6, d_model=256, n_head=8, context=256, vocab_size=4096),
}
