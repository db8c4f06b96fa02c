"""Packed evaluation: scored-position logits and packed rows give the numbers of one plain forward per request."""

from __future__ import annotations

import pytest
import torch

from architectures import build
from harness.evaluation.lm import HarnessLM
from harness.evaluation.packing import make_batch, make_units, pack_rows, plan_batches
from harness.speed_ratios import FullLogitsOnly, TokenIdTokenizer

ARCHS = ("gpt1", "gpt2", "gpt3", "gpt4")
VOCAB = 257


def nano(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    # gpt3/gpt4 nano: context 64, window 32, so banded layers really cut sequences here
    return build(arch, size="nano", vocab_size=VOCAB).eval()


def tokens(n: int, seed: int) -> list[int]:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def requests(L: int) -> list[tuple]:
    """Multiple choice (shared contexts, some near the context limit), single requests, a truncated one."""
    out = []
    for q in range(6):
        context = tokens(5 + 11 * q, q)
        out += [(None, context, tokens(1 + (3 * c + q) % 9, 100 + 10 * q + c)) for c in range(4)]
    out += [(None, tokens(3 + 7 * i, 200 + i), tokens(1 + i % 5, 300 + i)) for i in range(8)]
    out.append((None, tokens(L + 20, 400), tokens(6, 401)))  # context left-truncated
    out.append((None, tokens(L - 3, 402), tokens(4, 403)))  # crosses the limit: not shared
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_scored_position_logits_equal_full_logits(arch):
    model = nano(arch)
    idx = torch.randint(0, VOCAB, (3, 64), generator=torch.Generator().manual_seed(1))
    flat = torch.tensor([0, 5, 63, 64 + 10, 2 * 64 + 40, 2 * 64 + 63])
    with torch.no_grad():
        full = model(idx).logits.flatten(0, 1)[flat]
        scored = model(idx, logit_positions=flat).logits
    torch.testing.assert_close(scored, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_log_likelihoods_equal_one_full_forward_per_request(arch):
    """fp32: packed rows, shared contexts and scored-position logits change no log-likelihood by more than 1e-5."""
    model = nano(arch)
    reqs = requests(model.config.context)
    packed_lm = HarnessLM(model, TokenIdTokenizer(VOCAB, eot_id=256), batch_size=4, row_tokens=128)
    assert packed_lm.packing
    packed = packed_lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    plain = HarnessLM(FullLogitsOnly(model), TokenIdTokenizer(VOCAB, eot_id=256), batch_size=1)
    assert not plain.packing and not plain.scored_logits_only
    reference = plain._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert [g for _, g in packed] == [g for _, g in reference]
    for (lp, _), (ref, _) in zip(packed, reference):
        assert abs(lp - ref) <= 1e-5  # sums of up to ~50 nats; measured ≤ 1.5e-6


def test_shared_context_runs_once_and_rows_fit():
    L, row_tokens = 64, 100
    context = tokens(30, 1)
    windows = [(context, tokens(n, 10 + n)) for n in (1, 4, 6)] + [(tokens(50, 2), tokens(3, 3))]
    units = make_units(windows, L, row_tokens)
    shared = [u for u in units if len(u.scored) == 3]
    assert len(shared) == 1 and len(shared[0]) == 30 + 0 + 3 + 5  # context once, each continuation but its last token
    assert sorted(len(u) for u in units) == [38, 52]
    rows = pack_rows(units, row_tokens)
    assert len(rows) == 1  # 38 + 52 ≤ 100
    batch = make_batch(rows)
    mask = batch.attention_mask[0]
    # the 4-token continuation (offsets 31..33 of the shared unit) sees the context and itself, not its sibling
    first = next(u for u in rows[0] if len(u.scored) == 3)
    start = 0 if rows[0][0] is first else len(rows[0][0])
    branch_2 = [start + o for o in first.scored[1][1:]]
    branch_3 = [start + o for o in first.scored[2][1:]]
    assert mask[branch_3[0], start : start + 30].all() and not mask[branch_3[0], branch_2].any()
    assert batch.positions[0, branch_2[0]] == batch.positions[0, branch_3[0]] == 30


def test_rows_never_exceed_row_tokens_and_every_window_is_scored_once():
    windows = [(tokens(1 + i % 60, i), tokens(1 + i % 7, 1000 + i)) for i in range(200)]
    batches = plan_batches(windows, 64, 128, 8)
    seen = []
    for rows in batches:
        width = max(sum(len(u) for u in row) for row in rows)
        assert width <= 128 and (len(rows) == 1 or len(rows) * width <= 8 * 128)
        seen += make_batch(rows).windows
    assert sorted(seen) == list(range(200))


def test_packed_input_errors():
    model = nano("gpt2")
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="both positions and attention_mask"):
        model(idx, positions=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="logit_positions"):
        model(idx, targets=idx, logit_positions=torch.tensor([0]))
    with pytest.raises(ValueError, match="packing=True"):
        HarnessLM(FullLogitsOnly(model), TokenIdTokenizer(VOCAB, eot_id=256), packing=True)
