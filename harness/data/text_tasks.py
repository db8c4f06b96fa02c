"""Generated text-to-text tasks with references, scored by BLEU / chrF and ROUGE.

Written in the synthetic vocabulary's words (``w12 w300``; one token per word in the
synthetic tokenizer, any other tokenizer encodes them too), offline and deterministic:

- ``task:translate``: a sentence of ``min_len``–``max_len`` (6–12) source words, drawn
  uniformly from the **key** range, is translated by a **fixed one-to-one mapping** (a
  permutation seeded by ``table_seed``) into the **value** range, with **local reordering**:
  every adjacent pair of words swaps places (``a b c d e`` → ``B A D C E``). A model that
  maps words but keeps the source order earns unigram credit and few bigrams: BLEU and chrF
  have partial credit to give. Format: ``SPAN s1 … sL COPY`` → ``t1 … tL``.
- ``task:summarize``: a document of ``min_len``–``max_len`` (16–32) filler words from the
  **markov** range with 3–5 salient words from the **subject** range inserted at random
  places; the summary is the salient words in order (extraction). Format:
  ``d1 … dN QUERY`` → ``s1 … sK``. ROUGE-1/2/L give credit for a partial summary.

Validation examples come from a seed of their own (``TASK_VAL_SEED``) and any whose prompt
also occurs in the training examples is dropped, so validation pairs are held out.
Options (``task:translate?n_train=5000``): ``min_len``, ``max_len``, ``n_train`` (20000),
``n_val`` (500), ``seed`` (0) and any ``SyntheticConfig`` field (vocabulary layout).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from harness.data.spec import parse_spec, take_options
from harness.data.synthetic_config import COPY_TOKEN, QUERY_TOKEN, SPAN_TOKEN, SyntheticConfig

TEXT_TASKS = ("translate", "summarize")
TASK_VAL_SEED = 2_147_483_646  # as harness.data.pairs: independent of the run seed
LENGTHS = {"translate": (6, 12), "summarize": (16, 32)}
SALIENT = (3, 5)  # salient words per summarize document


def translation_table(config: SyntheticConfig) -> np.ndarray:
    """Source word index (0 … n_keys-1) → target token id: a fixed permutation into the values."""
    if config.n_values < config.n_keys:
        raise ValueError(f"task:translate needs n_values ≥ n_keys for a one-to-one mapping, got {config.n_values} < {config.n_keys}.")
    permutation = np.random.default_rng([config.table_seed, 7]).permutation(config.n_values)[: config.n_keys]
    return permutation + config.value_base


def reorder_locally(words: list[int]) -> list[int]:
    """Swap each adjacent pair: positions (0, 1), (2, 3), …; an odd last word stays."""
    out = list(words)
    for i in range(0, len(out) - 1, 2):
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def translate_examples(config: SyntheticConfig, n: int, seed: int, min_len: int, max_len: int) -> list[tuple[str, str]]:
    table = translation_table(config)
    rng = np.random.default_rng([seed, 11])
    examples = []
    for _ in range(n):
        source = rng.integers(0, config.n_keys, size=int(rng.integers(min_len, max_len + 1))).tolist()
        target = reorder_locally([int(table[s]) for s in source])
        prompt = [SPAN_TOKEN] + [config.key_base + s for s in source] + [COPY_TOKEN]
        examples.append((_words(prompt), _words(target)))
    return examples


def summarize_examples(config: SyntheticConfig, n: int, seed: int, min_len: int, max_len: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng([seed, 13])
    examples = []
    for _ in range(n):
        filler = (rng.integers(0, config.n_markov, size=int(rng.integers(min_len, max_len + 1))) + config.markov_base).tolist()
        n_salient = int(rng.integers(SALIENT[0], SALIENT[1] + 1))
        salient = (rng.integers(0, config.n_subjects, size=n_salient) + config.subject_base).tolist()
        places = np.sort(rng.integers(0, len(filler) + 1, size=n_salient))
        document = list(filler)
        for offset, (place, word) in enumerate(zip(places.tolist(), salient)):
            document.insert(place + offset, word)
        examples.append((_words(document + [QUERY_TOKEN]), _words(salient)))
    return examples


def generate_text_task(spec: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict]:
    """``(train pairs, held-out validation pairs, description)`` of ``task:translate`` / ``task:summarize``."""
    name, _, query = spec[len("task:"):].partition("?")
    if name not in TEXT_TASKS:
        raise ValueError(f"unknown text task {name!r} in {spec!r}; known: {', '.join('task:' + t for t in TEXT_TASKS)}.")
    low, high = LENGTHS[name]
    defaults = {"min_len": low, "max_len": high, "n_train": 20000, "n_val": 500, "seed": 0}
    config_defaults = {f.name: f.default for f in fields(SyntheticConfig)}
    options = take_options(parse_spec("synthetic" + ("?" + query if query else "")), {**defaults, **config_defaults})
    min_len, max_len, n_train, n_val, seed = (int(options.pop(k)) for k in ("min_len", "max_len", "n_train", "n_val", "seed"))
    if not 1 <= min_len <= max_len:
        raise ValueError(f"task options need 1 ≤ min_len ≤ max_len, got min_len={min_len} and max_len={max_len}.")
    if n_train < 1 or n_val < 1:
        raise ValueError(f"task options n_train and n_val must be positive, got {n_train} and {n_val}.")
    config = SyntheticConfig(**options)
    make = translate_examples if name == "translate" else summarize_examples
    train = make(config, n_train, seed, min_len, max_len)
    seen = {prompt for prompt, _ in train}
    val = [pair for pair in make(config, n_val, TASK_VAL_SEED, min_len, max_len) if pair[0] not in seen]
    info = {"spec": spec, "kind": "pairs", "task": name, "n_train_examples": n_train, "n_val_examples": len(val),
            "train_seed": seed, "val_seed": TASK_VAL_SEED, "min_len": min_len, "max_len": max_len,
            "table_seed": config.table_seed}
    return train, val, info


def _words(ids) -> str:
    return " ".join(f"w{int(i)}" for i in ids)
