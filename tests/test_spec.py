"""RunSpec: what is resolved before the run id is hashed, and what resolving leaves alone."""

from __future__ import annotations

import pytest

from harness import device as device_module
from harness.runs.spec import Recipe, RunSpec


def nano(**kwargs) -> RunSpec:
    return RunSpec(arch="gpt2", size="nano", budget_flops=2e11, **kwargs)


def test_resolving_leaves_the_callers_recipe_as_it_was():
    recipe = Recipe(lr=None, seq_len=None)
    spec = nano(recipe=recipe)
    assert recipe == Recipe()  # nothing filled in the caller's object
    assert spec.recipe is not recipe and spec.recipe.lr is not None and spec.recipe.seq_len == 64


def test_run_id_hashes_the_dtype_this_machine_would_use(monkeypatch):
    """A default-dtype run on a CPU with native bf16 and one on a CPU without are different runs."""
    ids = {}
    for native_bf16 in (True, False):
        monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda native_bf16=native_bf16: native_bf16)
        spec = nano(device="cpu")
        assert spec.dtype == ("bf16" if native_bf16 else "fp32")
        assert spec.run_id() == nano(device="cpu", dtype=spec.dtype).run_id()  # the default is what it resolves to
        ids[native_bf16] = spec.run_id()
    assert ids[True] != ids[False]


def test_run_ids_of_explicit_dtype_runs_are_unchanged():
    """The id a gpt2 nano fp32 run had before dtypes were resolved and before budgets counted attention
    causally: the same plan (``attention_flops="full"``) keeps it; the causal default plans differently."""
    spec = RunSpec(arch="gpt2", size="nano", data="synthetic", seed=0, budget_flops=2e11, dtype="fp32",
                   device="cpu", compile=False, attention_flops="full")
    assert spec.run_id() == "gpt2-nano-f043c832a7-s0"
    assert RunSpec(arch="gpt2", size="nano", budget_flops=2e11, dtype="fp32").run_id() != spec.run_id()


def test_unknown_dtype_is_one_sentence():
    with pytest.raises(ValueError, match="dtype must be one of fp32, bf16, got 'fp16'"):
        nano(dtype="fp16")


@pytest.mark.parametrize("seq_len, message", [(65, "seq_len 65 is longer than the context of 64"),
                                              (0, r"--seq-len \(seq_len\) must be a positive whole number, got 0")])
def test_seq_len_is_checked_against_the_context(seq_len, message):
    with pytest.raises(ValueError, match=message):
        nano(recipe=Recipe(seq_len=seq_len))


def test_size_defaults_come_from_the_registry_and_a_plugin_brings_its_own():
    from architectures import Architecture, get, register, unregister
    from architectures.presets import CPU_SIZES, SizeDefaults

    nano = get("gpt2").training_defaults("nano")
    assert (nano.lr, nano.micro_batch_size, nano.batch_tokens, nano.budget_flops) == (3e-3, 16, 1024, 2e11)
    spec = RunSpec(arch="gpt2", size="nano")
    assert (spec.recipe.lr, spec.recipe.micro_batch_size, spec.recipe.batch_tokens, spec.budget_flops) == \
        (3e-3, 16, 1024, 2e11)
    assert RunSpec(arch="gpt3", size="175b", budget_flops=1e20).recipe.lr == 0.6e-4  # GPT-3 Table 2.1
    register(Architecture(name="plugin-gpt", summary="a plugin", defaults={}, sizes={"tiny": CPU_SIZES["nano"]},
                          size_defaults={"tiny": SizeDefaults(lr=1e-2, micro_batch_size=4, batch_tokens=256,
                                                              budget_flops=5e9)}))
    try:
        spec = RunSpec(arch="plugin-gpt", size="tiny")
        assert (spec.recipe.lr, spec.recipe.micro_batch_size, spec.recipe.batch_tokens, spec.budget_flops) == \
            (1e-2, 4, 256, 5e9)
    finally:
        unregister("plugin-gpt")
