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


class Check:
    """The two sides of the comparison on this rank: sharded models (FSDP2) and one-process references."""

    def __init__(self, arch: str):
        self.arch, self.rank, self.world = arch, dist.get_rank(), dist.get_world_size()
        self.config = get(arch).config("nano", vocab_size=VOCAB, **({"n_experts": 3} if arch == "gpt4" else {}))
        self.context = DistContext(self.rank, self.world, self.rank)

    def build(self, sharded: bool):
        torch.manual_seed(0)
        model = build_from_config(self.config)
        if sharded:
            make_strategy("fsdp2", self.context, torch.device("cpu"), mixed_precision=False).prepare(
                model, compile=False, activation_checkpointing=False)
        return model

    def backward(self, model, step: int, sharded: bool) -> None:
        """This rank's rows (sharded), or the whole global batch of ``step`` (the reference)."""
        generator = torch.Generator().manual_seed(1000 + step)
        x, y = [torch.randint(0, VOCAB, (ROWS_PER_RANK * self.world, SEQ), generator=generator) for _ in range(2)]
        rows = [(x[r * ROWS_PER_RANK:(r + 1) * ROWS_PER_RANK], y[r * ROWS_PER_RANK:(r + 1) * ROWS_PER_RANK])
                for r in range(self.world)]
        if sharded:
            accumulate_gradients(model, [rows[self.rank]], 1, contextlib.nullcontext)
        elif self.arch == "gpt2":
            accumulate_gradients(model, [(x, y)], 1, contextlib.nullcontext)
        else:
            accumulate_gradients(model, rows, self.world, contextlib.nullcontext)

    def gradients(self) -> dict:
        sharded, reference = self.build(True), self.build(False)
        self.backward(sharded, 0, True)
        self.backward(reference, 0, False)
        shards = {
            "token": list(sharded.embed.token.weight.to_local().shape),
            "tied": sharded.lm_head.weight is sharded.embed.token.weight,
            "root_holds_token": any(p is sharded.embed.token.weight for p in _root_params(sharded)),
        }
        if self.arch == "gpt4":
            w_in = sharded.blocks[0].ffn.w_in
            shards.update(w_in=list(w_in.to_local().shape), w_in_placement=str(w_in.placements))
        return {"grad_difference": largest_difference(sharded, reference, "grad"),
                "grad_scale": max(p.grad.abs().max().item() for p in reference.parameters() if p.grad is not None),
                "shards": shards}

    def steps(self, optimizer_kind: str) -> dict:
        """``STEPS`` optimizer steps on both sides: SGD with momentum, or the real AdamW recipe."""
        sharded, reference = self.build(True), self.build(False)
        initial = {name: p.detach().clone() for name, p in reference.named_parameters()}
        recipe = Recipe(lr=3e-3, micro_batch_size=ROWS_PER_RANK, batch_tokens=ROWS_PER_RANK * self.world * SEQ,
                        seq_len=SEQ)
        steppers = []
        for model in (sharded, reference):
            if optimizer_kind == "sgd":
                steppers.append((torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), None, None))
            else:
                optimizer = make_optimizer(model, recipe, fused=False)
                steppers.append((optimizer, make_scheduler(optimizer, STEPS, recipe), recipe.grad_clip))
        norms = []
        for step in range(STEPS):
            step_norms = []
            for (optimizer, scheduler, clip), model, is_sharded in zip(steppers, (sharded, reference), (True, False)):
                self.backward(model, step, is_sharded)
                norm = apply_gradients(model, optimizer, clip, scheduler)
                step_norms.append(None if norm is None else float(norm.full_tensor() if is_sharded else norm))
            norms.append(step_norms)
        moved = max((p.detach() - initial[name]).abs().max().item() for name, p in reference.named_parameters())
        return {f"{optimizer_kind}_difference": largest_difference(sharded, reference, "data"),
                f"{optimizer_kind}_moved": moved, f"{optimizer_kind}_grad_norms": norms}


def largest_difference(sharded_model, reference, attribute: str) -> float:
    """Largest |full sharded - reference| over every parameter (``data``) or gradient (``grad``)."""
    expected = dict(reference.named_parameters())
    worst = 0.0
    for name, parameter in sharded_model.named_parameters():
        value = parameter if attribute == "data" else parameter.grad
        if value is None:
            assert expected[name].grad is None, name  # unused by text (gpt4's image prefix) on both sides
            continue
        worst = max(worst, (value.full_tensor() - getattr(expected[name], attribute)).abs().max().item())
    return worst


def main(arch: str, out: str) -> None:
    dist.init_process_group("gloo")
    check = Check(arch)
    results = {**check.gradients(), **check.steps("sgd"), **check.steps("adamw")}
    if check.rank == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)
    dist.destroy_process_group()


def _root_params(model):
    """The parameters the root's FSDP group manages (not inside a block)."""
    inside_blocks = {id(p) for p in model.blocks.parameters()}
    return [p for p in model.parameters() if id(p) not in inside_blocks]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
