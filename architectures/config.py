"""The model configuration: one typed dataclass for every architecture.

Components are chosen by name (``norm_placement``, ``attention_pattern``, ``ffn``,
``activation``) so a JSON or YAML file can describe any model the registry can build.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
from dataclasses import dataclass, field, fields
from typing import Any

NORM_PLACEMENTS = ("pre", "post")
ATTENTION_KINDS = ("dense", "banded")
FFN_KINDS = ("mlp", "moe")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


def default_window(context: int) -> int:
    """Banded-attention window when none is given: context/8, at least 32 (256 at context 2048).

    GPT-3 does not publish its band width; GPT-Neo's open replication uses 256 at context 2048.
    """
    return min(context, max(32, context // 8))


@dataclass
class ModelConfig:
    """Everything needed to build a model; round-trips through ``to_dict``/``from_dict``.

    Sizes: ``d_ff`` defaults to 4·d_model; ``d_head`` to d_model/n_head (GPT-3 13B is the one
    preset where n_head·d_head ≠ d_model, as in the paper's Table 2.1).
    """

    arch: str = "gpt2"
    size: str | None = None
    vocab_size: int = 50257
    context: int = 1024
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    d_head: int | None = None
    d_ff: int | None = None
    activation: str = "gelu_tanh"
    bias: bool = True
    dropout: float = 0.0
    # "pre": x + f(LN(x)) with a final LayerNorm (GPT-2/3); "post": LN(x + f(x)) (GPT-1).
    norm_placement: str = "pre"
    final_norm: bool = True
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    # GPT-2: residual output projections scaled at init by 1/sqrt(2·n_layer).
    residual_init_scaling: bool = True
    tie_embeddings: bool = True
    # attention kind per layer, repeated over the layers: ("dense", "banded") alternates.
    attention_pattern: tuple[str, ...] = ("dense",)
    window: int | None = None
    # query block of the chunked banded kernel; it executes window + block keys per query.
    banded_block: int | None = None
    ffn: str = "mlp"
    n_experts: int = 8
    top_k: int = 2
    expert_d_ff: int | None = None
    capacity_factor: float | None = 1.25
    moe_balance_weight: float = 0.01
    moe_z_weight: float = 1e-3
    # image prefix (ViT-style patches); disabled when patch_size is None.
    patch_size: int | None = None
    image_channels: int = 3
    image_size: int = 32
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.attention_pattern = tuple(self.attention_pattern)
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if self.d_head is None and self.n_head > 0 and self.d_model % self.n_head == 0:
            self.d_head = self.d_model // self.n_head
        if "banded" in self.attention_pattern and self.window is None:
            self.window = default_window(self.context)
        if self.window is not None and self.banded_block is None:
            self.banded_block = max(1, min(self.window, 64))
        if self.ffn == "moe" and self.expert_d_ff is None and self.top_k > 0:
            # active FFN FLOPs per token equal the dense FFN's: k experts of d_ff/k each.
            self.expert_d_ff = max(1, self.d_ff // self.top_k)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with one sentence for the first thing that is wrong."""
        for name in ("vocab_size", "context", "n_layer", "d_model", "n_head", "d_ff"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.d_head is None:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}), or give d_head explicitly."
            )
        if self.d_head < 1:
            raise ValueError(f"d_head must be a positive integer, got {self.d_head}.")
        for name in ("init_std", "layer_norm_eps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}.")
        for name in ("moe_balance_weight", "moe_z_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value}.")
        for name in ("image_channels", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.norm_placement not in NORM_PLACEMENTS:
            raise ValueError(f"norm_placement must be one of {NORM_PLACEMENTS}, got {self.norm_placement!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}.")
        if not self.attention_pattern:
            raise ValueError("attention_pattern must name at least one attention kind, e.g. ['dense'].")
        for kind in self.attention_pattern:
            if kind not in ATTENTION_KINDS:
                raise ValueError(f"attention kind {kind!r} is unknown; known kinds: {', '.join(ATTENTION_KINDS)}.")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be at least 1 token, got {self.window}.")
        if self.banded_block is not None and self.banded_block < 1:
            raise ValueError(f"banded_block must be at least 1, got {self.banded_block}.")
        if self.ffn not in FFN_KINDS:
            raise ValueError(f"ffn must be one of {FFN_KINDS}, got {self.ffn!r}.")
        if self.ffn == "moe":
            if self.n_experts < 1:
                raise ValueError(f"n_experts must be at least 1, got {self.n_experts}.")
            if not 1 <= self.top_k <= self.n_experts:
                raise ValueError(f"top_k must be between 1 and n_experts ({self.n_experts}), got {self.top_k}.")
            if self.expert_d_ff is not None and self.expert_d_ff < 1:
                raise ValueError(f"expert_d_ff must be a positive integer, got {self.expert_d_ff}.")
            if self.capacity_factor is not None and self.capacity_factor <= 0:
                raise ValueError(f"capacity_factor must be positive or null (dropless), got {self.capacity_factor}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.patch_size is not None:
            if self.patch_size < 1 or self.image_size % self.patch_size:
                raise ValueError(
                    f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})."
                )
            if self.n_image_patches >= self.context:
                raise ValueError(
                    f"an image of {self.n_image_patches} patches leaves no room for text in a context of {self.context}."
                )

    # ---- derived quantities ------------------------------------------------------------
    @property
    def d_attn(self) -> int:
        """Width of the attention projections: n_head · d_head."""
        return self.n_head * self.d_head

    @property
    def n_image_patches(self) -> int:
        if self.patch_size is None:
            return 0
        return (self.image_size // self.patch_size) ** 2

    def check_seq_len(self, seq_len: int | None) -> int:
        """The sequence length to use: ``seq_len``, or the context when None; refuses one
        that is not a positive whole number or is longer than the context."""
        if seq_len is None:
            return self.context
        try:
            whole = None if isinstance(seq_len, bool) else operator.index(seq_len)  # numpy integers too
        except TypeError:
            whole = None
        if whole is None or whole < 1:
            raise ValueError(f"seq_len must be a positive whole number, got {seq_len!r}.")
        seq_len = whole
        if seq_len > self.context:
            model = " ".join(str(part) for part in (self.arch, self.size) if part)
            raise ValueError(
                f"seq_len {seq_len} is longer than the context of {self.context} ({model}); use at most {self.context}."
            )
        return seq_len

    def layer_attention(self, layer: int) -> str:
        """Attention kind of layer ``layer`` (0-based): the pattern repeated over the layers."""
        return self.attention_pattern[layer % len(self.attention_pattern)]

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["attention_pattern"] = list(self.attention_pattern)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s) {unknown}; known fields: {sorted(known)}.")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "ModelConfig":
        import yaml

        return cls.from_dict(yaml.safe_load(text))

    def replace(self, **overrides: Any) -> "ModelConfig":
        """A copy with fields overridden; derived defaults (window, d_ff...) are recomputed.

        A derived field still holding the value ``__post_init__`` derived (d_ff = 4·d_model,
        d_head, window, banded_block, expert_d_ff) is derived again from the new fields unless
        it is overridden itself; one that differs from its default was set and is kept.
        """
        data = self.to_dict()
        derived = {
            "d_ff": 4 * self.d_model,
            "d_head": self.d_model // self.n_head if self.d_model % self.n_head == 0 else None,
            "window": default_window(self.context) if "banded" in self.attention_pattern else None,
            "banded_block": max(1, min(self.window, 64)) if self.window is not None else None,
            "expert_d_ff": max(1, self.d_ff // self.top_k) if self.ffn == "moe" and self.top_k > 0 else None,
        }
        for name, default in derived.items():
            if name not in overrides and data[name] == default:
                data[name] = None
        data.update(overrides)
        return ModelConfig.from_dict(data)


def field_types() -> dict[str, Any]:
    """Field name → declared type string, used to parse ``--set key=value`` overrides."""
    return {f.name: f.type for f in fields(ModelConfig)}


def parse_override(key: str, value: str) -> Any:
    """Parse one ``key=value`` override for a ModelConfig field (ints, floats, bools, lists, null)."""
    types = field_types()
    if key not in types:
        raise ValueError(f"unknown model config field {key!r}; known fields: {', '.join(sorted(types))}.")
    declared = str(types[key])
    text = value.strip()
    if text.lower() in ("none", "null") and "None" in declared:
        return None
    try:
        if declared.startswith("int"):
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if declared.startswith("float"):
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
        if declared.startswith("bool"):
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError
    except ValueError:
        kind = declared.split(" ")[0].split("|")[0]
        raise ValueError(f"--set {key}={value}: {key} needs a value of type {kind}, got {value!r}.") from None
    if declared.startswith("tuple"):
        return tuple(part.strip() for part in text.strip("[]()").split(",") if part.strip())
    return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (the CLI's ``--set``) → typed ModelConfig overrides."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set needs KEY=VALUE (e.g. --set window=64), got {item!r}.")
        overrides[key.strip()] = parse_override(key.strip(), value)
    return overrides
