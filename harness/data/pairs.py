"""Prompt/completion pairs for fine-tuning: a jsonl file, or a generated task with a known answer.

Specs (``is_pairs_spec``):

- ``path/to/file.jsonl`` whose records hold ``"prompt"`` and ``"completion"`` strings; the
  final 10 % of the records (by position) are validation, never trained on.
- ``task:recall`` and ``task:reverse_recall``: **generated, offline tasks with a known
  answer**, written in the synthetic vocabulary's words (``w12 w300``; any tokenizer
  encodes them, the synthetic one as one token per word). A prompt is a definition block
  of ``pairs`` random key/value pairs followed by a query, as in ``harness.data.synthetic_config``:
  ``DEF k1 v1 ... kP vP QUERY q``. In ``recall`` q is a defined key and the completion its
  value — the skill the synthetic corpus pre-trains. In ``reverse_recall`` q is a defined
  *value* and the completion its key: a lookup in the other direction, which pre-training
  never shows, so a model must adapt to learn it (it is learnable: find q in the context,
  copy the token before it). Keys and values are drawn afresh for every example, so the
  validation examples (drawn with a fixed seed of their own) are genuinely held out, and
  the answer is determined by the prompt (entropy floor 0). Options: ``pairs`` (4),
  ``n_train`` (20000), ``n_val`` (500), ``seed`` (0, the training examples' seed) and
  any ``SyntheticConfig`` field (vocabulary layout).
- ``task:translate`` and ``task:summarize``: generated text-to-text tasks with references
  for BLEU / chrF / ROUGE (``harness.data.text_tasks``).

Encoding (``encode_pairs``): each example is ``[EOT] + prompt + completion + [EOT]`` in the
parent run's tokenizer (prompt and completion encoded separately, so the boundary is
exact). **The loss covers the completion tokens and the closing EOT only**; the prompt is
masked (targets ``-100``). Examples are packed whole, in order, into rows of
``seq_len + 1`` tokens; the rest of a row is padding, also masked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from harness.data.spec import parse_spec, take_options
from harness.data.synthetic_config import DEF_TOKEN, FACT_TOKEN, QUERY_TOKEN, SyntheticConfig
from harness.data.synthetic_generator import SyntheticGenerator
from harness.data.text_tasks import TEXT_TASKS, generate_text_task

TASKS = ("facts", "recall", "reverse_recall")
FACTS_TABLE_SEED = 99  # task:facts default: a fact table the synthetic corpus (table_seed 1234) never shows
TASK_VAL_SEED = 2_147_483_646  # validation examples of a generated task; independent of the run seed
IGNORE_INDEX = -100
VAL_FRACTION = 0.1


def is_pairs_spec(spec: str) -> bool:
    """A generated task (``task:...``) or a ``.jsonl`` whose first record has prompt and completion."""
    if spec.startswith("task:"):
        return True
    path = Path(parse_spec(spec).target)
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    with path.open() as handle:
        for line in handle:
            if line.strip():
                first = json.loads(line)
                return isinstance(first, dict) and "prompt" in first and "completion" in first
    return False


def load_pairs(spec: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict]:
    """``(train pairs, validation pairs, description)`` of a pairs spec (see the module docstring)."""
    if spec.startswith("task:"):
        return generate_task(spec)
    path = Path(parse_spec(spec).target)
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record.get("prompt"), str) or not isinstance(record.get("completion"), str):
            raise ValueError(f"{path} line {number} needs string fields \"prompt\" and \"completion\".")
        pairs.append((record["prompt"], record["completion"]))
    if len(pairs) < 2:
        raise ValueError(f"{path} has {len(pairs)} prompt/completion pair(s); a train/validation split needs at least 2.")
    n_val = max(1, round(VAL_FRACTION * len(pairs)))
    return pairs[:-n_val], pairs[-n_val:], {"spec": spec, "kind": "pairs", "source": str(path)}


def check_task_name(spec: str) -> None:
    """Refuse a ``task:NAME`` spec naming no generated task (other specs pass): checked before anything else."""
    if not spec.startswith("task:"):
        return
    name = spec[len("task:"):].partition("?")[0]
    if name not in TASKS and name not in TEXT_TASKS:
        known = ", ".join("task:" + t for t in (*TASKS, *TEXT_TASKS))
        raise ValueError(f"unknown task {name!r} in {spec!r}; known: {known}.")


def generate_task(spec: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict]:
    check_task_name(spec)
    name, _, query = spec[len("task:"):].partition("?")
    if name in TEXT_TASKS:
        return generate_text_task(spec)
    defaults = {"pairs": 4, "n_train": 20000, "n_val": 500, "seed": 0}
    config_defaults = {f.name: f.default for f in fields(SyntheticConfig)}
    options = take_options(parse_spec("synthetic" + ("?" + query if query else "")), {**defaults, **config_defaults})
    n_pairs, n_train, n_val, seed = (int(options.pop(key)) for key in ("pairs", "n_train", "n_val", "seed"))
    config = SyntheticConfig(**options)
    if not 1 <= n_pairs <= min(config.n_keys, config.n_values):
        raise ValueError(f"task option pairs must be between 1 and {min(config.n_keys, config.n_values)}, got {n_pairs}.")
    if n_train < 1 or n_val < 1:
        raise ValueError(f"task options n_train and n_val must be positive, got {n_train} and {n_val}.")
    if name == "facts":
        if "table_seed" not in parse_spec("synthetic" + ("?" + query if query else "")).options:
            config = SyntheticConfig(**{**config.to_dict(), "table_seed": FACTS_TABLE_SEED})
        objects = SyntheticGenerator(config).fact_objects + config.object_base
        train = _fact_examples(config, objects, np.random.default_rng([seed, 1]).integers(0, config.n_subjects, n_train))
        val = _fact_examples(config, objects, np.arange(config.n_subjects))
        n_val = config.n_subjects
    else:
        reverse = name == "reverse_recall"
        train = _recall_examples(config, n_pairs, n_train, seed, reverse)
        val = _recall_examples(config, n_pairs, n_val, TASK_VAL_SEED, reverse)
    info = {"spec": spec, "kind": "pairs", "task": name, "pairs": n_pairs, "n_train_examples": n_train,
            "n_val_examples": n_val, "train_seed": seed, "val_seed": TASK_VAL_SEED, "entropy_floor": 0.0,
            "table_seed": config.table_seed}
    return train, val, info


def _fact_examples(config: SyntheticConfig, objects: np.ndarray, subjects: np.ndarray) -> list[tuple[str, str]]:
    """``FACT s`` → ``o`` for each subject index in ``subjects`` (table ``objects``: subject → object id)."""
    return [(_words([FACT_TOKEN, config.subject_base + s]), _words([objects[s]])) for s in subjects]


def _recall_examples(config: SyntheticConfig, n_pairs: int, n: int, seed: int, reverse: bool) -> list[tuple[str, str]]:
    """``n`` examples ``DEF k1 v1 ... kP vP QUERY q`` → answer (distinct keys and values within an example)."""
    rng = np.random.default_rng([seed, n_pairs, int(reverse)])
    keys = np.argsort(rng.random((n, config.n_keys)), axis=1)[:, :n_pairs] + config.key_base
    values = np.argsort(rng.random((n, config.n_values)), axis=1)[:, :n_pairs] + config.value_base
    asked = rng.integers(0, n_pairs, size=n)
    examples = []
    for row in range(n):
        body = [DEF_TOKEN] + [t for pair in zip(keys[row], values[row]) for t in pair] + [QUERY_TOKEN]
        query, answer = (values, keys) if reverse else (keys, values)
        prompt = body + [query[row, asked[row]]]
        examples.append((_words(prompt), _words([answer[row, asked[row]]])))
    return examples


def _words(ids) -> str:
    return " ".join(f"w{int(i)}" for i in ids)


@dataclass
class PackedPairs:
    """Examples packed into rows: ``tokens`` [rows, T + 1]; for the targets ``tokens[:, 1:]``:
    ``loss_mask`` [rows, T] (completion + closing EOT) and ``example`` [rows, T] (the example's
    index on its completion tokens, -1 elsewhere; for exact-match accuracy)."""

    tokens: np.ndarray
    loss_mask: np.ndarray
    example: np.ndarray
    n_examples: int

    @property
    def n_rows(self) -> int:
        return len(self.tokens)

    def rows(self, index: np.ndarray):
        """``(x, y)`` LongTensors of the given rows; masked targets are ``-100``."""
        import torch

        tokens = torch.from_numpy(self.tokens[index])
        y = tokens[:, 1:].clone()
        y[~torch.from_numpy(self.loss_mask[index])] = IGNORE_INDEX
        return tokens[:, :-1].contiguous(), y


def encode_pairs(pairs: list[tuple[str, str]], tokenizer, seq_len: int) -> PackedPairs:
    """Tokenize with ``tokenizer`` and pack whole examples into rows (see the module docstring)."""
    eot, width = tokenizer.eot_id, seq_len + 1
    rows, masks, owners = [], [], []
    tokens, mask, owner = [], [], []

    def flush():
        pad = width - len(tokens)
        rows.append(tokens + [eot] * pad)
        masks.append(mask + [False] * pad)
        owners.append(owner + [-1] * pad)

    for index, (prompt, completion) in enumerate(pairs):
        p, c = tokenizer.encode(prompt), tokenizer.encode(completion)
        if not c:
            raise ValueError(f"pair {index} has an empty completion; every pair needs at least one completion token.")
        example = [eot] + p + c + [eot]
        if len(example) > width:
            raise ValueError(f"pair {index} is {len(example)} tokens with its end-of-text markers, longer than "
                             f"seq_len + 1 = {width}; shorten it or fine-tune with a longer --seq-len.")
        if len(tokens) + len(example) > width:
            flush()
            tokens, mask, owner = [], [], []
        # mask[i] says whether token i is a target: completion tokens and the closing EOT
        tokens += example
        mask += [False] * (1 + len(p)) + [True] * (len(c) + 1)
        owner += [-1] * (1 + len(p)) + [index] * len(c) + [-1]
    if tokens:
        flush()
    tokens_array = np.asarray(rows, dtype=np.int64)
    # shift: target j of a row is token j + 1
    return PackedPairs(tokens_array, np.asarray(masks)[:, 1:], np.asarray(owners, dtype=np.int64)[:, 1:], len(pairs))
