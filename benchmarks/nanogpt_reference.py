"""A faithful, self-contained nanoGPT GPT-2 (Karpathy's model.py) and a side-by-side timer.

The model below follows nanoGPT's ``model.py``: ``LayerNorm`` with optional bias,
``CausalSelfAttention`` (one ``c_attn`` projection, ``F.scaled_dot_product_attention`` with
``is_causal=True``), ``MLP`` (``c_fc`` → exact GELU → ``c_proj``), pre-LN ``Block``, ``GPT``
(token + learned position embeddings, final LayerNorm, ``lm_head`` tied to ``wte``, N(0, 0.02)
init with ``c_proj`` scaled by 1/sqrt(2·n_layer)), and ``configure_optimizers`` (decay on
≥ 2-D parameters, none on biases/gains; fused AdamW where torch has it for the device).
The training step follows ``train.py``: autocast context, ``GradScaler`` (a no-op unless
fp16), unscale, clip to 1.0, step, update, ``zero_grad(set_to_none=True)``.

``compare()`` times our ``gpt2`` (built from the registry, stepped by ``harness.bench``)
and this reference at the same shape in one process, **alternating** steps (the order
swapped every step) so machine load hits both alike, and reports the medians and the
ratio ours/nanoGPT in tokens/s.

Two configurations for the reference:

- ``matched`` (default): the same process settings and precision as ours — what
  ``harness.device.configure_device`` chose (on this CPU: bf16 autocast, denormals
  flushed, fused AdamW). This compares implementations.
- ``nanogpt`` (``--nanogpt-cpu-defaults``): exactly what nanoGPT's ``train.py`` does on a
  CPU: no autocast (``nullcontext`` when ``device_type == 'cpu'``), fused AdamW only on
  CUDA, denormals not flushed (the flag is switched around each reference step).
  On CUDA both are the same as ``matched``. ``compile`` is off for both on the CPU.

Usage::

    python benchmarks/nanogpt_reference.py                 # gpt2 micro shape, batch 8 x 256
    python benchmarks/nanogpt_reference.py --steps 30 --format json
    python benchmarks/nanogpt_reference.py --nanogpt-cpu-defaults
    python benchmarks/nanogpt_reference.py --threads 1   # on a shared machine: CPU time is load-proof

Differences in the model that do not change the shape: nanoGPT uses exact GELU where our
GPT-2 uses the tanh approximation (as GPT-2 did), and nanoGPT's ``ignore_index`` is -1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ---- nanoGPT model.py -------------------------------------------------------------------


class LayerNorm(nn.Module):
    """LayerNorm but with an optional bias. PyTorch doesn't support simply bias=False."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def get_num_params(self, non_embedding=True):
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        device = idx.device
        b, t = idx.size()
        assert t <= self.config.block_size, f"Cannot forward sequence of length {t}, block size is only {self.config.block_size}"
        pos = torch.arange(0, t, dtype=torch.long, device=device)
        tok_emb = self.transformer.wte(idx)
        pos_emb = self.transformer.wpe(pos)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits = self.lm_head(x[:, [-1], :])
            loss = None
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, fused=None):
        """nanoGPT's optimizer; ``fused=None`` is nanoGPT's rule (fused only on CUDA)."""
        param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
        nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
        optim_groups = [
            {"params": decay_params, "weight_decay": weight_decay},
            {"params": nodecay_params, "weight_decay": 0.0},
        ]
        fused_available = "fused" in inspect.signature(torch.optim.AdamW).parameters
        use_fused = fused_available and device_type == "cuda" if fused is None else fused
        extra_args = dict(fused=True) if use_fused else dict()
        return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, **extra_args)


# ---- the side-by-side timer -------------------------------------------------------------


class NanoGPTStep:
    """nanoGPT train.py's inner step (grad_accum 1) around a ``harness.bench.TrainingStep``'s batches."""

    def __init__(self, model, optimizer, autocast, batches, device, flush_denormal: bool | None, restore_flush=True):
        self.model, self.optimizer, self.autocast = model, optimizer, autocast
        self.batches, self.device = batches, device
        self.flush_denormal, self.restore_flush = flush_denormal, restore_flush
        device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(device_type, enabled=False)  # enabled only for float16
        self.n = 0

    def step(self) -> float:
        from harness.bench import synchronize

        x, y = self.batches[self.n % len(self.batches)]
        self.n += 1
        if self.flush_denormal is not None:  # nanoGPT's own process setting for this step
            torch.set_flush_denormal(self.flush_denormal)
        self.model.train()
        synchronize(self.device)
        start = time.perf_counter()
        with self.autocast():
            _, loss = self.model(x, y)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        elapsed = time.perf_counter() - start
        if self.flush_denormal is not None:
            torch.set_flush_denormal(self.restore_flush)  # back to the harness's process setting
        return elapsed


def compare(
    *,
    steps: int = 20,
    warmup: int = 5,
    batch_size: int = 8,
    seq_len: int = 256,
    size: str = "micro",
    dtype: str | None = None,
    device: str | None = None,
    nanogpt_cpu_defaults: bool = False,
    overrides: dict | None = None,
    seed: int = 0,
) -> dict:
    """Time our gpt2 and nanoGPT's GPT alternately; return medians and the ratio ours/nanoGPT."""
    import contextlib

    import architectures
    from harness.bench import TrainingStep
    from harness.device import configure_device

    settings = configure_device(device, dtype)
    config = architectures.get("gpt2").config(size, **(overrides or {}))
    if seq_len > config.context:
        raise ValueError(f"--seq-len {seq_len} is longer than gpt2 {size}'s context of {config.context}.")
    torch.manual_seed(seed)
    ours_model = architectures.get("gpt2").build(config).to(settings.device)
    ours = TrainingStep(ours_model, settings, batch_size, seq_len, config.vocab_size, seed=seed)

    torch.manual_seed(seed)
    ref_config = GPTConfig(
        block_size=config.context,
        vocab_size=config.vocab_size,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.d_model,
        dropout=config.dropout,
        bias=config.bias,
    )
    ref_model = GPT(ref_config).to(settings.device)
    device_type = settings.device_type
    cpu_defaults = nanogpt_cpu_defaults and device_type == "cpu"
    if cpu_defaults:
        autocast = contextlib.nullcontext  # train.py: ctx = nullcontext() if device_type == 'cpu'
        fused = None  # train.py's rule: fused only on CUDA
        flush = False
    else:
        autocast = settings.autocast
        fused = settings.fused_adamw
        flush = None  # the process setting, as for ours
    optimizer = ref_model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type, fused=fused)
    reference = NanoGPTStep(
        ref_model, optimizer, autocast, ours.batches, settings.device, flush, restore_flush=settings.flush_denormal
    )

    runners = {"ours": ours.step, "nanogpt": reference.step}
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {"ours": [], "nanogpt": []}
    cpu_times: dict[str, list[float]] = {"ours": [], "nanogpt": []}
    order = ["ours", "nanogpt"]
    for _ in range(steps):
        for name in order:
            cpu_start = time.process_time()
            times[name].append(runners[name]())
            cpu_times[name].append(time.process_time() - cpu_start)
        order.reverse()  # alternate who goes first
    tokens = batch_size * seq_len
    medians = {name: statistics.median(values) for name, values in times.items()}
    ours_params = ours_model.param_counts()["params"]
    ref_params = sum(p.numel() for p in ref_model.parameters())
    return {
        "shape": {"arch": "gpt2", "size": size, "batch_size": batch_size, "seq_len": seq_len,
                  "vocab_size": config.vocab_size, "n_layer": config.n_layer, "d_model": config.d_model},
        "params": {"ours": ours_params, "nanogpt": ref_params},
        "reference_config": "nanogpt train.py CPU defaults" if cpu_defaults else "matched (same settings as ours)",
        "overrides": dict(overrides or {}),
        "settings": settings.to_dict(),
        "steps": steps,
        "warmup": warmup,
        "median_step_s": medians,
        "tokens_per_s": {name: tokens / m for name, m in medians.items()},
        "ratio_ours_over_nanogpt": medians["nanogpt"] / medians["ours"],
        # the fastest step of each: on a shared machine the least disturbed by other processes
        "min_step_s": {name: min(values) for name, values in times.items()},
        "ratio_ours_over_nanogpt_min": min(times["nanogpt"]) / min(times["ours"]),
        "ratio_per_pair_median": statistics.median(n / o for o, n in zip(times["ours"], times["nanogpt"])),
        # CPU time of the process per step: robust to other processes' load with --threads 1
        # (with more threads it also counts OpenMP's spin-waiting)
        "median_cpu_s": {name: statistics.median(values) for name, values in cpu_times.items()},
        "ratio_ours_over_nanogpt_cpu": statistics.median(cpu_times["nanogpt"]) / statistics.median(cpu_times["ours"]),
        "threads": torch.get_num_threads(),
        "step_s": times,
    }


def main(argv: list[str] | None = None) -> int:
    from architectures.config import parse_overrides
    from harness.cli import add_set_argument

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per model first (default 5)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--size", default="micro", help="our gpt2 size preset to match (default micro)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), help="default: harness.device's choice")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--nanogpt-cpu-defaults", action="store_true", help="reference as train.py runs on a CPU")
    add_set_argument(parser, help="override our gpt2's config, e.g. --set activation=gelu (nanoGPT's exact GELU)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's, = the cores)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    result = compare(
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        size=args.size,
        dtype=args.dtype,
        device=args.device,
        nanogpt_cpu_defaults=args.nanogpt_cpu_defaults,
        overrides=parse_overrides(args.set),
    )
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    shape = result["shape"]
    print(
        f"gpt2 {shape['size']} shape: batch {shape['batch_size']} x seq {shape['seq_len']}, vocab {shape['vocab_size']}, "
        f"{shape['n_layer']} layers x d {shape['d_model']}; params ours {result['params']['ours']:,}, "
        f"nanoGPT {result['params']['nanogpt']:,}"
    )
    print(f"settings: {'; '.join(result['settings']['notes'])}; reference: {result['reference_config']}")
    for name in ("ours", "nanogpt"):
        print(
            f"  {name:8s} median {result['median_step_s'][name] * 1e3:8.1f} ms/step  "
            f"{result['tokens_per_s'][name]:10,.0f} tokens/s  ({result['steps']} alternating steps)"
        )
    print(
        f"ratio ours / nanoGPT (tokens/s): {result['ratio_ours_over_nanogpt']:.3f} (medians); "
        f"{result['ratio_per_pair_median']:.3f} (median of adjacent-pair ratios); "
        f"{result['ratio_ours_over_nanogpt_min']:.3f} (fastest steps); "
        f"{result['ratio_ours_over_nanogpt_cpu']:.3f} (process CPU time, {result['threads']} threads)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
