"""AdamW's parameter groups, for every architecture and every way of training it.

The recipe (nanoGPT's, GPT-1's "L2 on all non bias or gain weights"): weight decay on every
matrix (linear weights, MoE expert stacks, LoRA adapters) and on the embeddings; none on
biases (MoE's stacked per-expert biases included) and LayerNorm gains and biases. Frozen
parameters are in no group. The expectation below is written from the model's module types
and parameter names, independently of ``harness.training.optim.decays``.

A fine-tuning method is one entry of ``METHODS``: a ``FinetuneSpec`` keyword set (the
method's model preparation, ``FinetuneSpec.training_method().prepare``, as ``finetune`` runs
it), plus which parameters it trains.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from architectures import build
from harness.runs.spec import Recipe
from harness.training import finetune
from harness.training.optim import make_optimizer, parameter_group_layout

ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")
WEIGHT_DECAY = Recipe().weight_decay
BIAS_NAMES = ("bias", "b_in", "b_out")  # MoE keeps its per-expert biases as [E, f] and [E, d] stacks


def _trains_everything(name: str) -> bool:
    return True


def _trains_adapters(name: str) -> bool:
    return ".lora_" in name


def _trains_top_block(name: str) -> bool:
    return name.startswith(("blocks.1.", "ln_f."))  # nano has 2 blocks: top:1 trains blocks.1 and ln_f


# method -> (FinetuneSpec keywords, which parameter names the method trains). "pretrain" is the
# trainer's own model; a new fine-tuning method is one more line.
METHODS = {
    "pretrain": (None, _trains_everything),
    "full": ({"method": "full"}, _trains_everything),
    "lora": ({"method": "lora", "rank": 2, "alpha": 4.0}, _trains_adapters),
    "top:1": ({"method": "top:1"}, _trains_top_block),
}


def expected_decay(model: nn.Module) -> dict[str, bool]:
    """{parameter name: whether the recipe decays it} from module types and names alone (a tied
    weight, e.g. the LM head, under its first name, as ``named_parameters`` gives it)."""
    expected, seen = {}, set()
    for prefix, module in model.named_modules():
        for leaf, parameter in module.named_parameters(recurse=False):
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            name = f"{prefix}.{leaf}" if prefix else leaf
            if isinstance(module, nn.LayerNorm) or leaf in BIAS_NAMES:
                expected[name] = False
            elif isinstance(module, (nn.Linear, nn.Embedding)) or parameter.dim() >= 2:
                expected[name] = True  # a matrix (linear, expert stack, adapter) or an embedding table
            else:
                raise AssertionError(f"{name} ({type(module).__name__}, shape {tuple(parameter.shape)}) fits no rule "
                                     f"of the recipe; say in this test whether it decays")
    return expected


def prepared_model(arch: str, method: str) -> nn.Module:
    torch.manual_seed(0)
    model = build(arch, size="nano")
    keywords, _ = METHODS[method]
    if keywords is None:
        return model
    spec = finetune.FinetuneSpec(parent="parent", data="synthetic", **keywords)
    return spec.training_method().prepare(model)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_is_in_the_group_the_recipe_gives_it(arch, method):
    model = prepared_model(arch, method)
    optimizer = make_optimizer(model, Recipe(lr=1e-3), fused=False)
    layout = parameter_group_layout(model, optimizer)
    grouped = {name: group["weight_decay"] for group in layout for name in group["names"]}
    assert sum(len(group["names"]) for group in layout) == len(grouped), "a parameter is in two groups"
    assert "?" not in grouped, "the optimizer holds a parameter the model does not name"

    _, trains = METHODS[method]
    expected = expected_decay(model)
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trained == {name for name in expected if trains(name)}, "the method trains other parameters"
    assert set(grouped) == trained, "frozen parameters must be in no group; trained ones in one"
    for name in trained:
        wanted = WEIGHT_DECAY if expected[name] else 0.0
        assert grouped[name] == wanted, f"{arch} {method}: {name} has weight decay {grouped[name]}, the recipe {wanted}"


def test_the_groups_are_the_ones_the_recipe_names():
    """Biases, norms and embeddings are all present in the nano models, so the rule above is exercised."""
    model = build("gpt4", size="nano")
    expected = expected_decay(model)
    assert not expected["blocks.0.ffn.b_in"] and not expected["blocks.0.ln_1.weight"]
    assert expected["blocks.0.ffn.w_in"] and expected["embed.token.weight"] and expected["blocks.0.attn.qkv.weight"]
