"""One rank of the FSDP2 equivalence check (tests/test_fsdp.py runs it under torchrun, gloo, CPU).

    torchrun --standalone --nproc_per_node=2 tests/fsdp_equivalence_worker.py ARCH OUT.json

Every rank also builds the one-process reference (same init, same rows) and compares:
the full gradients after the first backward (``DTensor.full_tensor()``), the parameters after
several SGD-with-momentum steps, and after several steps of the real recipe (AdamW groups,
warm-up/cosine schedule, clip 1.0, ``harness.training.step``). Rank 0 writes the largest
differences, the scales they are compared with and the shard shapes to OUT.json.

The model has an odd vocabulary (4097 rows: one rank's shard is padded) and, for gpt4, 3
experts (the expert stacks split 2 + 1). The reference sees the concatenated global batch:
for gpt2 in one forward; for gpt4 as the ranks' micro-batches accumulated in one process,
because MoE capacity and the balance loss are computed per forward batch (as under DDP).
"""

from __future__ import annotations

import contextlib
import json
import sys

import torch
import torch.distributed as dist

from architectures import build_from_config, get
from harness.runs.spec import Recipe
from harness.training.distributed import DistContext
from harness.training.optim import make_optimizer, make_scheduler
from harness.training.parallel import make_strategy
from harness.training.step import accumulate_gradients, apply_gradients

VOCAB, ROWS_PER_RANK, SEQ, STEPS = 4097, 2, 64, 4


def main(arch: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = get(arch).config("nano", vocab_size=VOCAB, **({"n_experts": 3} if arch == "gpt4" else {}))
    context = DistContext(rank, world, rank)

    def build(sharded: bool):
        torch.manual_seed(0)
        model = build_from_config(config)
        if sharded:
            make_strategy("fsdp2", context, torch.device("cpu"), mixed_precision=False).prepare(
                model, compile=False, activation_checkpointing=False)
        return model

    def global_batch(step: int):
        generator = torch.Generator().manual_seed(1000 + step)
        return [torch.randint(0, VOCAB, (ROWS_PER_RANK * world, SEQ), generator=generator) for _ in range(2)]

    def backward(model, step: int, sharded: bool) -> None:
        x, y = global_batch(step)
        rows = [(x[r * ROWS_PER_RANK:(r + 1) * ROWS_PER_RANK], y[r * ROWS_PER_RANK:(r + 1) * ROWS_PER_RANK])
                for r in range(world)]
        if sharded:
            accumulate_gradients(model, [rows[rank]], 1, contextlib.nullcontext)
        elif arch == "gpt2":
            accumulate_gradients(model, [(x, y)], 1, contextlib.nullcontext)
        else:
            accumulate_gradients(model, rows, world, contextlib.nullcontext)

    def largest_difference(sharded_model, reference, attribute: str) -> float:
        expected = dict(reference.named_parameters())
        worst = 0.0
        for name, parameter in sharded_model.named_parameters():
            value = parameter if attribute == "data" else parameter.grad
            if value is None:
                assert getattr(expected[name], attribute if attribute == "grad" else "data") is None, name
                continue
            full = value.full_tensor()
            worst = max(worst, (full - getattr(expected[name], attribute)).abs().max().item())
        return worst

    results: dict = {}
    # 1. gradients after the first backward
    sharded, reference = build(True), build(False)
    backward(sharded, 0, True)
    backward(reference, 0, False)
    results["grad_difference"] = largest_difference(sharded, reference, "grad")
    results["grad_scale"] = max(p.grad.abs().max().item() for p in reference.parameters() if p.grad is not None)
    results["shards"] = {
        "token": list(sharded.embed.token.weight.to_local().shape),
        "tied": sharded.lm_head.weight is sharded.embed.token.weight,
        "root_holds_token": any(p is sharded.embed.token.weight for p in _root_params(sharded)),
    }
    if arch == "gpt4":
        w_in = sharded.blocks[0].ffn.w_in
        results["shards"]["w_in"] = list(w_in.to_local().shape)
        results["shards"]["w_in_placement"] = str(w_in.placements)

    # 2. SGD with momentum: the update is proportional to the gradient (unlike AdamW's)
    for optimizer_kind in ("sgd", "adamw"):
        sharded, reference = build(True), build(False)
        initial = {name: p.detach().clone() for name, p in reference.named_parameters()}
        recipe = Recipe(lr=3e-3, micro_batch_size=ROWS_PER_RANK, batch_tokens=ROWS_PER_RANK * world * SEQ, seq_len=SEQ)
        norms = []
        steppers = []
        for model in (sharded, reference):
            if optimizer_kind == "sgd":
                optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
                steppers.append((optimizer, None, None))
            else:
                optimizer = make_optimizer(model, recipe, fused=False)
                steppers.append((optimizer, make_scheduler(optimizer, STEPS, recipe), recipe.grad_clip))
        for step in range(STEPS):
            step_norms = []
            for (optimizer, scheduler, clip), model, is_sharded in zip(steppers, (sharded, reference), (True, False)):
                backward(model, step, is_sharded)
                norm = apply_gradients(model, optimizer, clip, scheduler)
                step_norms.append(None if norm is None else float(norm.full_tensor() if is_sharded else norm))
            norms.append(step_norms)
        results[f"{optimizer_kind}_difference"] = largest_difference(sharded, reference, "data")
        results[f"{optimizer_kind}_moved"] = max((p.detach() - initial[name]).abs().max().item()
                                                 for name, p in reference.named_parameters())
        results[f"{optimizer_kind}_grad_norms"] = norms
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)
    dist.destroy_process_group()


def _root_params(model):
    """The parameters the root's FSDP group manages (not inside a block)."""
    inside_blocks = {id(p) for p in model.blocks.parameters()}
    return [p for p in model.parameters() if id(p) not in inside_blocks]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
