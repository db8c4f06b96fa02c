"""harness: GPT-family architectures trained at matched compute, evaluated with lm-eval.

Conventions used everywhere in this package:
- FLOPs count 2 per multiply-add; a name says whether a figure is per token, per step
  or in total, and whether it is forward-only or training (forward + backward).
- Losses are in nats per token unless a name says bits (bits per byte: ``bpb``).
"""

__version__ = "0.1.0"
