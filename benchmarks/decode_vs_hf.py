"""Greedy decoding with our KV cache against Hugging Face ``generate`` on the same GPT-2 weights.

A random ``GPT2LMHeadModel`` (default 6 layers, 256 wide, 8 heads, vocabulary 4,096, context
256: the gpt2 ``micro`` shape; every parameter with its own random values, as
tools/make_tiny_hf_model.py makes them) is imported into our ``GPT`` (``harness.hf``). Both
decode ``--new-tokens`` tokens greedily with the cache on, after the same random prompt of
``--prompt-tokens`` tokens, at each ``--batch-sizes`` (rows of one length); the tokens must be
identical before anything is timed. Timed interleaved in one process (fp32, the same threads),
``--repeats`` times each; medians reported:

- ``ours``: ``harness.serving.greedy_generate`` (prefill, then one token per step);
- ``hf``: ``model.generate(do_sample=False, use_cache=True, min_new_tokens=max_new_tokens)``.

tokens/s = batch × new tokens / wall time of the whole call (prefill included, as a user sees it);
also per second of this process's CPU time (one thread: steady when other processes load the
machine, where wall-clock ratios are not).

    python benchmarks/decode_vs_hf.py [--batch-sizes 1 8] [--new-tokens 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))


def hf_gpt2(n_layer: int, d_model: int, n_head: int, vocab_size: int, context: int, seed: int = 0):
    """A random transformers GPT-2 with every parameter distinct (tools/make_tiny_hf_model.py)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    spec = importlib.util.spec_from_file_location("make_tiny_hf_model", ROOT / "tools" / "make_tiny_hf_model.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    config = GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=d_model, n_layer=n_layer, n_head=n_head,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    tool.randomize(model, seed)
    return model.eval()


def ours_from_hf(hf_model):
    """Our GPT with the same weights (the importer's own mapping)."""
    from architectures import build_from_config
    from harness.hf.families import config_from_hf
    from harness.hf.weights import state_from_hf

    config = config_from_hf(hf_model.config.to_dict())
    model = build_from_config(config)
    model.load_state_dict(state_from_hf("gpt2", config, hf_model.state_dict()))
    return model.eval()


def run_hf(hf_model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    with torch.inference_mode():
        out = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, use_cache=True,
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    return out[:, prompt.shape[1]:]


def run_ours(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    from harness.serving import greedy_generate

    return torch.tensor(greedy_generate(model, prompt.tolist(), new_tokens).tokens)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): with one thread, CPU time barely moves when
    other processes load the machine, wall time does."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(hf_model, model, batch_size: int, prompt_tokens: int, new_tokens: int, repeats: int) -> dict:
    prompt = torch.randint(1, model.config.vocab_size, (batch_size, prompt_tokens), generator=torch.Generator().manual_seed(1))
    ours_tokens, hf_tokens = run_ours(model, prompt, new_tokens), run_hf(hf_model, prompt, new_tokens)
    if not torch.equal(ours_tokens, hf_tokens):
        raise SystemExit(f"batch {batch_size}: the generated tokens differ; nothing timed.")
    times = {"ours": [], "hf": []}
    for _ in range(repeats):
        times["ours"].append(timed(lambda: run_ours(model, prompt, new_tokens)))
        times["hf"].append(timed(lambda: run_hf(hf_model, prompt, new_tokens)))
    tokens = batch_size * new_tokens
    wall = {name: tokens / statistics.median(t[0] for t in values) for name, values in times.items()}
    cpu = {name: tokens / statistics.median(t[1] for t in values) for name, values in times.items()}
    return {"batch_size": batch_size, "ours_tokens_per_s": wall["ours"], "hf_tokens_per_s": wall["hf"],
            "speedup": wall["ours"] / wall["hf"], "ours_tokens_per_cpu_s": cpu["ours"],
            "hf_tokens_per_cpu_s": cpu["hf"], "speedup_cpu_time": cpu["ours"] / cpu["hf"], "identical_tokens": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    context = max(256, args.prompt_tokens + args.new_tokens)
    hf_model = hf_gpt2(args.n_layer, args.d_model, args.n_head, args.vocab_size, context)
    model = ours_from_hf(hf_model)
    rows = [compare(hf_model, model, b, args.prompt_tokens, args.new_tokens, args.repeats) for b in args.batch_sizes]
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"rows": rows, "load_1min": load, "threads": args.threads}, indent=2))
        return
    print(f"GPT-2 {args.n_layer} layers x {args.d_model}, vocab {args.vocab_size}, fp32 CPU, {args.threads} thread(s), "
          f"prompt {args.prompt_tokens} + {args.new_tokens} new tokens, greedy, cache on; 1-min load {load:.2f}")
    for row in rows:
        print(f"batch {row['batch_size']}: ours {row['ours_tokens_per_s']:.0f} tokens/s, HF generate "
              f"{row['hf_tokens_per_s']:.0f} tokens/s -> {row['speedup']:.2f}x wall; per CPU second "
              f"{row['ours_tokens_per_cpu_s']:.0f} vs {row['hf_tokens_per_cpu_s']:.0f} -> {row['speedup_cpu_time']:.2f}x "
              "(identical tokens)")


if __name__ == "__main__":
    main()
