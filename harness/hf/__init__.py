"""Hugging Face checkpoints in and out: GPT-2, OpenAI GPT (GPT-1) and GPT-Neo (GPT-3-style).

    from harness.hf import import_checkpoint, export_run
    import_checkpoint("path/to/save_pretrained_dir", "results/gpt2-hf")   # or "hf:gpt2" from the local HF cache
    export_run("results/gpt2-hf", "exported/gpt2")                      # AutoModelForCausalLM loads it

Modules: ``source`` (resolve a folder or hub name, read config and weights, sha256),
``families`` (config mapping and refusals), ``weights`` (state-dict mapping),
``importer`` (→ a run directory), ``exporter`` (→ a HF directory), ``parity`` (logit
comparison against ``transformers``).
"""

from harness.hf.exporter import Export, export_run
from harness.hf.families import config_from_hf, config_to_hf, export_family
from harness.hf.importer import import_checkpoint
from harness.hf.source import HFCheckpoint, resolve_checkpoint

__all__ = [
    "Export",
    "HFCheckpoint",
    "config_from_hf",
    "config_to_hf",
    "export_family",
    "export_run",
    "import_checkpoint",
    "resolve_checkpoint",
]
