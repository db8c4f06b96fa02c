"""Config mapping between Hugging Face model families and ``ModelConfig``, both ways.

| HF ``model_type`` | HF class               | harness arch | what differs                                   |
| ---               | ---                    | ---          | ---                                            |
| ``gpt2``          | GPT2LMHeadModel        | gpt2         | Conv1D matrices are stored transposed          |
| ``openai-gpt``    | OpenAIGPTLMHeadModel   | gpt1         | Conv1D transposed; ``afn="gelu"`` is tanh GELU |
| ``gpt_neo``       | GPTNeoForCausalLM      | gpt3         | no score scaling, no q/k/v biases; "local"     |
|                   |                        |              | layers = our banded layers (i−W < j ≤ i)       |

Anything that would change the function computed and has no counterpart here (GPT-2's
``scale_attn_by_inverse_layer_idx``, ``reorder_and_upcast_attn``, cross-attention, untied
heads, other activations; MoE, image prefixes, d_head·n_head ≠ d_model on export) is
refused with a ``ValueError`` sentence, never silently dropped.
"""

from __future__ import annotations

from typing import Any

from architectures.config import ModelConfig

FAMILIES = {"gpt2": "gpt2", "openai-gpt": "gpt1", "gpt_neo": "gpt3"}  # HF model_type → harness arch
HF_CLASSES = {"gpt2": "GPT2LMHeadModel", "openai-gpt": "OpenAIGPTLMHeadModel", "gpt_neo": "GPTNeoForCausalLM"}
# HF activation name → ours (GPT-2 / GPT-Neo ``activation_function``)
ACTIVATIONS_IN = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
ACTIVATIONS_OUT = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
# OpenAI GPT's ``afn``: its "gelu" is the tanh approximation (transformers' gelu_new)
OPENAI_AFN_IN = {"gelu": "gelu_tanh", "relu": "relu"}
OPENAI_AFN_OUT = {"gelu_tanh": "gelu", "relu": "relu"}
NEO_KINDS_IN = {"global": "dense", "local": "banded"}
NEO_KINDS_OUT = {"dense": "global", "banded": "local"}


def _refuse_if(condition: bool, message: str) -> None:
    if condition:
        raise ValueError(message)


def _activation(name: Any, table: dict[str, str], field: str, family: str) -> str:
    _refuse_if(name not in table, f"{family} {field}={name!r} has no counterpart here; mappable: {', '.join(table)}.")
    return table[name]


def shortest_period(kinds: list[str]) -> tuple[str, ...]:
    """The shortest pattern that, repeated over the layers, gives ``kinds`` (our attention_pattern)."""
    for period in range(1, len(kinds) + 1):
        if all(kinds[i] == kinds[i % period] for i in range(len(kinds))):
            return tuple(kinds[:period])
    return tuple(kinds)


def neo_layer_kinds(hf: dict[str, Any]) -> list[str]:
    """GPT-Neo's per-layer "global"/"local" list, expanded from ``attention_types`` [[kinds, repeat], ...]."""
    if hf.get("attention_types"):
        layers = [kind for kinds, repeat in hf["attention_types"] for _ in range(int(repeat)) for kind in kinds]
    else:
        layers = list(hf.get("attention_layers") or [])
    _refuse_if(len(layers) != int(hf["num_layers"]),
               f"GPT-Neo attention_types give {len(layers)} layer kinds for num_layers={hf['num_layers']}.")
    unknown = sorted(set(layers) - set(NEO_KINDS_IN))
    _refuse_if(bool(unknown), f"GPT-Neo attention kind(s) {unknown} have no counterpart; only global and local map.")
    return layers


def _common_refusals(hf: dict[str, Any], family: str) -> None:
    _refuse_if(hf.get("tie_word_embeddings", True) is False,
               f"this {family} checkpoint has an untied LM head (tie_word_embeddings=false); harness models tie it.")
    _refuse_if(bool(hf.get("add_cross_attention")), f"this {family} checkpoint has cross-attention; harness models do not.")


def config_from_hf(hf: dict[str, Any], label: str | None = None) -> ModelConfig:
    """A Hugging Face ``config.json`` (as a dict) → the equivalent ``ModelConfig``; refuses what cannot map."""
    try:
        return _config_from_hf(hf, label)
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"config.json of this {hf.get('model_type')} checkpoint lacks or garbles a field it needs ({error}); "
            f"save it again with save_pretrained."
        ) from None


def _config_from_hf(hf: dict[str, Any], label: str | None) -> ModelConfig:
    model_type = hf.get("model_type")
    _refuse_if(model_type not in FAMILIES,
               f"model_type {model_type!r} cannot be imported; supported: {', '.join(FAMILIES)} (GPT-2, OpenAI GPT, GPT-Neo).")
    _common_refusals(hf, model_type)
    common = dict(arch=FAMILIES[model_type], size=label, vocab_size=int(hf["vocab_size"]), bias=True, tie_embeddings=True)
    if model_type == "gpt2":
        _refuse_if(hf.get("scale_attn_weights", True) is False, "GPT-2 scale_attn_weights=false (unscaled scores) is not supported.")
        _refuse_if(bool(hf.get("scale_attn_by_inverse_layer_idx")),
                   "GPT-2 scale_attn_by_inverse_layer_idx=true scales scores by 1/(layer+1), which harness attention does not.")
        _refuse_if(bool(hf.get("reorder_and_upcast_attn")),
                   "GPT-2 reorder_and_upcast_attn=true changes the attention arithmetic, which harness attention does not reproduce.")
        return ModelConfig(
            **common, context=int(hf["n_positions"]), n_layer=int(hf["n_layer"]), d_model=int(hf["n_embd"]),
            n_head=int(hf["n_head"]), d_ff=int(hf.get("n_inner") or 4 * int(hf["n_embd"])),
            activation=_activation(hf.get("activation_function", "gelu_new"), ACTIVATIONS_IN, "activation_function", "GPT-2"),
            dropout=float(hf.get("resid_pdrop", 0.0)), norm_placement="pre", final_norm=True,
            layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), init_std=float(hf.get("initializer_range", 0.02)),
            residual_init_scaling=True, attention_pattern=("dense",),
        )
    if model_type == "openai-gpt":
        return ModelConfig(
            **common, context=int(hf["n_positions"]), n_layer=int(hf["n_layer"]), d_model=int(hf["n_embd"]),
            n_head=int(hf["n_head"]), d_ff=4 * int(hf["n_embd"]),
            activation=_activation(hf.get("afn", "gelu"), OPENAI_AFN_IN, "afn", "OpenAI GPT"),
            dropout=float(hf.get("resid_pdrop", 0.0)), norm_placement="post", final_norm=False,
            layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), init_std=float(hf.get("initializer_range", 0.02)),
            residual_init_scaling=False, attention_pattern=("dense",),
        )
    kinds = [NEO_KINDS_IN[k] for k in neo_layer_kinds(hf)]
    return ModelConfig(
        **common, context=int(hf["max_position_embeddings"]), n_layer=int(hf["num_layers"]),
        d_model=int(hf["hidden_size"]), n_head=int(hf["num_heads"]),
        d_ff=int(hf.get("intermediate_size") or 4 * int(hf["hidden_size"])),
        activation=_activation(hf.get("activation_function", "gelu_new"), ACTIVATIONS_IN, "activation_function", "GPT-Neo"),
        dropout=float(hf.get("resid_dropout", 0.0)), norm_placement="pre", final_norm=True,
        layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), init_std=float(hf.get("initializer_range", 0.02)),
        residual_init_scaling=True, attention_pattern=shortest_period(kinds),
        window=int(hf["window_size"]) if "banded" in kinds else None,
    )


def export_family(config: ModelConfig) -> str:
    """The HF ``model_type`` a config exports to, decided by its structure; refuses what none can hold."""
    name = f"{config.arch}" + (f" {config.size}" if config.size else "")
    _refuse_if(config.ffn != "mlp", f"{name} has a mixture-of-experts FFN, which GPT-2, OpenAI GPT and GPT-Neo cannot hold.")
    _refuse_if(config.patch_size is not None, f"{name} has an image-patch prefix, which none of the HF text models can hold.")
    _refuse_if(not config.tie_embeddings, f"{name} has an untied LM head; the exported families tie it to the embedding.")
    _refuse_if(config.d_attn != config.d_model,
               f"{name} has n_head·d_head = {config.d_attn} ≠ d_model = {config.d_model}, which the HF families require equal.")
    kinds = [config.layer_attention(layer) for layer in range(config.n_layer)]
    if config.norm_placement == "post":
        _refuse_if(config.final_norm, f"{name} is post-LN with a final LayerNorm, which OpenAI GPT does not have.")
        _refuse_if("banded" in kinds, f"{name} is post-LN with banded layers; OpenAI GPT has dense attention only.")
        _refuse_if(config.d_ff != 4 * config.d_model, f"{name} has d_ff = {config.d_ff}; OpenAI GPT fixes it at 4·d_model.")
        _refuse_if(config.activation not in OPENAI_AFN_OUT,
                   f"{name} uses {config.activation}; OpenAI GPT maps only {', '.join(OPENAI_AFN_OUT)}.")
        return "openai-gpt"
    _refuse_if(not config.final_norm, f"{name} is pre-LN without a final LayerNorm, which GPT-2 and GPT-Neo both have.")
    _refuse_if(config.activation not in ACTIVATIONS_OUT, f"{name} uses {config.activation}, which has no HF counterpart.")
    return "gpt_neo" if "banded" in kinds else "gpt2"


def config_to_hf(config: ModelConfig, eos_id: int | None = None) -> dict[str, Any]:
    """``ModelConfig`` → a ``config.json`` dict ``transformers`` loads (family from ``export_family``)."""
    family = export_family(config)
    common = {
        "architectures": [HF_CLASSES[family]], "model_type": family, "vocab_size": config.vocab_size,
        "initializer_range": config.init_std, "layer_norm_epsilon": config.layer_norm_eps,
        "tie_word_embeddings": True, "bos_token_id": eos_id, "eos_token_id": eos_id,
    }
    drop = config.dropout
    if family == "openai-gpt":
        return {**common, "n_positions": config.context, "n_embd": config.d_model, "n_layer": config.n_layer,
                "n_head": config.n_head, "afn": OPENAI_AFN_OUT[config.activation],
                "resid_pdrop": drop, "embd_pdrop": drop, "attn_pdrop": drop}
    if family == "gpt2":
        return {**common, "n_positions": config.context, "n_embd": config.d_model, "n_layer": config.n_layer,
                "n_head": config.n_head, "n_inner": config.d_ff, "activation_function": ACTIVATIONS_OUT[config.activation],
                "resid_pdrop": drop, "embd_pdrop": drop, "attn_pdrop": drop, "scale_attn_weights": True,
                "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False}
    kinds = [NEO_KINDS_OUT[config.layer_attention(layer)] for layer in range(config.n_layer)]
    return {**common, "max_position_embeddings": config.context, "hidden_size": config.d_model,
            "num_layers": config.n_layer, "num_heads": config.n_head, "intermediate_size": config.d_ff,
            "attention_types": [[[kind], 1] for kind in kinds], "window_size": config.window or config.context,
            "activation_function": ACTIVATIONS_OUT[config.activation],
            "resid_dropout": drop, "embed_dropout": drop, "attention_dropout": drop}
