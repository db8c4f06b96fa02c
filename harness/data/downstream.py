"""Downstream data for fine-tuning, tokenized with the **parent run's** tokenizer.

``prepare_downstream(spec, tokenizer, seq_len)`` returns one of:

- ``CorpusData``: any data spec ``harness.data.prepare_data`` reads (text files or folders,
  ``hf:...``, ``synthetic?...``). Text is prepared and split as in pre-training (token
  shards, validation by a hash of each document's content) and encoded with the parent's tokenizer, not a new one;
  synthetic data must share the parent's synthetic vocabulary. Loss on every token;
  validation reports loss (nats/token) and bits per byte (text) or excess loss (synthetic).
- ``PairsData``: prompt/completion pairs (``harness.data.pairs``): loss on the completion
  (and its closing end-of-text) only; validation reports loss per completion token and
  exact-match accuracy (every completion token the argmax, teacher-forced).

Both draw a step's rows as a pure function of (seed, step, micro step, rank), so a resumed run
sees the same batches and data-parallel ranks read disjoint shares of one draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.batches import get_batch
from harness.data.pairs import PackedPairs, encode_pairs, is_pairs_spec, load_pairs
from harness.data.prepare import PreparedData, prepare_data
from harness.data.spec import parse_spec
from harness.data.tokenizer import SyntheticTokenizer

_TASK_CACHE: dict[tuple, "PairsData"] = {}


@dataclass
class CorpusData:
    data: PreparedData
    kind: str = "corpus"

    def train_batch(self, step: int, micro: int, batch_size: int, seq_len: int, seed: int, rank: int = 0,
                    world_size: int = 1):
        return get_batch(self.data.train_tokens, step, batch_size, seq_len, seed=seed, micro_step=micro, rank=rank,
                         world_size=world_size)

    def evaluate(self, model, seq_len: int, batch_size: int, device, autocast, max_tokens: int) -> dict:
        from harness.training.heldout import validation_metrics

        return validation_metrics(model, self.data, seq_len, batch_size, device, autocast, max_tokens=max_tokens)

    def describe(self) -> dict:
        return {**self.data.describe(), "downstream": "corpus"}


@dataclass
class PairsData:
    train: PackedPairs
    val: PackedPairs
    info: dict
    kind: str = "pairs"

    def train_batch(self, step: int, micro: int, batch_size: int, seq_len: int, seed: int, rank: int = 0,
                    world_size: int = 1):
        """``batch_size`` rows for ``rank``: its share of the ``world_size`` × ``batch_size`` rows drawn for (step, micro)."""
        rng = np.random.default_rng([seed, step, micro])
        rows = rng.integers(0, self.train.n_rows, size=batch_size * world_size)
        return self.train.rows(rows[rank * batch_size:(rank + 1) * batch_size])

    @torch.no_grad()
    def evaluate(self, model, seq_len: int, batch_size: int, device, autocast, max_tokens: int) -> dict:
        """Loss per completion token (nats) and exact-match accuracy over every validation example."""
        was_training = model.training
        model.eval()
        loss_sum, n_tokens = 0.0, 0
        wrong = np.zeros(self.val.n_examples, dtype=bool)
        for first in range(0, self.val.n_rows, batch_size):
            index = np.arange(first, min(first + batch_size, self.val.n_rows))
            x, y = self.val.rows(index)
            x, y = x.to(device), y.to(device)
            with autocast():
                logits = model(x).logits
            losses = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none", ignore_index=-100)
            loss_sum += float(losses.sum())
            n_tokens += int((y != -100).sum())
            owner = self.val.example[index]
            miss = (logits.argmax(-1) != y).cpu().numpy() & (owner >= 0)
            wrong[owner[miss]] = True
        model.train(was_training)
        return {"val_loss": loss_sum / n_tokens, "val_tokens": n_tokens,
                "val_accuracy": float(1.0 - wrong.mean()), "val_examples": int(self.val.n_examples)}

    def describe(self) -> dict:
        return {**self.info, "downstream": "pairs", "train_rows": self.train.n_rows, "val_rows": self.val.n_rows}


def prepare_downstream(spec: str, tokenizer, seq_len: int, seed: int = 0) -> CorpusData | PairsData:
    """The downstream data of ``spec`` in ``tokenizer``'s vocabulary (see the module docstring)."""
    synthetic_parent = isinstance(tokenizer, SyntheticTokenizer)
    if is_pairs_spec(spec):
        key = (spec, tokenizer.name, tokenizer.vocab_size, seq_len)
        if key in _TASK_CACHE:  # generated tasks are deterministic: encode them once per process
            return _TASK_CACHE[key]
        train, val, info = load_pairs(spec)
        info = {**info, "tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size}
        data = PairsData(encode_pairs(train, tokenizer, seq_len), encode_pairs(val, tokenizer, seq_len), info)
        if spec.startswith("task:"):
            _TASK_CACHE[key] = data
        return data
    kind = parse_spec(spec).kind
    if kind == "synthetic":
        data = prepare_data(spec, seed=seed)
        if not synthetic_parent or data.tokenizer.vocab_size > tokenizer.vocab_size:
            raise ValueError(f"{spec!r} is in the synthetic vocabulary ({data.tokenizer.name}), but the parent run's "
                             f"tokenizer is {tokenizer.name}; fine-tune on text, or on a task (task:recall).")
        return CorpusData(data)
    if synthetic_parent:
        raise ValueError(f"the parent run was trained on synthetic data ({tokenizer.name}), whose vocabulary cannot "
                         f"encode the text of {spec!r}; fine-tune it on synthetic data or a task (task:reverse_recall).")
    return CorpusData(prepare_data(spec, tokenizer=tokenizer))
