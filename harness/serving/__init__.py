"""Serving: cached greedy generation over ragged batches, and the inference benchmark."""

from harness.serving.generation import Generation, greedy_generate, left_pad

__all__ = ["Generation", "greedy_generate", "left_pad"]
