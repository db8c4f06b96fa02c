"""Task names → an lm-eval ``TaskManager`` that can load them (offline too).

- Harness probes (``harness_recall_16`` ...; ``harness_probes`` for all): a generated YAML
  ``include:``s the template shipped in ``harness/evaluation/tasks/`` by absolute path and
  points ``data_files`` at the probe's jsonl (see ``probes.py``).
- Standard tasks (``STANDARD_TASKS``): with local data (``task_data`` DIR), a generated YAML
  of the same name ``include:``s lm-eval's installed built-in YAML, so its prompt, choices,
  ``process_docs`` and metrics stay lm-eval's, and swaps only the data for local jsonl
  files. Without ``task_data`` the built-in task reads the Hugging Face hub; when the hub is
  switched off (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``) the local copies under
  ``harness.paths.data_dir()/lm_eval`` are used if they are there.
- Generated text-to-text tasks (``harness_translate``, ``harness_summarize``; see
  ``text_tasks.py``): a generated YAML ``include:``s the shipped template and points at
  held-out pairs written into the cache.
- Any other lm-eval task name is passed to lm-eval as it is.

The generated YAMLs go into a folder given by the caller (a temporary one per evaluation)
that becomes ``TaskManager(include_path=...)``; lm-eval's own index (seconds to build)
is loaded only when a name is neither a probe nor a standard task.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import paths
import harness.evaluation.probes as probes
import harness.evaluation.text_tasks as text_tasks

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass(frozen=True)
class StandardTask:
    builtin_yaml: str  # relative to lm_eval/tasks/
    files: dict[str, str]  # split → file name in the task-data folder


STANDARD_TASKS: dict[str, StandardTask] = {
    "lambada_openai": StandardTask("lambada/lambada_openai.yaml", {"test": "lambada_openai_test.jsonl"}),
    "hellaswag": StandardTask("hellaswag/hellaswag.yaml", {"validation": "hellaswag_validation.jsonl"}),
    "piqa": StandardTask("piqa/piqa.yaml", {"validation": "piqa_validation.jsonl"}),
    "arc_easy": StandardTask("arc/arc_easy.yaml", {"test": "arc_easy_test.jsonl"}),
    "arc_challenge": StandardTask("arc/arc_challenge.yaml", {"test": "arc_challenge_test.jsonl"}),
    "winogrande": StandardTask("winogrande/default.yaml", {"validation": "winogrande_xl_validation.jsonl"}),
    "boolq": StandardTask("super_glue/boolq/default.yaml", {"validation": "boolq_validation.jsonl"}),
    "openbookqa": StandardTask("openbookqa/openbookqa.yaml", {"test": "openbookqa_main_test.jsonl"}),
    # generation tasks (generate_until), scored by lm-eval's own metrics: BLEU / chrF / TER, ROUGE
    **{
        f"wmt16-{pair}": StandardTask(f"translation/wmt16_{pair}.yaml", {"test": f"wmt16_{data}_test.jsonl"})
        for pair, data in (("de-en", "de-en"), ("en-de", "de-en"), ("ro-en", "ro-en"), ("en-ro", "ro-en"))
    },
    "truthfulqa_gen": StandardTask("truthfulqa/truthfulqa_gen.yaml", {"validation": "truthfulqa_generation_validation.jsonl"}),
    "wikitext": StandardTask(
        "wikitext/wikitext.yaml",
        {
            "validation": "wikitext2_document_level_validation.jsonl",
            "test": "wikitext2_document_level_test.jsonl",
        },
    ),
}


def parse_task_names(tasks: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` → names in order, duplicates dropped, ``harness_probes`` expanded."""
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names: list[str] = []
    for item in items:
        name = str(item).strip()
        expanded = probes.probe_task_names() if name == probes.PROBES_ALIAS else [name] if name else []
        names += [n for n in expanded if n not in names]
    if not names:
        raise ValueError("no evaluation task given; name at least one, e.g. --tasks wikitext,lambada_openai.")
    return names


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def builtin_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def lm_eval_task_names() -> tuple[str, ...]:
    """Every task, group and tag name lm-eval knows (builds its index once: a few seconds)."""
    from lm_eval.tasks import TaskManager

    return tuple(TaskManager().all_tasks)


def check_known(names: list[str]) -> bool:
    """Raise for a name no one knows (listing close matches); True if lm-eval's built-ins are needed."""
    others = [n for n in names if n not in STANDARD_TASKS and not probes.is_probe(n) and not text_tasks.is_text_task(n)]
    if not others:
        return False
    known = lm_eval_task_names()
    for name in others:
        if name not in known:
            candidates = list(dict.fromkeys([*probes.probe_task_names(), probes.PROBES_ALIAS, *text_tasks.TEXT_TASKS,
                                             *STANDARD_TASKS, *known]))
            close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "see `lm_eval ls tasks` for lm-eval's names."
            raise ValueError(f"unknown evaluation task {name!r}; {hint}")
    return True


def local_data_dir(name: str, task_data: str | os.PathLike | None) -> Path | None:
    """The folder to read a standard task's data from, or None to use the hub."""
    task = STANDARD_TASKS[name]
    if task_data is not None:
        folder = Path(task_data)
        missing = [f for f in task.files.values() if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"task {name} needs {', '.join(missing)} in --task-data {folder}; "
                f"point --task-data at a folder with lm-eval's jsonl copies (e.g. ../shared/data/lm_eval)."
            )
        return folder
    if not hub_offline():
        return None
    fallback = paths.data_dir() / "lm_eval"
    if all((fallback / f).is_file() for f in task.files.values()):
        return fallback
    raise ValueError(
        f"task {name} reads {', '.join(task.files.values())} from the Hugging Face hub, which is switched off here "
        f"({'/'.join(OFFLINE_VARIABLES)}); pass --task-data DIR with local copies (e.g. --task-data ../shared/data/lm_eval)."
    )


def standard_task_yaml(name: str, folder: Path) -> dict:
    """A task of the built-in's name and prompt, reading the local jsonl files in ``folder``."""
    task = STANDARD_TASKS[name]
    files = {split: str((folder / file).resolve()) for split, file in task.files.items()}
    return {
        "include": str(builtin_tasks_dir() / task.builtin_yaml),
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files},
        "training_split": None,
        "fewshot_split": None,
        "validation_split": "validation" if "validation" in files else None,
        "test_split": "test" if "test" in files else None,
    }


def probe_task_yaml(name: str, data_file: Path) -> dict:
    return {
        "include": str(probes.template_path(name)),
        "task": name,
        "dataset_kwargs": {"data_files": {"test": str(Path(data_file).resolve())}},
        **probes.task_overrides(name),
    }


def write_task_yamls(
    names: list[str],
    include_dir: str | os.PathLike,
    *,
    task_data: str | os.PathLike | None = None,
    probe_files: dict[str, Path] | None = None,
) -> bool:
    """Write the YAMLs the names need into ``include_dir``; return whether lm-eval's built-ins are needed."""
    include_dir = Path(include_dir)
    include_dir.mkdir(parents=True, exist_ok=True)
    needs_builtins = check_known(names)
    for name in names:
        if probes.is_probe(name):
            if not probe_files or name not in probe_files:
                raise ValueError(f"probe task {name} has no data; it needs the run's synthetic generator.")
            config = probe_task_yaml(name, probe_files[name])
        elif text_tasks.is_text_task(name):
            config = text_tasks.text_task_yaml(name, text_tasks.write_text_task_file(name))
        elif name in STANDARD_TASKS:
            folder = local_data_dir(name, task_data)
            if folder is None:
                needs_builtins = True
                continue
            config = standard_task_yaml(name, folder)
        else:
            continue
        (include_dir / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return needs_builtins


def task_manager(include_dir: str | os.PathLike, include_defaults: bool):
    """An lm-eval TaskManager over the generated YAMLs (and the built-ins when needed)."""
    from lm_eval.tasks import TaskManager

    class _TaskManager(TaskManager):
        def load(self, task_list):  # a data-loading failure becomes one clear sentence
            try:
                return super().load(task_list)
            except Exception as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ValueError(
                    f"could not load the data of task(s) {', '.join(map(str, task_list))} ({first}); "
                    f"offline, pass --task-data DIR with local copies (e.g. ../shared/data/lm_eval)."
                ) from error

    return _TaskManager(include_path=str(include_dir), include_defaults=include_defaults)
