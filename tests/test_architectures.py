"""Behaviour of the built-in architectures (docs/design.md, "The model contract").

Everything runs at the ``nano`` size in float32 on the CPU, so the file takes seconds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import architectures
from architectures import GPT, ModelConfig, build, build_from_config, get
from architectures.attention import CausalSelfAttention, banded_attention_blocked, banded_reference
from architectures.moe import MoE

ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")
VOCAB = 4096  # the nano preset's vocabulary
ATOL = 1e-5


def make(arch: str, seed: int = 0, size: str = "nano", **overrides) -> GPT:
    torch.manual_seed(seed)
    return build(arch, size, **overrides)


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator)


def images(batch: int, seed: int = 2, side: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, side, side, generator=generator)


# ---- training, shapes, causality --------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_adamw_steps_on_a_fixed_batch_reduce_the_loss(arch):
    model = make(arch).train()
    x, y = tokens(4, 32, seed=3), tokens(4, 32, seed=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        out = model(x, targets=y)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.lm_loss.item())
    # a fresh model predicts nearly uniformly over the vocabulary
    assert losses[0] == pytest.approx(math.log(VOCAB), abs=0.25)
    assert losses[-1] < losses[0] - 0.5, losses


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_shape_and_no_loss_without_targets(arch):
    out = make(arch).eval()(tokens(3, 10))
    assert out.logits.shape == (3, 10, VOCAB)
    assert out.loss is None and out.lm_loss is None


# gpt3/gpt4 with a small window so the blocked banded kernel runs (T > window)
CAUSAL_OVERRIDES = {"gpt1": {}, "gpt2": {}, "gpt3": {"window": 8}, "gpt4": {"window": 8}}


@pytest.mark.parametrize("arch", ARCHS)
def test_changing_token_t_leaves_earlier_logits_unchanged(arch):
    model = make(arch, **CAUSAL_OVERRIDES[arch]).eval()
    t = 19
    x = tokens(2, 40)
    x_changed = x.clone()
    x_changed[:, t] = (x[:, t] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(x).logits, model(x_changed).logits
    torch.testing.assert_close(after[:, :t], before[:, :t], atol=ATOL, rtol=0)
    assert (after[:, t] - before[:, t]).abs().max() > 1e-3  # the change is seen at t


def test_gpt4_image_prefix_is_stripped_and_text_stays_causal():
    model = make("gpt4", window=8).eval()
    B, T, t = 2, 30, 13
    x, pictures = tokens(B, T), images(B)
    x_changed = x.clone()
    x_changed[:, t] = (x[:, t] + 7) % VOCAB
    with torch.no_grad():
        before = model(x, images=pictures).logits
        after = model(x_changed, images=pictures).logits
        other_picture = model(x, images=images(B, seed=9)).logits
        text_only = model(x).logits
    assert before.shape == (B, T, VOCAB)  # 16 patch positions are not in the logits
    torch.testing.assert_close(after[:, :t], before[:, :t], atol=ATOL, rtol=0)
    assert (after[:, t] - before[:, t]).abs().max() > 1e-3
    # every text position (the first included) sees the image prefix
    assert (other_picture[:, 0] - before[:, 0]).abs().max() > 1e-4
    assert text_only.shape == (B, T, VOCAB)


def test_targets_equal_to_ignore_index_are_left_out_of_the_loss():
    model = make("gpt2").eval()
    x, y = tokens(2, 12), tokens(2, 12, seed=5)
    masked = y.clone()
    masked[:, :5] = -100
    with torch.no_grad():
        out = model(x, targets=masked)
        expected = F.cross_entropy(out.logits[:, 5:].reshape(-1, VOCAB), y[:, 5:].reshape(-1))
    torch.testing.assert_close(out.lm_loss, expected)
    torch.testing.assert_close(out.loss, out.lm_loss)  # no auxiliary terms for a dense model


# ---- banded attention --------------------------------------------------------------------

BANDED_CASES = [
    # (T, window, block)
    (16, 4, 4),
    (17, 4, 4),  # T not a multiple of the block
    (23, 5, 3),
    (20, 3, 8),  # block > window
    (30, 1, 4),  # window 1: each query sees only itself
    (9, 1, 1),
    (33, 7, 5),
    (64, 16, 64),  # one block covering everything
    (5, 2, 100),  # block > T
    (10, 10, 4),  # window == T: dense causal
    (12, 40, 3),  # window > T: dense causal
]


@pytest.mark.parametrize("T,window,block", BANDED_CASES)
def test_blocked_banded_kernel_matches_the_definition(T, window, block):
    generator = torch.Generator().manual_seed(T * 1000 + window * 10 + block)
    q, k, v = (torch.randn(2, 3, T, 8, generator=generator) for _ in range(3))
    out = banded_attention_blocked(q, k, v, window, block)
    if window >= T:
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        expected = banded_reference(q, k, v, window)
        # and the band is not a no-op: dense causal attention differs
        dense = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert (dense - expected).abs().max() > 1e-3
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_banded_reference_is_the_band_definition():
    # the reference itself: query t attends to keys t-w+1 .. t only (window 1 returns v)
    q, k, v = (torch.randn(1, 2, 9, 4) for _ in range(3))
    torch.testing.assert_close(banded_reference(q, k, v, 1), v)


def test_banded_layer_executes_window_plus_block_keys_per_query():
    T, window, block = 256, 16, 16
    config = get("gpt3").config("micro", window=window, banded_block=block)
    banded, dense = CausalSelfAttention(config, window=window), CausalSelfAttention(config)
    assert banded.keys_per_query(T) == window + block
    assert dense.keys_per_query(T) == T
    assert banded.keys_per_query(8) == 8  # a band wider than the sequence is dense
    # the kernel really executes that much: count its matmul FLOPs
    B, H, D = 1, 2, 8
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    with FlopCounterMode(display=False) as counter:
        banded_attention_blocked(q, k, v, window, block)
    # QKᵀ and PV, 2 FLOPs per multiply-add each
    assert counter.get_total_flops() == 2 * 2 * B * H * T * banded.keys_per_query(T) * D
    assert counter.get_total_flops() < 2 * 2 * B * H * T * T * D / 4


def test_gpt3_layers_alternate_dense_and_banded():
    model = make("gpt3", n_layer=4, window=8)
    assert [block.attn.window for block in model.blocks] == [None, 8, None, 8]
    assert [block.attn.kind for block in model.blocks] == ["dense", "banded", "dense", "banded"]
    assert [block.attn.window for block in make("gpt2", n_layer=4).blocks] == [None] * 4


def test_gpt3_band_is_applied_in_the_model():
    narrow = make("gpt3", window=8).eval()
    wide = make("gpt3", window=64).eval()  # window = context: every layer dense in effect
    wide.load_state_dict(narrow.state_dict())  # same weights; the window is not a parameter
    x = tokens(2, 48)
    with torch.no_grad():
        narrow_logits, wide_logits = narrow(x).logits, wide(x).logits
    # up to position 7 the band covers every earlier key; after it, it cuts some off
    torch.testing.assert_close(narrow_logits[:, :8], wide_logits[:, :8], atol=ATOL, rtol=0)
    assert (narrow_logits[:, 8:] - wide_logits[:, 8:]).abs().amax(dim=-1).min() > 1e-4


def test_all_banded_model_has_a_finite_receptive_field():
    # two banded layers of window 4: position s sees tokens s-6 .. s and nothing earlier
    model = make("gpt3", attention_pattern=("banded",), window=4).eval()
    x = tokens(1, 40)
    t = 10
    x_changed = x.clone()
    x_changed[:, t] = (x[:, t] + 1) % VOCAB
    with torch.no_grad():
        difference = (model(x_changed).logits - model(x).logits).abs().amax(dim=-1)[0]
    assert difference[:t].max() <= ATOL
    assert difference[t : t + 7].min() > 1e-5
    assert difference[t + 7 :].max() <= ATOL


# ---- KV cache -----------------------------------------------------------------------------

KV_OVERRIDES = {"gpt1": {}, "gpt2": {}, "gpt3": {"window": 5}, "gpt4": {"window": 5}}


@pytest.mark.parametrize("arch", ARCHS)
def test_incremental_decoding_with_kv_cache_matches_full_forward(arch):
    model = make(arch, **KV_OVERRIDES[arch]).eval()
    B, T, prefill = 2, 20, 7
    x = tokens(B, T)
    with torch.no_grad():
        full = model(x).logits
        cache = model.new_kv_cache(B)
        pieces = [model(x[:, :prefill], kv_cache=cache).logits]
        for t in range(prefill, T):
            pieces.append(model(x[:, t : t + 1], kv_cache=cache).logits)
    assert cache.position == T
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=ATOL, rtol=0)
    # greedy decoding picks the same tokens
    assert torch.equal(torch.cat(pieces, dim=1).argmax(-1), full.argmax(-1))


def test_gpt4_kv_cache_with_image_prefix_matches_full_forward():
    model = make("gpt4", window=5).eval()
    B, T = 2, 12
    x, pictures = tokens(B, T), images(B)
    with torch.no_grad():
        full = model(x, images=pictures).logits
        cache = model.new_kv_cache(B)
        pieces = [model(x[:, :3], images=pictures, kv_cache=cache).logits]
        for t in range(3, T):
            pieces.append(model(x[:, t : t + 1], kv_cache=cache).logits)
        assert cache.position == 16 + T  # 16 patches, then the text
        with pytest.raises(ValueError, match="first chunk"):
            model(x[:, :1], images=pictures, kv_cache=cache)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=ATOL, rtol=0)


def test_kv_cache_refuses_to_run_past_the_context():
    model = make("gpt2").eval()  # context 64
    cache = model.new_kv_cache(1)
    with torch.no_grad():
        model(tokens(1, 60), kv_cache=cache)
        with pytest.raises(ValueError, match="context of 64"):
            model(tokens(1, 5), kv_cache=cache)


# ---- initialisation and normalisation placement ------------------------------------------


def _std(tensors) -> float:
    return torch.cat([t.detach().reshape(-1) for t in tensors]).std().item()


@pytest.mark.parametrize("n_layer", [2, 8])
def test_gpt2_scales_residual_projections_at_init(n_layer):
    model = make("gpt2", n_layer=n_layer, d_model=128)
    scaled = 0.02 / math.sqrt(2 * n_layer)
    assert model.residual_init_std == pytest.approx(scaled)
    residual = [p for b in model.blocks for p in (b.attn.proj.weight, b.ffn.proj.weight)]
    other = [p for b in model.blocks for p in (b.attn.qkv.weight, b.ffn.fc.weight)]
    assert _std(residual) == pytest.approx(scaled, rel=0.03)
    assert _std(other) == pytest.approx(0.02, rel=0.03)
    assert _std([model.embed.token.weight]) == pytest.approx(0.02, rel=0.03)
    assert model.lm_head.weight is model.embed.token.weight  # tied head
    assert all(torch.all(b.attn.proj.bias == 0) for b in model.blocks)


def test_gpt4_scales_expert_output_weights_at_init():
    model = make("gpt4", n_layer=8, d_model=128)
    scaled = 0.02 / math.sqrt(2 * 8)
    moes = [b.ffn for b in model.blocks]
    assert all(isinstance(m, MoE) for m in moes)
    assert _std([m.w_out for m in moes]) == pytest.approx(scaled, rel=0.03)
    assert _std([b.attn.proj.weight for b in model.blocks]) == pytest.approx(scaled, rel=0.03)
    assert _std([m.w_in for m in moes]) == pytest.approx(0.02, rel=0.03)
    assert _std([m.router.weight for m in moes]) == pytest.approx(0.02, rel=0.05)
    assert _std([model.image_prefix.projection.weight]) == pytest.approx(0.02, rel=0.05)


def test_gpt1_does_not_scale_residual_projections():
    model = make("gpt1", n_layer=8, d_model=128)
    residual = [p for b in model.blocks for p in (b.attn.proj.weight, b.ffn.proj.weight)]
    assert _std(residual) == pytest.approx(0.02, rel=0.03)


def _record(model: GPT, x: torch.Tensor) -> dict:
    """Hook the outputs of every block and the inputs of attention and the LM head."""
    seen: dict = {"blocks": [], "attn_in": []}
    handles = [block.register_forward_hook(lambda m, i, o: seen["blocks"].append(o[0])) for block in model.blocks]
    handles += [
        block.attn.register_forward_pre_hook(lambda m, args: seen["attn_in"].append(args[0]))
        for block in model.blocks
    ]
    handles.append(model.lm_head.register_forward_pre_hook(lambda m, args: seen.__setitem__("head_in", args[0])))
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return seen


def _is_normalised(h: torch.Tensor) -> bool:
    """Per position mean 0 and std 1 (LayerNorm at init; eps=1e-5 shrinks the std of a
    small-variance input such as the ~0.03-std residual stream at init by up to ~1%)."""
    mean, std = h.mean(dim=-1), h.std(dim=-1, unbiased=False)
    return bool(mean.abs().max() < 1e-4 and (std - 1).abs().max() < 0.02)


def test_gpt1_is_post_ln_without_a_final_layernorm():
    model = make("gpt1").eval()
    seen = _record(model, tokens(2, 16))
    assert model.ln_f is None
    assert all(_is_normalised(h) for h in seen["blocks"])  # LN(x + f(x)) is the block output
    assert not _is_normalised(seen["attn_in"][0])  # attention reads the raw embeddings
    torch.testing.assert_close(seen["head_in"], seen["blocks"][-1], atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "gpt3", "gpt4"])
def test_pre_ln_models_normalise_sublayer_inputs_and_the_final_output(arch):
    model = make(arch).eval()
    seen = _record(model, tokens(2, 16))
    assert model.ln_f is not None
    assert not any(_is_normalised(h) for h in seen["blocks"])  # the residual stream is not normalised
    assert all(_is_normalised(h) for h in seen["attn_in"])  # attention reads LN_1(x)
    assert _is_normalised(seen["head_in"])
    torch.testing.assert_close(seen["head_in"], model.ln_f(seen["blocks"][-1]), atol=ATOL, rtol=0)


# ---- mixture of experts ------------------------------------------------------------------


def _moe(seed: int = 0, **overrides) -> MoE:
    return make("gpt4", seed=seed, **overrides).blocks[0].ffn


def naive_moe(moe: MoE, x: torch.Tensor, keep=None) -> torch.Tensor:
    """Top-k MoE token by token: Σ_j softmax(top-k logits)_j · expert_j(x); ``keep(n, e)`` drops."""
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        logits = moe.router.weight @ x[n]
        values, experts = logits.topk(moe.top_k)
        gates = torch.softmax(values, dim=-1)
        for gate, expert in zip(gates, experts.tolist()):
            if keep is not None and not keep(n, expert):
                continue
            hidden = moe.act(x[n] @ moe.w_in[expert] + moe.b_in[expert])
            out[n] += gate * (hidden @ moe.w_out[expert] + moe.b_out[expert])
    return out


def test_moe_dispatch_matches_a_per_token_reference():
    moe = _moe().eval()
    x = torch.randn(3, 11, moe.w_in.shape[1])
    with torch.no_grad():
        out, aux = moe(x)
        expected = naive_moe(moe, x.reshape(-1, x.shape[-1])).view_as(x)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    assert aux["moe_dropped_fraction"].item() == 0.0  # evaluation is dropless


def test_moe_capacity_drops_the_latest_tokens_first():
    moe = _moe(capacity_factor=0.25).train()
    N, k, E = 40, moe.top_k, moe.n_experts
    capacity = math.ceil(0.25 * N * k / E)
    x = torch.randn(N, moe.w_in.shape[1])
    with torch.no_grad():
        out, aux = moe(x[None])
        top = (x @ moe.router.weight.T).topk(k).indices
    # expert e keeps the first `capacity` tokens (in order) routed to it
    kept = {(n, e) for e in range(E) for n in [n for n in range(N) if e in top[n].tolist()][:capacity]}
    with torch.no_grad():
        expected = naive_moe(moe, x, keep=lambda n, e: (n, e) in kept)
    torch.testing.assert_close(out[0], expected, atol=ATOL, rtol=0)
    assert aux["moe_dropped_fraction"].item() == pytest.approx(1 - len(kept) / (N * k))
    assert aux["moe_dropped_fraction"].item() > 0


def test_moe_balance_loss_is_alpha_under_uniform_routing():
    moe = _moe()
    E, d = moe.n_experts, moe.w_in.shape[1]
    alpha, beta = moe.balance_weight, moe.z_weight
    assert (alpha, beta) == (0.01, 1e-3)
    # Exactly uniform in both factors: token n scores experts n mod E and n+1 mod E high,
    # the rest 0. Each expert then gets 2 of every E tokens' k=2 assignments (f_i = 1/E)
    # and, averaged over a whole cycle, the same mean probability (P_i = 1/E).
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[:, :E] = torch.eye(E)
    n = torch.arange(4 * E)
    x = torch.zeros(len(n), d)
    x[n, n % E] = 3.0
    x[n, (n + 1) % E] = 3.0
    with torch.no_grad():
        _, aux = moe(x[None])
    assert aux["moe_balance"].item() == pytest.approx(alpha, rel=1e-5)

    # All logits equal (zero router): P_i = 1/E exactly, so α·E·Σ f_i/E = α whatever the
    # top-k tie-breaking does to f_i; the z-loss is β·log(E)².
    with torch.no_grad():
        moe.router.weight.zero_()
        _, aux = moe(torch.randn(1, 24, d))
    assert aux["moe_balance"].item() == pytest.approx(alpha, rel=1e-5)
    assert aux["moe_z"].item() == pytest.approx(beta * math.log(E) ** 2, rel=1e-5)


def test_moe_balance_loss_rises_as_routing_collapses():
    moe = _moe()
    d = moe.w_in.shape[1]
    x = torch.randn(1, 32, d) + 1.0  # inputs with a common direction
    balances = []
    for strength in (0.0, 0.05, 1.0):
        with torch.no_grad():
            moe.router.weight.zero_()
            moe.router.weight[0] = strength  # expert 0 favoured by every token
            _, aux = moe(x)
        balances.append(aux["moe_balance"].item())
    assert balances[0] == pytest.approx(moe.balance_weight, rel=1e-5)
    assert balances[0] < balances[1] < balances[2]
    # expert 0 takes half of all assignments with probability ≈ 1: α·E·(1/2·1) = 4α
    assert balances[2] == pytest.approx(moe.balance_weight * moe.n_experts / 2, rel=0.01)


def test_moe_dropped_fraction_depends_on_capacity_in_training_only():
    x = tokens(4, 32)
    with torch.no_grad():
        roomy = make("gpt4", capacity_factor=100.0).train()(x).aux["moe_dropped_fraction"]
        tight_model = make("gpt4", capacity_factor=0.05)
        tight_train = tight_model.train()(x).aux["moe_dropped_fraction"]
        tight_eval = tight_model.eval()(x).aux["moe_dropped_fraction"]
        dropless = make("gpt4", capacity_factor=None).train()(x).aux["moe_dropped_fraction"]
    assert roomy.item() == 0.0
    assert tight_train.item() > 0.5  # each expert takes ceil(0.05·256·2/8) = 4 of ~32
    assert tight_eval.item() == 0.0
    assert dropless.item() == 0.0


def test_gpt4_loss_is_lm_loss_plus_weighted_auxiliary_losses():
    model = make("gpt4").train()
    out = model(tokens(2, 16), targets=tokens(2, 16, seed=6))
    assert set(out.aux) >= {"moe_balance", "moe_z", "moe_dropped_fraction"}
    expected = out.lm_loss + out.aux["moe_balance"] + out.aux["moe_z"]
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=0)
    assert out.aux["moe_balance"].item() > 0 and out.aux["moe_z"].item() > 0
    # the auxiliary losses carry gradient to the routers
    out.loss.backward()
    assert all(b.ffn.router.weight.grad.abs().sum() > 0 for b in model.blocks)


def test_gpt4_active_params_count_k_of_e_experts():
    model = make("gpt4")
    counts = model.param_counts()
    experts = sum(b.ffn.expert_parameter_count() for b in model.blocks)
    E, k = model.config.n_experts, model.config.top_k
    assert counts["active_params"] < counts["params"]
    assert counts["params"] == sum(p.numel() for p in model.parameters())
    assert counts["active_params"] == counts["params"] - experts * (E - k) // E
    # compute-matched: the active FFN is as wide as gpt3's dense one
    assert model.config.expert_d_ff * k == make("gpt3").config.d_ff


# ---- image stub --------------------------------------------------------------------------


def test_image_gradients_reach_the_patch_projection():
    model = make("gpt4").train()
    x, y = tokens(2, 12), tokens(2, 12, seed=7)
    model(x, targets=y, images=images(2)).loss.backward()
    grad = model.image_prefix.projection.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.image_prefix.position.weight.grad.abs().sum() > 0


def test_gpt4_text_only_input_works():
    model = make("gpt4").train()
    out = model(tokens(2, 12), targets=tokens(2, 12, seed=7))
    assert out.logits.shape == (2, 12, VOCAB) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.image_prefix.projection.weight.grad is None


def test_image_prefix_projects_each_patch_in_row_major_order():
    prefix = make("gpt4").image_prefix  # 16×16 images, 4×4 patches
    pictures = images(2)
    with torch.no_grad():
        vectors = prefix(pictures)
        assert vectors.shape == (2, 16, 64)
        for i in range(4):
            for j in range(4):
                patch = pictures[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].reshape(2, -1)  # (C, P, P) order
                expected = prefix.projection(patch) + prefix.position.weight[4 * i + j]
                torch.testing.assert_close(vectors[:, 4 * i + j], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 15, 16), (2, 3, 16, 10)])
def test_image_sides_not_multiple_of_the_patch_raise(shape):
    model = make("gpt4")  # patch 4
    with pytest.raises(ValueError, match="multiples of the patch size 4"):
        model(tokens(2, 8), images=torch.randn(shape))


def test_images_with_wrong_channels_or_on_a_text_model_raise():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        make("gpt4")(tokens(2, 8), images=torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="no image input"):
        make("gpt2")(tokens(2, 8), images=images(2))


# ---- configuration round trips -----------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_config_round_trips_through_json_and_yaml(arch):
    config = get(arch).config("nano")
    assert ModelConfig.from_json(config.to_json()) == config
    assert ModelConfig.from_yaml(config.to_yaml()) == config
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("arch,size", [("gpt3", "13b"), ("gpt3", "175b"), ("gpt4", "1.3b-e16"), ("gpt1", "117m")])
def test_paper_size_configs_round_trip(arch, size):
    config = get(arch).config(size)
    assert ModelConfig.from_json(config.to_json()) == config
    assert ModelConfig.from_yaml(config.to_yaml()) == config


@pytest.mark.parametrize("arch", ARCHS)
def test_build_from_a_round_tripped_config_gives_the_same_model(arch):
    model = make(arch, seed=11).eval()
    config = ModelConfig.from_json(model.config.to_json())
    torch.manual_seed(11)
    rebuilt = build_from_config(config).eval()
    assert type(rebuilt) is type(model)
    original, copy = model.state_dict(), rebuilt.state_dict()
    assert original.keys() == copy.keys()
    assert all(torch.equal(original[name], copy[name]) for name in original)
    x = tokens(2, 10)
    extra = {"images": images(2)} if arch == "gpt4" else {}
    with torch.no_grad():
        assert torch.equal(model(x, **extra).logits, rebuilt(x, **extra).logits)
    # a plain dict (as read from config.json) works too
    assert type(build_from_config(model.config.to_dict())) is type(model)


def test_config_replace_recomputes_derived_defaults():
    config = get("gpt4").config("nano")  # d_model 64, 4 heads, context 64
    wider = config.replace(d_model=128)
    assert (wider.d_ff, wider.d_head, wider.expert_d_ff) == (512, 32, 256)
    more_heads = config.replace(n_head=8)
    assert more_heads.d_head == 8 and more_heads.d_attn == 64
    longer = config.replace(context=512)
    assert (longer.window, longer.banded_block) == (64, 64)
    # explicitly set values are kept
    custom = get("gpt3").config("nano", d_ff=100, window=8)
    assert custom.replace(d_model=128).d_ff == 100
    assert custom.replace(context=512).window == 8
    assert config.replace(top_k=1).expert_d_ff == 256


# ---- bad input ---------------------------------------------------------------------------


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown architecture 'gpt5'") as error:
        build("gpt5", "nano")
    for name in ARCHS:
        assert name in str(error.value)


def test_unknown_size_lists_the_sizes():
    with pytest.raises(ValueError, match="unknown size '7b' for gpt2") as error:
        build("gpt2", "7b")
    for size in ("nano", "micro", "124m", "355m", "774m", "1558m"):
        assert size in str(error.value)


@pytest.mark.parametrize(
    "arch,overrides,message",
    [
        ("gpt2", {"n_head": 5}, r"d_model \(64\) must be divisible by n_head \(5\)"),
        ("gpt4", {"top_k": 9}, r"top_k must be between 1 and n_experts \(8\), got 9"),
        ("gpt4", {"top_k": 0}, "top_k must be between"),
        ("gpt3", {"window": 0}, "window must be at least 1 token, got 0"),
        ("gpt2", {"d_model": 0}, "d_model must be a positive integer"),
        ("gpt2", {"norm_placement": "middle"}, "norm_placement must be one of"),
        ("gpt2", {"attention_pattern": ("dense", "global")}, "attention kind 'global' is unknown"),
        ("gpt4", {"capacity_factor": 0.0}, "capacity_factor must be positive"),
        ("gpt4", {"image_size": 18}, r"image_size \(18\) must be a multiple of patch_size \(4\)"),
        ("gpt2", {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_configs_raise_a_value_error_with_a_sentence(arch, overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        build(arch, "nano", **overrides)
    assert str(error.value).endswith(".")


def test_unknown_config_field_is_named():
    with pytest.raises(ValueError, match=r"unknown model config field\(s\) \['n_layers'\]"):
        build("gpt2", "nano", n_layers=3)


@pytest.mark.parametrize("arch", ARCHS)
def test_sequence_longer_than_context_raises(arch):
    model = make(arch)
    with pytest.raises(ValueError, match="sequence of 65 positions is longer than the context of 64"):
        model(tokens(1, 65))


def test_text_plus_image_longer_than_context_raises():
    with pytest.raises(ValueError, match="sequence of 66 positions"):
        make("gpt4")(tokens(1, 50), images=images(1))  # 16 patches + 50 tokens


def test_package_exports_the_contract():
    for name in ("build", "get", "available", "register", "unregister", "build_from_config", "ModelConfig"):
        assert hasattr(architectures, name)
    assert set(ARCHS) <= set(architectures.available())


def test_banded_kernel_applies_attention_dropout():
    """Dropout on the attention probabilities, as SDPA's dropout_p: random, unbiased, off at p=0."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=generator) for _ in range(3))
    plain = banded_attention_blocked(q, k, v, 8, 4)
    torch.manual_seed(0)
    dropped = [banded_attention_blocked(q, k, v, 8, 4, dropout_p=0.5) for _ in range(400)]
    assert (dropped[0] - plain).abs().max() > 0.1 and (dropped[0] - dropped[1]).abs().max() > 0.1
    torch.testing.assert_close(torch.stack(dropped).mean(0), plain, atol=0.15, rtol=0)
    torch.testing.assert_close(banded_attention_blocked(q, k, v, 8, 4, dropout_p=0.0), plain)


def test_banded_layer_uses_attention_dropout_in_training_only():
    config = get("gpt3").config("nano", window=8, dropout=0.5)
    layer = CausalSelfAttention(config, window=8)
    layer.resid_dropout = torch.nn.Identity()  # leave only the attention dropout
    x = torch.randn(2, 32, config.d_model)
    layer.eval()
    with torch.no_grad():
        evaluated = layer(x)
        torch.testing.assert_close(layer(x), evaluated)
        layer.train()
        trained = layer(x)
    assert (trained - evaluated).abs().max() > 1e-3


# ---- self-description: kernels, parameters unused by text, the FFN contract -----------------


def test_every_ffn_returns_its_output_and_auxiliary_terms():
    """The block treats every FFN alike: ``(output, weighted aux terms)``, ``{}`` for the dense MLP."""
    x = torch.randn(2, 5, 64)
    out, aux = make("gpt2").blocks[0].ffn(x)
    assert out.shape == x.shape and aux == {}
    out, aux = make("gpt4").blocks[0].ffn(x)
    assert out.shape == x.shape and set(aux) == {"moe_balance", "moe_z", "moe_dropped_fraction"}


def test_kernels_name_what_the_layers_run_in_training_and_in_evaluation(monkeypatch):
    """gpt4 trains through the capacity buffer and evaluates dropless (sorted by expert);
    its banded layers run the blocked kernel on the CPU. The description says so."""
    model = make("gpt4")
    ran = []
    for path in ("_forward_capacity", "_forward_sorted"):
        original = getattr(MoE, path)
        monkeypatch.setattr(MoE, path, lambda self, x, _o=original, _p=path: ran.append(_p) or _o(self, x))
    blocked = architectures.attention.banded_attention_blocked
    monkeypatch.setattr(architectures.attention, "banded_attention_blocked",
                        lambda *args, **kwargs: ran.append("blocked") or blocked(*args, **kwargs))
    described = model.kernels(64, "cpu")
    assert set(described) == {"training", "evaluation"}

    model.train()(tokens(1, 64))
    assert set(ran) == {"_forward_capacity", "blocked"}
    assert described["training"]["moe_dispatch"].startswith("capacity 1.25")
    assert described["training"]["banded_attention"].startswith("blocked (window 32 + block 32")
    ran.clear()
    with torch.no_grad():
        model.eval()(tokens(1, 64))
    assert set(ran) == {"_forward_sorted", "blocked"}
    assert described["evaluation"]["moe_dispatch"].startswith("dropless: sorted by expert")
    assert described["evaluation"]["dense_attention"] == "sdpa causal"

    assert make("gpt4", capacity_factor=None).kernels(64, "cpu")["training"]["moe_dispatch"].startswith("dropless")
    covered = make("gpt3").kernels(32, "cpu")  # the window (32) covers the sequence
    assert covered["training"]["banded_attention"] == "sdpa causal (the window covers the sequence)"
    assert "moe_dispatch" not in covered["training"]


def test_parameters_unused_by_text_are_those_a_text_batch_leaves_without_gradient():
    for arch in ARCHS:
        model = make(arch)
        model(tokens(2, 16), targets=tokens(2, 16, seed=3)).loss.backward()
        no_gradient = sorted(name for name, p in model.named_parameters() if p.grad is None)
        assert sorted(model.parameters_unused_by_text()) == no_gradient, arch
    assert make("gpt4").parameters_unused_by_text()  # the image prefix


def test_seq_len_is_checked_against_the_context_in_one_place():
    from harness.flops import forward_breakdown

    config = get("gpt2").config("nano")
    assert config.check_seq_len(None) == 64 and config.check_seq_len(16) == 16
    with pytest.raises(ValueError, match=r"seq_len 65 is longer than the context of 64 \(gpt2 nano\); use at most 64"):
        config.check_seq_len(65)
    with pytest.raises(ValueError, match="seq_len must be a positive whole number, got 0"):
        forward_breakdown(config, 0)  # was read as "the context"
