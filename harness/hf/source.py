"""A Hugging Face checkpoint on disk: where it is, its config, its weights and their hashes.

A source is a directory written by ``save_pretrained`` (``config.json`` plus
``model.safetensors``, sharded ``model-0000x-of-0000n.safetensors`` with their index, or
``pytorch_model.bin``, and the tokenizer files) or a hub name ``hf:NAME[@REVISION]``,
resolved through the local Hugging Face cache (``huggingface_hub.snapshot_download``;
``local_files_only`` when ``HF_HUB_OFFLINE=1``, so nothing is downloaded offline).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

HUB_PREFIX = "hf:"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
# files fetched from the hub for an import: config, weights, tokenizer
HUB_PATTERNS = [
    "config.json", "*.safetensors", SAFETENSORS_INDEX, "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.json", "merges.txt", "generation_config.json",
]
BIN_PATTERNS = ["pytorch_model*.bin", BIN_INDEX]


@dataclass
class HFCheckpoint:
    """A resolved checkpoint: its folder, ``config.json`` as a dict, weight files and hub origin."""

    directory: Path
    config: dict[str, Any]
    weight_files: list[Path]
    source: str  # as the user gave it
    hub: dict[str, Any] = field(default_factory=dict)  # repo_id, revision, commit for hf: names

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type"))

    def weight_hashes(self) -> list[dict[str, str]]:
        """[{file, sha256}] for every weight file, in load order."""
        return [{"file": path.name, "sha256": sha256_file(path)} for path in self.weight_files]

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of every weight file, on the CPU, in its stored dtype."""
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for path in self.weight_files:
            try:
                loaded = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(
                    path, map_location="cpu", weights_only=True)
            except Exception as error:  # a truncated or foreign file: safetensors and torch raise their own types
                raise ValueError(f"{path} cannot be read as weights ({type(error).__name__}: {error}).") from None
            state.update(loaded)
        return state


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint folder, safetensors preferred; sharded via the index."""
    for single, index in ((SAFETENSORS_NAME, SAFETENSORS_INDEX), (BIN_NAME, BIN_INDEX)):
        if (directory / single).is_file():
            return [directory / single]
        if (directory / index).is_file():
            weight_map = json.loads((directory / index).read_text()).get("weight_map", {})
            files = [directory / name for name in dict.fromkeys(weight_map.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{directory / index} names shard(s) {', '.join(missing)} that are not there.")
            return files
    raise FileNotFoundError(
        f"{directory} has no {SAFETENSORS_NAME}, {BIN_NAME} or sharded index; pass a folder written by save_pretrained."
    )


def _hub_snapshot(name: str, cache_dir: str | os.PathLike | None) -> tuple[Path, dict[str, Any]]:
    """``hf:NAME[@REVISION]`` → the snapshot folder in the local HF cache (downloaded only when online)."""
    repo_id, _, revision = name.partition("@")
    if not repo_id:
        raise ValueError(f"{HUB_PREFIX}{name} names no repository; write e.g. hf:gpt2 or hf:EleutherAI/gpt-neo-125m.")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id, revision=revision or None, cache_dir=cache_dir, local_files_only=offline, allow_patterns=HUB_PATTERNS
        )
        if not offline and not any(Path(folder).glob("*.safetensors")):  # an older repo with .bin weights only
            folder = snapshot_download(
                repo_id, revision=revision or None, cache_dir=cache_dir, allow_patterns=HUB_PATTERNS + BIN_PATTERNS
            )
    except Exception as error:  # LocalEntryNotFoundError, RepositoryNotFoundError, network errors ...
        if offline:
            raise ValueError(
                f"{HUB_PREFIX}{name} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it; "
                f"download it once with network, or pass a folder written by save_pretrained."
            ) from None
        raise ValueError(f"cannot fetch {HUB_PREFIX}{name} from the Hugging Face hub ({type(error).__name__}: {error}).") from None
    folder = Path(folder)
    return folder, {"repo_id": repo_id, "revision": revision or "main", "commit": folder.name}


def resolve_checkpoint(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> HFCheckpoint:
    """A folder or ``hf:NAME[@REVISION]`` → ``HFCheckpoint`` (nothing loaded but config.json)."""
    text = str(source)
    hub: dict[str, Any] = {}
    if text.startswith(HUB_PREFIX):
        directory, hub = _hub_snapshot(text[len(HUB_PREFIX):], cache_dir)
    else:
        directory = Path(text)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"{text} is not a folder; pass a folder written by save_pretrained or a hub name such as hf:gpt2."
            )
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json; pass a folder written by save_pretrained.")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}).") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ValueError(f"{config_path} has no model_type; {directory} is not a Hugging Face checkpoint (save_pretrained).")
    return HFCheckpoint(directory, config, _weight_files(directory), text, hub)
