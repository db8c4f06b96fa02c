"""The KV cache (architectures/kv_cache.py) and cached generation (harness/serving/generation.py).

Cached, batched generation of ragged prompts must equal recomputing the full forward pass for
each prompt alone (tokens exactly, log-probabilities to 1e-5 in float32), past the band of the
banded layers; banded layers hold a fixed ring of w positions; the analytic KV bytes equal the
bytes the cache holds.
"""

from __future__ import annotations

import pytest
import torch

from architectures import build, get
from architectures.kv_cache import RingLayerCache, kv_bytes_per_token, kv_cache_bytes, new_kv_cache
from harness.serving import greedy_generate, left_pad

ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")
VOCAB = 97
WINDOW = 6
LOGPROB_TOL = 1e-5


def model_for(arch: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    settings = dict(vocab_size=VOCAB, init_std=0.1)
    if arch in ("gpt3", "gpt4"):
        settings["window"] = WINDOW
    if arch == "gpt4":
        settings["capacity_factor"] = 0.5  # training would drop tokens; decoding must not
    return build(arch, "nano", **{**settings, **overrides}).eval()


def prompt(n: int, seed: int) -> list[int]:
    return torch.randint(1, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def recompute(model, prompt_tokens: list[int], steps: int) -> tuple[list[int], list[float]]:
    """Greedy tokens and their log-probabilities, the full forward pass rerun at every step."""
    sequence, chosen, logprobs = list(prompt_tokens), [], []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([sequence])).logits[0, -1].float()
            token = int(logits.argmax())
            chosen.append(token)
            logprobs.append(float(torch.log_softmax(logits, -1)[token]))
            sequence.append(token)
    return chosen, logprobs


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_ragged_cached_generation_equals_full_recomputation(arch):
    model = model_for(arch)
    prompts = [prompt(3, 1), prompt(14, 2), prompt(9, 3), prompt(1, 4)]  # 14 > the window of 6
    steps = 4 * WINDOW  # far past the window
    out = greedy_generate(model, prompts, steps, logprobs=True)
    for row, p in enumerate(prompts):
        tokens, logprobs = recompute(model, p, steps)
        assert out.tokens[row] == tokens, (arch, row)
        assert out.logprobs[row] == pytest.approx(logprobs, abs=LOGPROB_TOL, rel=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_feeding_with_padding_equals_the_unpadded_forward(arch):
    model = model_for(arch, seed=1)
    rows = [prompt(30, 5), prompt(22, 6)]
    batch, padding = left_pad(rows)
    with torch.no_grad():
        cache = model.new_kv_cache(2, max_tokens=30, left_padding=padding)
        pieces = [model(batch[:, :11], kv_cache=cache).logits]  # a first chunk past the window
        pieces.append(model(batch[:, 11:15], kv_cache=cache).logits)  # a chunk after cached positions
        pieces.append(model(batch[:, 15:24], kv_cache=cache).logits)  # one longer than the window
        pieces += [model(batch[:, t : t + 1], kv_cache=cache).logits for t in range(24, 30)]
        cached = torch.cat(pieces, dim=1)
        for row, tokens in enumerate(rows):
            alone = model(torch.tensor([tokens])).logits[0]
            torch.testing.assert_close(cached[row, padding[row] :], alone, atol=1e-5, rtol=0)


def test_a_ragged_batch_without_cache_support_is_refused():
    model = model_for("gpt2")
    with pytest.raises(ValueError, match="empty prompt"):
        greedy_generate(model, [[1, 2], []], 3)
    with pytest.raises(ValueError, match="left_padding needs 2"):
        model.new_kv_cache(2, left_padding=[1])


def test_ring_buffers_stay_w_positions_past_the_window():
    model = model_for("gpt3", attention_pattern=("banded",))  # banded only
    cache = model.new_kv_cache(2)
    rings = [layer for layer in cache.layers if isinstance(layer, RingLayerCache)]
    assert len(rings) == model.config.n_layer
    pointers = [(r.keys.data_ptr(), r.values.data_ptr()) for r in rings]
    shapes = {tuple(r.keys.shape) for r in rings}
    assert shapes == {(2, model.config.n_head, WINDOW, model.config.d_head)}
    x = torch.tensor([prompt(4 * WINDOW + 3, 7)] * 2)
    with torch.no_grad():
        model(x[:, :WINDOW + 2], kv_cache=cache)
        for t in range(WINDOW + 2, x.shape[1]):
            model(x[:, t : t + 1], kv_cache=cache)
            assert {tuple(r.keys.shape) for r in rings} == shapes
    assert [(r.keys.data_ptr(), r.values.data_ptr()) for r in rings] == pointers
    # the whole cache of a banded-only stack costs the same at any length past the window
    assert model.new_kv_cache(1, max_tokens=2 * WINDOW).nbytes == model.new_kv_cache(1).nbytes


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tokens", [WINDOW - 2, 40])
def test_analytic_kv_bytes_equal_the_bytes_the_cache_holds(arch, tokens):
    model = model_for(arch)
    cache = model.new_kv_cache(3, max_tokens=tokens)
    assert cache.nbytes == kv_cache_bytes(model.config, tokens, batch_size=3, bytes_per_element=4)
    half = model.to(torch.bfloat16).new_kv_cache(3, max_tokens=tokens)
    assert half.nbytes == kv_cache_bytes(model.config, tokens, batch_size=3, bytes_per_element=2)


@pytest.mark.parametrize("size", ["nano", "mini", "micro"])
def test_gpt3_holds_at_most_0_6_of_gpt2s_kv_bytes_at_the_context(size):
    gpt2, gpt3 = get("gpt2").config(size), get("gpt3").config(size)
    context = gpt2.context
    assert gpt3.context == context and gpt3.d_model == gpt2.d_model
    measured = new_kv_cache(gpt3, 1).nbytes / new_kv_cache(gpt2, 1).nbytes
    assert measured == pytest.approx(kv_bytes_per_token(gpt3, context) / kv_bytes_per_token(gpt2, context))
    # half the layers banded: window 32 of a context of 64 (nano), of 256 (mini, micro)
    assert measured <= (0.75 if size == "nano" else 0.6)


def test_under_autocast_an_empty_cache_takes_the_compute_dtype():
    model = model_for("gpt3")
    cache = model.new_kv_cache(1, max_tokens=20)
    x = torch.tensor([prompt(12, 8)])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x[:, :10], kv_cache=cache)
        model(x[:, 10:11], kv_cache=cache)
    assert {layer.keys.dtype for layer in cache.layers} == {torch.bfloat16}
    assert cache.nbytes == kv_cache_bytes(model.config, 20, bytes_per_element=2)


@pytest.mark.parametrize("arch", ["gpt3", "gpt4"])
def test_evaluation_generates_ragged_batches_as_each_prompt_alone(arch):
    from harness.data.tokenizer import SyntheticTokenizer
    from harness.evaluation import HarnessLM

    lm = HarnessLM(model_for(arch, seed=2), SyntheticTokenizer(VOCAB), batch_size=4)
    prompts = [prompt(2, 9), prompt(17, 10), prompt(8, 11)]
    together = lm.greedy_generate(prompts, 20, stop_at_eot=False)
    assert together == [lm.greedy_generate([p], 20, stop_at_eot=False)[0] for p in prompts]
    assert together == [lm.greedy_generate([p], 20, use_cache=False, stop_at_eot=False)[0] for p in prompts]
