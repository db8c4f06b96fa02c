"""Weight mapping between Hugging Face state dicts and the harness ``GPT``'s, both ways.

Harness names: ``embed.token``, ``embed.position``, ``blocks.{i}.ln_1``, ``.attn.qkv``
(rows q | k | v, heads contiguous), ``.attn.proj``, ``.ln_2``, ``.ffn.fc``, ``.ffn.proj``,
``ln_f``, ``lm_head`` (tied to ``embed.token``); ``nn.Linear`` weights are [out, in].

- GPT-2 / OpenAI GPT store ``Conv1D`` weights as [in, out]: transposed both ways.
- GPT-Neo has separate bias-free q/k/v projections and does not divide scores by √d_head:
  importing folds √d_head into the query rows and sets the q/k/v biases to zero; exporting
  divides it out again, drops the key bias (it adds q·b_k to every score of a query, which
  softmax ignores) and folds the value bias into the output bias (b_out += W_out·b_v, as
  attention weights sum to one). A non-zero query bias cannot be expressed and is refused.

Every HF tensor must be consumed on import (mask buffers aside), so an unexpected weight
(an extra head, cross-attention) is refused rather than dropped.
"""

from __future__ import annotations

import math
import re

import torch

from architectures.config import ModelConfig

# (our suffix, HF suffix, Conv1D-transposed) per block, for the families stored that way
CONV1D_BLOCK = [
    ("ln_1.weight", "ln_1.weight", False), ("ln_1.bias", "ln_1.bias", False),
    ("attn.qkv.weight", "attn.c_attn.weight", True), ("attn.qkv.bias", "attn.c_attn.bias", False),
    ("attn.proj.weight", "attn.c_proj.weight", True), ("attn.proj.bias", "attn.c_proj.bias", False),
    ("ln_2.weight", "ln_2.weight", False), ("ln_2.bias", "ln_2.bias", False),
    ("ffn.fc.weight", "mlp.c_fc.weight", True), ("ffn.fc.bias", "mlp.c_fc.bias", False),
    ("ffn.proj.weight", "mlp.c_proj.weight", True), ("ffn.proj.bias", "mlp.c_proj.bias", False),
]
NEO_BLOCK = [
    ("ln_1.weight", "ln_1.weight"), ("ln_1.bias", "ln_1.bias"),
    ("attn.proj.weight", "attn.attention.out_proj.weight"), ("attn.proj.bias", "attn.attention.out_proj.bias"),
    ("ln_2.weight", "ln_2.weight"), ("ln_2.bias", "ln_2.bias"),
    ("ffn.fc.weight", "mlp.c_fc.weight"), ("ffn.fc.bias", "mlp.c_fc.bias"),
    ("ffn.proj.weight", "mlp.c_proj.weight"), ("ffn.proj.bias", "mlp.c_proj.bias"),
]
EMBEDDINGS = {
    "gpt2": ("wte.weight", "wpe.weight"),
    "gpt_neo": ("wte.weight", "wpe.weight"),
    "openai-gpt": ("tokens_embed.weight", "positions_embed.weight"),
}
# non-parameter buffers some checkpoints carry (causal masks, position ids)
IGNORED = re.compile(r"(^|\.)(attn\.bias|attn\.masked_bias|attention\.bias|attention\.masked_bias|position_ids)$")
NEO_Q = ("attn.attention.q_proj.weight", "attn.attention.k_proj.weight", "attn.attention.v_proj.weight")


def _pairs(family: str, n_layer: int) -> list[tuple[str, str, bool]]:
    """(our name, HF name without ``transformer.``, transposed) for every one-to-one tensor."""
    token, position = EMBEDDINGS[family]
    pairs = [("embed.token.weight", token, False), ("embed.position.weight", position, False)]
    for i in range(n_layer):
        if family == "gpt_neo":
            pairs += [(f"blocks.{i}.{ours}", f"h.{i}.{theirs}", False) for ours, theirs in NEO_BLOCK]
        else:
            pairs += [(f"blocks.{i}.{ours}", f"h.{i}.{theirs}", t) for ours, theirs, t in CONV1D_BLOCK]
    if family != "openai-gpt":
        pairs += [("ln_f.weight", "ln_f.weight", False), ("ln_f.bias", "ln_f.bias", False)]
    return pairs


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF keys without ``transformer.`` (base-model checkpoints such as the hub's gpt2 have none)."""
    return {key.removeprefix("transformer."): value for key, value in state.items()}


def state_from_hf(family: str, config: ModelConfig, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF state dict → harness ``GPT`` state dict (fp32); refuses untied heads and leftover tensors."""
    hf = _strip_prefix(hf_state)
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in hf:
            raise ValueError(f"the checkpoint has no tensor {key!r}, which a {family} model of this config needs.")
        used.add(key)
        return hf[key].to(torch.float32)

    ours = {}
    for our_name, hf_name, transposed in _pairs(family, config.n_layer):
        tensor = take(hf_name)
        ours[our_name] = tensor.t().contiguous() if transposed else tensor.clone()
    if family == "gpt_neo":
        scale = math.sqrt(config.d_head)  # GPT-Neo scores are q·k; ours are q·k/√d_head
        for i in range(config.n_layer):
            q, k, v = (take(f"h.{i}.{name}") for name in NEO_Q)
            ours[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q * scale, k, v])
            ours[f"blocks.{i}.attn.qkv.bias"] = torch.zeros(3 * config.d_attn)
    head = hf.get("lm_head.weight")
    if head is not None:
        used.add("lm_head.weight")
        if not torch.equal(head.to(torch.float32), ours["embed.token.weight"]):
            raise ValueError("the checkpoint's lm_head differs from its token embedding (an untied head); harness models tie them.")
    ours["lm_head.weight"] = ours["embed.token.weight"]
    leftover = sorted(key for key in hf if key not in used and not IGNORED.search(key))
    if leftover:
        shown = ", ".join(leftover[:5]) + (" ..." if len(leftover) > 5 else "")
        raise ValueError(f"{len(leftover)} tensor(s) of the checkpoint have no place in a harness {family} model: {shown}.")
    return ours


def _bias(state: dict[str, torch.Tensor], name: str, size: int) -> torch.Tensor:
    """A bias from our state, or zeros when the model was built with ``bias=False``."""
    return state[name] if name in state else torch.zeros(size)


def state_to_hf(family: str, config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Harness state dict → HF state dict (``transformer.`` keys, no ``lm_head``: it is tied)."""
    state = {key: value.detach().to(torch.float32).cpu() for key, value in state.items()}
    hf: dict[str, torch.Tensor] = {}
    for our_name, hf_name, transposed in _pairs(family, config.n_layer):
        if our_name in state:
            tensor = state[our_name]
        elif our_name.endswith(".bias"):
            tensor = torch.zeros(state[our_name.removesuffix(".bias") + ".weight"].shape[0])
        else:
            raise ValueError(f"the run's state dict has no {our_name!r}; it is not a harness GPT of this config.")
        hf["transformer." + hf_name] = (tensor.t() if transposed else tensor).contiguous().clone()
    if family == "gpt_neo":
        _neo_attention_to_hf(config, state, hf)
    return hf


def _neo_attention_to_hf(config: ModelConfig, state: dict[str, torch.Tensor], hf: dict[str, torch.Tensor]) -> None:
    d = config.d_attn
    scale = math.sqrt(config.d_head)
    for i in range(config.n_layer):
        weight = state[f"blocks.{i}.attn.qkv.weight"]
        bias = _bias(state, f"blocks.{i}.attn.qkv.bias", 3 * d)
        if bias[:d].abs().max() > 0:
            raise ValueError(
                f"layer {i} has a non-zero query bias (max |b_q| = {bias[:d].abs().max():.3g}); GPT-Neo has none and it "
                f"cannot be folded away exactly — train with --set bias=false to export a gpt3 as GPT-Neo."
            )
        prefix = f"transformer.h.{i}.attn.attention."
        hf[prefix + "q_proj.weight"] = (weight[:d] / scale).contiguous()
        hf[prefix + "k_proj.weight"] = weight[d : 2 * d].contiguous()  # the key bias only shifts each query's scores
        hf[prefix + "v_proj.weight"] = weight[2 * d :].contiguous()
        out_weight = hf[prefix + "out_proj.weight"]
        hf[prefix + "out_proj.bias"] = hf[prefix + "out_proj.bias"] + out_weight @ bias[2 * d :]
