"""FLOP counts: fvcore vs analytic (within 1 %), FlopCounterMode's differences, banded and
MoE scaling, and the ``flops`` command (meta-device counts, GPT-3 175B, bad input)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import architectures
from harness.cli import main as cli_main
from harness.flops import BREAKDOWN_KEYS, forward_breakdown, forward_flops_per_token, six_n_d
from harness.flops.cross_checks import flop_counter_count, relative_difference
from harness.flops.fvcore_counts import fvcore_count, unsupported_operators
from harness.flops.fvcore_handles import IGNORED_OPS, MATRIX_OPS

ARCHS = ["gpt1", "gpt2", "gpt3", "gpt4"]


def tokens(config, batch: int = 1, seq_len: int | None = None, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, seq_len or config.context), generator=generator)


def build(arch: str, size: str, **overrides):
    torch.manual_seed(0)
    return architectures.build(arch, size, **overrides)


# ---- (a) fvcore vs (b) analytic ---------------------------------------------------------


@pytest.mark.parametrize("size", ["nano", "micro"])
@pytest.mark.parametrize("arch", ARCHS)
def test_fvcore_agrees_with_analytic(arch, size):
    model = build(arch, size)
    count = fvcore_count(model, tokens(model.config))
    analytic = forward_breakdown(model.config, attention_flops="full")  # measured = executed work
    assert relative_difference(count.forward_flops_per_token, sum(analytic.values())) < 0.01
    # by component, through fvcore's by_module counts
    for key in BREAKDOWN_KEYS:
        assert count.breakdown[key] == pytest.approx(analytic[key], rel=0.01, abs=1.0), key
    assert abs(count.breakdown["other"]) <= 0.01 * count.forward_flops_per_token
    assert count.unsupported_ops == {}


def test_fvcore_emits_no_unsupported_operator_warning(caplog):
    model = build("gpt4", "nano")
    with caplog.at_level(logging.WARNING):
        fvcore_count(model, tokens(model.config, seq_len=48))
    assert not [r for r in caplog.records if "nsupported operator" in r.getMessage()]


@pytest.mark.parametrize("arch", ARCHS)
def test_unhandled_operators_are_all_on_the_ignore_list(arch):
    model = build(arch, "nano")
    # 48 < context and not a multiple of the banded block: the padded banded path runs too
    unsupported = set(unsupported_operators(model, tokens(model.config, batch=2, seq_len=48)))
    assert unsupported <= IGNORED_OPS, unsupported - IGNORED_OPS
    assert "aten::scaled_dot_product_attention" not in unsupported


def test_ignore_list_holds_no_matrix_operator():
    assert not IGNORED_OPS & MATRIX_OPS
    for name in IGNORED_OPS:
        assert not any(word in name for word in ("matmul", "linear", "mm", "conv", "einsum", "attention")), name


def test_moe_counted_with_the_rows_each_expert_ran():
    """Eval mode is dropless: the experts' matmuls sum to N·k rows, whatever the routing."""
    model = build("gpt4", "nano")
    config = model.config
    count = fvcore_count(model, tokens(config, batch=3, seq_len=40))
    per_token_expert = config.top_k * 2 * (2 * config.d_model * config.expert_d_ff) * config.n_layer
    assert count.breakdown["moe_experts"] == pytest.approx(per_token_expert, rel=1e-9)
    assert count.breakdown["moe_router"] == pytest.approx(2 * config.d_model * config.n_experts * config.n_layer)


# ---- (c) FlopCounterMode ----------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_flop_counter_differs_only_by_cpu_sdpa(arch):
    model = build(arch, "nano")
    config = model.config
    idx = tokens(config)
    analytic = forward_breakdown(config, attention_flops="full")
    total = sum(analytic.values())
    shipped = flop_counter_count(model, idx)
    # as shipped, SDPA on the CPU counts 0: exactly the dense layers' score FLOPs are missing
    dense_layers = sum(config.layer_attention(i) == "dense" for i in range(config.n_layer))
    dense_scores = dense_layers * 4 * config.d_attn * config.context
    assert shipped.flops_per_token == pytest.approx(total - dense_scores, rel=1e-6)
    patched = flop_counter_count(model, idx, cpu_sdpa=True)
    assert relative_difference(patched.flops_per_token, total) < 0.01
    train = flop_counter_count(model, idx, backward=True, cpu_sdpa=True)
    assert relative_difference(train.flops_per_token, 3 * total) < 0.01


# ---- banded attention at its executed cost; MoE with top-k, not E ------------------------


def test_banded_scores_grow_with_the_window_not_with_t_squared():
    T, block = 256, 16
    scores = {}
    for window in (16, 32, 64, 128):
        model = build("gpt3", "micro", n_layer=2, attention_pattern=("banded",), window=window, banded_block=block)
        count = fvcore_count(model, tokens(model.config, seq_len=T))
        expected = model.config.n_layer * 4 * model.config.d_attn * (window + block)
        assert count.breakdown["attention_scores"] == pytest.approx(expected, rel=0.01)
        assert forward_breakdown(model.config, T, "full")["attention_scores"] == pytest.approx(expected, rel=1e-9)
        scores[window] = count.breakdown["attention_scores"]
    # linear in w + b: each doubling of w adds the same per-window amount
    per_key = (scores[128] - scores[16]) / (128 - 16)
    for window, value in scores.items():
        assert value == pytest.approx(per_key * (window + block), rel=0.01)
    dense = build("gpt3", "micro", n_layer=2, attention_pattern=("dense",))
    dense_scores = fvcore_count(dense, tokens(dense.config, seq_len=T)).breakdown["attention_scores"]
    assert dense_scores == pytest.approx(per_key * T, rel=0.01)  # dense executes all T keys
    assert scores[16] < dense_scores / 7


def test_gpt4_flops_grow_with_top_k_not_with_the_number_of_experts():
    d_ff = 128  # fixed expert width (the default d_ff/k would keep active FLOPs constant)
    by_experts = {}
    for n_experts in (4, 8, 16):
        model = build("gpt4", "nano", n_experts=n_experts, top_k=2, expert_d_ff=d_ff)
        count = fvcore_count(model, tokens(model.config, seq_len=32))
        by_experts[n_experts] = count
        assert count.forward_flops_per_token == pytest.approx(forward_flops_per_token(model.config, 32, "full"), rel=0.01)
    experts = [c.breakdown["moe_experts"] for c in by_experts.values()]
    assert max(experts) == pytest.approx(min(experts), rel=1e-9)
    # the total moves only by the router, 2·d·ΔE per layer
    config = model.config
    router_step = 2 * config.d_model * (16 - 4) * config.n_layer
    assert by_experts[16].forward_flops_per_token - by_experts[4].forward_flops_per_token == pytest.approx(router_step)

    by_k = {}
    for top_k in (1, 2, 4):
        model = build("gpt4", "nano", n_experts=8, top_k=top_k, expert_d_ff=d_ff)
        by_k[top_k] = fvcore_count(model, tokens(model.config, seq_len=32)).breakdown["moe_experts"]
    assert by_k[2] == pytest.approx(2 * by_k[1], rel=1e-9)
    assert by_k[4] == pytest.approx(4 * by_k[1], rel=1e-9)


# ---- the flops command ------------------------------------------------------------------


def run_cli(capsys, *argv):
    code = cli_main(["flops", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_flops_json_gpt3_175b(capsys):
    code, out, _ = run_cli(capsys, "--arch", "gpt3", "--size", "175b", "--tokens", "300e9", "--format", "json")
    assert code == 0
    data = json.loads(out)
    for key in (
        "params",
        "non_embedding_params",
        "active_params",
        "forward_flops_per_token",
        "train_flops_per_token",
        "breakdown",
        "convention",
        "train_flops_total",
        "train_flops_total_6nd",
    ):
        assert key in data, key
    assert data["params"] == pytest.approx(175.0e9, rel=0.01)
    assert data["train_flops_total_6nd"] == pytest.approx(3.14e23, rel=0.01)
    assert data["train_flops_total_6nd"] == six_n_d(data["active_params"], 300e9)
    assert data["train_flops_per_token"] == pytest.approx(3 * data["forward_flops_per_token"])
    assert sum(data["breakdown"].values()) == pytest.approx(data["forward_flops_per_token"])
    # analytic total includes attention scores, so it is a little above 6ND
    assert 1.0 < data["train_flops_total"] / data["train_flops_total_6nd"] < 1.05


def test_flops_table_states_units_and_convention(capsys):
    code, out, _ = run_cli(capsys, "--arch", "gpt4", "--size", "nano", "--tokens", "1e6")
    assert code == 0
    for text in ("params", "FLOPs/token", "FLOPs/image", "% of forward", "FLOPs per text token", "convention:", "6·N·D"):
        assert text in out, text
    assert "moe_experts" in out and "moe_router" in out


def test_flops_set_and_seq_len(capsys):
    code, out, _ = run_cli(capsys, "--arch", "gpt3", "--size", "micro", "--set", "window=16", "--seq-len", "128", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["seq_len"] == 128 and data["overrides"] == {"window": 16}
    config = architectures.get("gpt3").config("micro", window=16)
    assert data["breakdown"] == forward_breakdown(config, 128)
    assert "tokens" not in data and "train_flops_total" not in data


def test_flops_cross_check(capsys):
    code, out, _ = run_cli(capsys, "--arch", "gpt3", "--size", "nano", "--cross-check", "--format", "json")
    assert code == 0
    check = json.loads(out)["cross_check"]
    assert check["fvcore_vs_analytic"] < 0.01
    assert check["flop_counter_cpu_sdpa_vs_analytic"] < 0.01


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--arch", "gpt9"], "unknown architecture"),
        (["--arch", "gpt2", "--size", "huge"], "unknown size"),
        (["--arch", "gpt2", "--size", "nano", "--seq-len", "65"], "longer than"),
        (["--arch", "gpt2", "--size", "nano", "--set", "window=wide"], "needs a value of type int"),
        (["--arch", "gpt2", "--size", "nano", "--set", "n_layer"], "KEY=VALUE"),
        (["--arch", "gpt2", "--size", "nano", "--set", "depth=3"], "unknown model config field"),
        (["--arch", "gpt2", "--size", "nano", "--tokens", "many"], "--tokens"),
        (["--arch", "gpt2", "--size", "nano", "--tokens", "-5"], "--tokens"),
        (["--arch", "gpt3", "--size", "175b", "--cross-check"], "--cross-check"),
    ],
)
def test_flops_bad_input_is_one_sentence(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), err
    assert fragment in lines[0]
