"""The harness's own probes, written as lm-eval task data from the synthetic generator.

Each probe is an lm-eval task whose YAML ships in ``harness/evaluation/tasks/``; its data
is generated deterministically (fixed seeds, never the training or validation seeds)
into ``harness.paths.cache_dir()/probes/<key>/<task>.jsonl`` as text of the synthetic
vocabulary (space-separated words), keyed by the generator's config and the probe sizes.

| task | what | metric (chance) |
| --- | --- | --- |
| ``harness_recall_16`` | value of a key defined 16 tokens back: inside every preset's band (window ≥ 32) | acc (1/n_values) |
| ``harness_recall_48`` | 48 tokens back: beyond the 32-token window of nano/micro, inside nano's 64 context | acc |
| ``harness_recall_64`` | 64 tokens back: beyond the 32-token band of mini/micro, inside their 256 context | acc |
| ``harness_recall_128`` | 128 tokens back: beyond micro's window, inside its 256 context | acc |
| ``harness_copy`` | reproduce a span of 8 tokens after COPY (greedy generation) | exact_match, token_acc |
| ``harness_facts`` | the object of a subject from the corpus-wide fact table (memorisation) | acc (1/n_objects) |
| ``harness_heldout`` | held-out documents, rolling log-likelihood | nll_per_token, excess_nll_per_token (over the exact floor), token_perplexity |
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness import paths
from harness.io import write_text_atomic

PROBE_FORMAT = 1  # bump when the probe data for the same generator changes
PROBE_SEED = 1_000_003  # probes draw from rng([seed, i, kind]); documents use rng([seed, doc])
HELDOUT_SEED = 2_147_483_646  # a document seed no run trains on (the validation seed is 2**31 - 1)
RECALL_DISTANCES = (16, 48, 64, 128)
COPY_SPAN = 8
N_RECALL = 200
N_COPY = 100
N_FACTS = 200
HELDOUT_TOKENS = 16_384
TEMPLATES_DIR = Path(__file__).resolve().parent / "tasks"

PROBE_TASKS: dict[str, str] = {
    **{f"harness_recall_{d}": "harness_recall.yaml" for d in RECALL_DISTANCES},
    "harness_copy": "harness_copy.yaml",
    "harness_facts": "harness_facts.yaml",
    "harness_heldout": "harness_heldout.yaml",
}
PROBES_ALIAS = "harness_probes"  # --tasks harness_probes: every probe


def probe_task_names() -> list[str]:
    return list(PROBE_TASKS)


def is_probe(name: str) -> bool:
    return name in PROBE_TASKS


def template_path(name: str) -> Path:
    return TEMPLATES_DIR / PROBE_TASKS[name]


def task_overrides(name: str) -> dict[str, Any]:
    """Fields the generated YAML sets on top of the shipped template."""
    if name == "harness_copy":
        return {"generation_kwargs": {"until": [], "max_gen_toks": COPY_SPAN, "do_sample": False}}
    return {}


# ---- documents --------------------------------------------------------------------------------
def _pairs(probes) -> list[tuple[list[int], list[int]]]:
    return [(list(map(int, context)), list(map(int, target))) for context, target in probes]


def _probe_docs(name: str, generator, tokenizer) -> list[dict]:
    decode = tokenizer.decode
    if name.startswith("harness_recall_"):
        distance = int(name.rsplit("_", 1)[1])
        probes = _pairs(generator.recall_probe(N_RECALL, distance, PROBE_SEED))
        return [{"context": decode(c), "target": " " + decode(t), "distance": distance} for c, t in probes]
    if name == "harness_copy":
        probes = _pairs(generator.copy_probe(N_COPY, COPY_SPAN, PROBE_SEED))
        return [{"context": decode(c), "target": decode(t)} for c, t in probes]
    if name == "harness_facts":
        probes = _pairs(generator.fact_probe(N_FACTS, PROBE_SEED))
        return [{"context": decode(c), "target": " " + decode(t)} for c, t in probes]
    if name == "harness_heldout":
        return _heldout_docs(generator, tokenizer)
    raise ValueError(f"{name!r} is not a harness probe; probes: {', '.join(PROBE_TASKS)}.")


def _heldout_docs(generator, tokenizer) -> list[dict]:
    """Whole documents (each ending with end-of-text) from a seed no run trains on."""
    tokens, _, floors = generator.generate(HELDOUT_TOKENS, HELDOUT_SEED)
    tokens, floors = tokens.tolist(), floors.tolist()
    eot = int(tokenizer.eot_id)
    docs, start = [], 0
    for i, token in enumerate(tokens):
        if token == eot:
            if i + 1 - start > 1:  # a document, not a lone separator
                docs.append(
                    {
                        "text": tokenizer.decode(tokens[start : i + 1]),
                        "n_tokens": i + 1 - start,
                        "floor_nats": float(sum(floors[start : i + 1])),
                    }
                )
            start = i + 1
    return docs  # a trailing, unfinished document is left out


# ---- files ------------------------------------------------------------------------------------
def probe_key(generator, tokenizer) -> str:
    """Cache key: the generator's config, the tokenizer and every probe size and seed."""
    config = generator.config.to_dict() if hasattr(generator.config, "to_dict") else repr(generator.config)
    parts = [
        PROBE_FORMAT, config, getattr(tokenizer, "name", type(tokenizer).__name__), int(tokenizer.eot_id),
        PROBE_SEED, HELDOUT_SEED, RECALL_DISTANCES, COPY_SPAN, N_RECALL, N_COPY, N_FACTS, HELDOUT_TOKENS,
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_probe_files(
    names: list[str], generator, tokenizer, cache_dir: str | Path | None = None
) -> dict[str, Path]:
    """Make sure ``<cache>/probes/<key>/<task>.jsonl`` exists for each probe; return the paths."""
    folder = Path(cache_dir or paths.cache_dir()) / "probes" / probe_key(generator, tokenizer)
    files = {}
    for name in names:
        path = (folder / f"{name}.jsonl").resolve()
        if not path.exists():
            docs = _probe_docs(name, generator, tokenizer)
            write_text_atomic(path, "".join(json.dumps(doc) + "\n" for doc in docs))
        files[name] = path
    return files


def generator_for_record(record: dict) -> Any:
    """The synthetic generator a run was trained on, from its record's ``data`` section."""
    from harness.data import SyntheticConfig, SyntheticGenerator

    data = record.get("data") or {}
    if data.get("kind") != "synthetic" or "synthetic_config" not in data:
        raise ValueError(
            f"the harness probes need a run trained on synthetic data; this run's data is "
            f"{data.get('kind', 'unknown')!r} (evaluate it on e.g. wikitext,lambada_openai instead)."
        )
    return SyntheticGenerator(SyntheticConfig(**data["synthetic_config"]))

