"""Evaluation speed against lm-eval's own ``hf`` backend (``HFLM``) on identical work.

Our gpt2 ``micro`` (random init, seed 0) is copied by hand into a ``transformers``
``GPT2LMHeadModel`` (``Conv1D`` weights are our ``nn.Linear`` weights transposed; our tanh
GELU is ``gelu_new``; tied head), and our byte-level BPE (4,096 tokens, trained on Tiny
Shakespeare's text) is wrapped in a ``PreTrainedTokenizerFast`` over the same
``tokenizers`` object. Requests are lm-eval's own, built by its task code from the local
copies in ``../shared/data/lm_eval``: the first ``limit`` documents of piqa, hellaswag and
lambada_openai (0-shot), all of their ``loglikelihood`` requests. Both backends are
``TemplateLM``s, so they encode the requests identically; ``check_equal`` verifies the
log-likelihoods agree to 1e-4 before anything is timed.

Timed, interleaved, in one process (fp32, the same thread count):

- ``ours``: ``HarnessLM`` as evaluation runs it (packed rows, shared contexts, LM head at
  scored positions only), batch 16 rows.
- ``ours_one_per_forward``: one request per forward pass, full logits (the basic model
  contract; what a plain loop over requests does).
- ``hflm``: ``lm_eval.models.huggingface.HFLM`` at the same batch size of 16 requests.

    python benchmarks/eval_vs_hflm.py [--limit 200] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASKS = ("piqa", "hellaswag", "lambada_openai")
BATCH_SIZE = 16


class PlainContract(torch.nn.Module):
    """Our model behind the basic forward contract only: full logits, no packing."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, idx, kv_cache=None):
        return self.model(idx, kv_cache=kv_cache)


def make_tokenizer():
    from harness.data import train_bpe
    from harness.paths import data_dir

    text = (data_dir() / "corpora" / "tinyshakespeare.txt").read_text()
    return train_bpe([text[: int(0.9 * len(text))]], vocab_size=4096)


def make_model(vocab_size: int, size: str = "micro") -> torch.nn.Module:
    import architectures

    torch.manual_seed(0)
    return architectures.build("gpt2", size=size, vocab_size=vocab_size).eval()


def to_transformers(model: torch.nn.Module):
    """The same weights in a ``transformers.GPT2LMHeadModel`` (fp32, eval mode)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    if c.activation != "gelu_tanh" or c.norm_placement != "pre" or not c.tie_embeddings or not c.bias:
        raise ValueError("only a GPT-2-layout model (pre-LN, tanh GELU, biases, tied head) maps onto GPT2LMHeadModel.")
    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.context, n_embd=c.d_model, n_layer=c.n_layer, n_head=c.n_head,
            n_inner=c.d_ff, activation_function="gelu_new", layer_norm_epsilon=c.layer_norm_eps,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        )
    )
    ours = model.state_dict()
    state = {"transformer.wte.weight": ours["embed.token.weight"], "transformer.wpe.weight": ours["embed.position.weight"],
             "transformer.ln_f.weight": ours["ln_f.weight"], "transformer.ln_f.bias": ours["ln_f.bias"]}
    names = {"ln_1": "ln_1", "ln_2": "ln_2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
             "mlp.c_fc": "ffn.fc", "mlp.c_proj": "ffn.proj"}
    for i in range(c.n_layer):
        for theirs, mine in names.items():
            weight = ours[f"blocks.{i}.{mine}.weight"]
            state[f"transformer.h.{i}.{theirs}.weight"] = weight if theirs.startswith("ln") else weight.t().contiguous()
            state[f"transformer.h.{i}.{theirs}.bias"] = ours[f"blocks.{i}.{mine}.bias"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight" and not k.endswith(".attn.bias")]:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.eval()


def to_transformers_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer._tok, eos_token="<|endoftext|>")


def task_requests(limit: int, tasks=TASKS, task_data: str | os.PathLike | None = None) -> dict[str, list]:
    """lm-eval's loglikelihood ``Instance``s of the first ``limit`` documents of each task (0-shot)."""
    import tempfile

    from lm_eval.tasks import get_task_dict

    from harness.evaluation.tasks import task_manager, write_task_yamls
    from harness.paths import data_dir

    task_data = task_data or data_dir() / "lm_eval"
    out = {}
    with tempfile.TemporaryDirectory(prefix="harness-tasks-") as include_dir:
        builtins = write_task_yamls(list(tasks), include_dir, task_data=task_data)
        task_dict = get_task_dict(list(tasks), task_manager(include_dir, include_defaults=builtins))
        for name in tasks:
            task = task_dict[name]
            task.set_config(key="num_fewshot", value=0)
            task.build_all_requests(limit=limit, rank=0, world_size=1)
            out[name] = [i for i in task.instances if i.request_type == "loglikelihood"]
    return out


def make_backends(limit: int = 200):
    """(requests by task, {name: lm}) on one set of weights and one tokenizer."""
    from lm_eval.models.huggingface import HFLM

    from harness.evaluation.lm import HarnessLM

    tokenizer = make_tokenizer()
    model = make_model(tokenizer.vocab_size)
    hf_model, hf_tokenizer = to_transformers(model), to_transformers_tokenizer(tokenizer)
    backends = {
        "ours": HarnessLM(model, tokenizer, batch_size=BATCH_SIZE),
        "ours_one_per_forward": HarnessLM(PlainContract(model), tokenizer, batch_size=1),
        "hflm": HFLM(pretrained=hf_model, tokenizer=hf_tokenizer, batch_size=BATCH_SIZE, device="cpu"),
    }
    return task_requests(limit), backends


def loglikelihoods(lm, requests) -> list[tuple[float, bool]]:
    return [tuple(r) for r in lm.loglikelihood(requests, disable_tqdm=True)]


def check_equal(requests, backends, atol: float = 1e-4, rtol: float = 1e-6) -> float:
    """Largest |difference| of any backend's log-likelihood from ours; raises beyond
    ``atol + rtol·|ours|`` (fp32 sums over up to 256 tokens of ~8 nats each) or on a greedy mismatch."""
    reference = loglikelihoods(backends["ours"], requests)
    worst = 0.0
    for name, lm in backends.items():
        other = loglikelihoods(lm, requests)
        for (a, _), (b, _) in zip(reference, other):
            worst = max(worst, abs(a - b))
            if abs(a - b) > atol + rtol * abs(a):
                raise AssertionError(f"{name}'s log-likelihood {b} differs from ours ({a}) by more than {atol} + {rtol}·|ours|.")
        if [g for _, g in other] != [g for _, g in reference]:
            raise AssertionError(f"{name} and ours disagree on which continuations are greedy.")
    return worst


def measure(limit: int = 200, repeats: int = 3) -> dict:
    """Best-of-``repeats`` wall time of each backend over all requests, interleaved; ratios."""
    by_task, backends = make_backends(limit)
    requests = [r for task in by_task.values() for r in task]
    max_diff = check_equal(requests, backends)
    times = {name: float("inf") for name in backends}
    cpu = dict(times)
    for _ in range(repeats):
        for name, lm in backends.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            loglikelihoods(lm, requests)
            times[name] = min(times[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - cpu_start)
    return {
        "requests": {task: len(r) for task, r in by_task.items()},
        "limit": limit,
        "threads": torch.get_num_threads(),
        "max_abs_diff": max_diff,
        "seconds": times,
        "ours_vs_one_per_forward": times["ours_one_per_forward"] / times["ours"],
        "ours_vs_hflm": times["hflm"] / times["ours"],
        # process CPU time: with one thread, robust to other processes sharing the cores
        "cpu_seconds": cpu,
        "ours_vs_one_per_forward_cpu": cpu["ours_one_per_forward"] / cpu["ours"],
        "ours_vs_hflm_cpu": cpu["hflm"] / cpu["ours"],
        "load_average": os.getloadavg(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200, help="documents per task (default 200)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = measure(args.limit, args.repeats)
    s = r["seconds"]
    print(f"requests {r['requests']} ({sum(r['requests'].values())}), {r['threads']} thread(s), best of {args.repeats}, "
          f"load average {r['load_average'][0]:.2f}; max |Δ log-likelihood| vs ours {r['max_abs_diff']:.1e}")
    print(f"ours {s['ours']:.2f} s, one request per forward {s['ours_one_per_forward']:.2f} s, HFLM {s['hflm']:.2f} s")
    print(f"ours vs one-per-forward {r['ours_vs_one_per_forward']:.2f}x, ours vs HFLM {r['ours_vs_hflm']:.2f}x (wall); "
          f"{r['ours_vs_one_per_forward_cpu']:.2f}x, {r['ours_vs_hflm_cpu']:.2f}x (process CPU time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
