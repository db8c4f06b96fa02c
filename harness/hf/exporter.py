"""Export a harness run as a Hugging Face checkpoint directory ``transformers`` loads.

``export_run(run, out)`` writes ``config.json`` (family chosen by structure: post-LN dense →
OpenAI GPT, pre-LN dense → GPT-2, pre-LN with banded layers → GPT-Neo; see
``harness.hf.families.export_family``), ``model.safetensors`` (fp32, tied head omitted as
``save_pretrained`` does) and the tokenizer (``tokenizer.json`` + ``tokenizer_config.json``)
when the run has one in that form. ``AutoModelForCausalLM.from_pretrained(out)`` then gives
the run's logits (tested to 1e-4 in fp32).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.hf.families import HF_CLASSES, config_to_hf, export_family
from harness.hf.weights import state_to_hf
from harness.io import write_json_atomic


@dataclass
class Export:
    path: Path
    model_type: str  # HF model_type written
    hf_class: str
    notes: list[str] = field(default_factory=list)


def _export_tokenizer(tokenizer, out: Path, context: int) -> list[str]:
    """Write the tokenizer files transformers reads; return notes on what could not be written."""
    from harness.data.tokenizer import EOT_TEXT, BPETokenizer, ImportedTokenizer

    if isinstance(tokenizer, ImportedTokenizer):
        special = dict(tokenizer.special_tokens)
        notes = []
    elif isinstance(tokenizer, BPETokenizer):
        special = {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT}
        notes = [f"the harness BPE encodes the text {EOT_TEXT!r} as ordinary text; transformers reads it as the eos token."]
    else:
        return [f"tokenizer {tokenizer.name!r} has no tokenizer.json form; no tokenizer files were written."]
    tokenizer._tok.save(str(out / "tokenizer.json"))
    write_json_atomic(out / "special_tokens_map.json", special)
    write_json_atomic(out / "tokenizer_config.json",
                      {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context, **special})
    return notes


def export_run(run: str | os.PathLike, out: str | os.PathLike, *, force: bool = False) -> Export:
    """Write run ``run`` (folder or run id) as a Hugging Face directory ``out``; refuses what cannot map."""
    from safetensors.torch import save_file

    from harness.runs.run_dir import load_run_model

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} already exists and is not empty; choose another --out or pass --force to replace it.")
    model, tokenizer, record = load_run_model(run)
    config = model.config
    family = export_family(config)  # refuses before anything is written
    eos_id = int(tokenizer.eot_id) if tokenizer is not None else None
    hf_config = config_to_hf(config, eos_id=eos_id)
    hf_config["harness_export"] = {"run_id": record.get("run_id"), "arch": config.arch, "git_commit": record.get("git_commit")}
    state = state_to_hf(family, config, model.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_json_atomic(tmp / "config.json", hf_config)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        notes = _export_tokenizer(tokenizer, tmp, config.context)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Export(out, family, HF_CLASSES[family], notes)
