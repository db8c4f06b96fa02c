"""lm-eval tasks over the generated text-to-text tasks: ``harness_translate`` (bleu, chrf) and
``harness_summarize`` (rouge1, rouge2, rougeL).

Their documents are the first ``N_DOCS`` held-out validation pairs of ``task:translate`` /
``task:summarize`` at their default options (``harness.data.text_tasks``), written as
``{"context", "target"}`` jsonl into ``harness.paths.cache_dir()/text_tasks/``; the YAML
templates ship in ``harness/evaluation/tasks/``. The text is synthetic-vocabulary words, so
any run can be scored (one token per word with the synthetic tokenizer); a model scores
above zero once fine-tuned on the task (``harness finetune --data task:translate``).
BLEU and chrF are sacrebleu's corpus scores (0-100, through lm-eval's own metrics), ROUGE
rouge-score's F-measure (0-1) averaged over documents.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness import paths
from harness.io import write_text_atomic

TEXT_TASKS = {"harness_translate": "translate", "harness_summarize": "summarize"}
N_DOCS = 200
TEMPLATES_DIR = Path(__file__).resolve().parent / "tasks"


def is_text_task(name: str) -> bool:
    return name in TEXT_TASKS


def text_task_for_data(spec: str) -> str | None:
    """The lm-eval task that scores generation on fine-tuning data ``spec`` (``task:translate?...``
    → ``harness_translate``), or None for other data."""
    if not spec.startswith("task:"):
        return None
    name = spec[len("task:"):].partition("?")[0]
    return next((task for task, data in TEXT_TASKS.items() if data == name), None)


def text_task_docs(name: str) -> list[dict]:
    """The task's documents: held-out validation pairs as context / target."""
    from harness.data.text_tasks import generate_text_task

    _, val, _ = generate_text_task(f"task:{TEXT_TASKS[name]}?n_train=20000&n_val={N_DOCS}")
    return [{"context": prompt, "target": completion} for prompt, completion in val]


def write_text_task_file(name: str, cache_dir: str | Path | None = None) -> Path:
    """Make sure ``<cache>/text_tasks/<name>.jsonl`` exists; return its path."""
    path = (Path(cache_dir or paths.cache_dir()) / "text_tasks" / f"{name}.jsonl").resolve()
    if not path.exists():
        write_text_atomic(path, "".join(json.dumps(doc) + "\n" for doc in text_task_docs(name)))
    return path


def text_task_yaml(name: str, data_file: Path) -> dict:
    return {
        "include": str(TEMPLATES_DIR / f"{name}.yaml"),
        "task": name,
        "dataset_kwargs": {"data_files": {"test": str(Path(data_file).resolve())}},
    }
