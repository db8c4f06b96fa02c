"""Make a tiny random Hugging Face checkpoint directory offline (for tests and the README).

    python tools/make_tiny_hf_model.py --kind gpt2 --out /tmp/tiny-gpt2
    python tools/make_tiny_hf_model.py --kind gpt-neo --out /tmp/tiny-neo --window 4

Kinds: ``gpt2`` (GPT2LMHeadModel), ``openai-gpt`` (OpenAIGPTLMHeadModel), ``gpt-neo``
(GPTNeoForCausalLM, layers alternating global and local). Every parameter gets its own
random values — LayerNorm gains 1 + N(0, 0.2²), biases N(0, 0.2²), matrices N(0, 1/fan_in),
embeddings N(0, 0.5²) — so a mapping that swaps or mis-transposes tensors shows in the
logits. The tokenizer is a byte-level BPE trained on a few built-in lines with
``<|endoftext|>`` as bos/eos, saved as a ``PreTrainedTokenizerFast``. Everything goes through
``save_pretrained``, so the folder is what a user would have. Needs ``transformers``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

KINDS = ("gpt2", "openai-gpt", "gpt-neo")
EOT = "<|endoftext|>"
TEXT = """The quick brown fox jumps over the lazy dog.
A language model assigns a probability to every sequence of tokens.
Pre-training once and adapting many times is the defining move of the GPT line.
Robert Boulter is an English film, television and theatre actor.
In 2000 he had a guest-starring role on the television series The Bill.
Tiny models make tests fast; random weights make mapping errors visible.
"""


def make_tokenizer(vocab_size: int = 320):
    """A byte-level BPE trained on ``TEXT`` (every byte encodes), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT)


def make_config(kind: str, vocab_size: int, eot_id: int, n_layer: int, d_model: int, n_head: int, context: int, window: int):
    from transformers import GPT2Config, GPTNeoConfig, OpenAIGPTConfig

    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=d_model, n_layer=n_layer, n_head=n_head,
                          bos_token_id=eot_id, eos_token_id=eot_id)
    if kind == "openai-gpt":
        return OpenAIGPTConfig(vocab_size=vocab_size, n_positions=context, n_embd=d_model, n_layer=n_layer, n_head=n_head)
    pattern = ["global", "local"]
    types = [[pattern, n_layer // 2]] + ([[["global"], 1]] if n_layer % 2 else [])
    return GPTNeoConfig(vocab_size=vocab_size, max_position_embeddings=context, hidden_size=d_model, num_layers=n_layer,
                        num_heads=n_head, attention_types=types, window_size=window, bos_token_id=eot_id, eos_token_id=eot_id)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Distinct random values for every parameter (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    conv1d = {f"{name}.weight" for name, module in model.named_modules() if type(module).__name__ == "Conv1D"}  # [in, out]
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() == 1:
                is_gain = "ln" in name and name.endswith("weight")
                parameter.copy_(1 + 0.2 * noise if is_gain else 0.2 * noise)
            elif "wte" in name or "wpe" in name or "embed" in name:
                parameter.copy_(0.5 * noise)
            else:
                fan_in = parameter.shape[0] if name in conv1d else parameter.shape[1]
                parameter.copy_(noise / math.sqrt(fan_in))


def make_tiny_model(kind: str, out: str | Path, *, seed: int = 0, n_layer: int = 2, d_model: int = 32, n_head: int = 4,
                    context: int = 64, window: int = 4) -> Path:
    """Write a tiny random ``kind`` checkpoint with its tokenizer to ``out``; returns ``out``."""
    from transformers import AutoModelForCausalLM

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    tokenizer = make_tokenizer()
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    config = make_config(kind, len(tokenizer), eot_id, n_layer, d_model, n_head, context, window)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    randomize(model, seed)
    out = Path(out)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, default="gpt2")
    parser.add_argument("--out", required=True, help="folder to write (save_pretrained layout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--window", type=int, default=4, help="GPT-Neo local attention window (tokens)")
    args = parser.parse_args()
    path = make_tiny_model(args.kind, args.out, seed=args.seed, n_layer=args.n_layer, d_model=args.d_model,
                           n_head=args.n_head, context=args.context, window=args.window)
    print(path)


if __name__ == "__main__":
    main()
