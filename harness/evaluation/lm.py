"""The lm-eval model: any registered architecture and its tokenizer behind lm-eval's ``TemplateLM``.

Registered with lm-eval as ``harness``, so both work::

    lm = HarnessLM(model, tokenizer, batch_size=16)          # a live model
    lm = HarnessLM.from_run("results/<run_id>")               # a trained run
    lm_eval.simple_evaluate(model="harness", model_args="run_dir=results/<run_id>", ...)

- ``loglikelihood`` (via ``_loglikelihood_tokens``): contexts left-truncated to the model's
  context, long continuations scored in rolling windows. Windows are packed (``packing.py``):
  the choices of a question share one run of their context; rows at most ``row_tokens`` wide,
  filled first-fit-decreasing; the last block, final norm, head and log-softmax run only where a
  continuation token is predicted. Without packed arguments (or ``packing=False``): windows
  sorted by length, right-padded, ``batch_size`` per forward. Returns (sum log-prob, is-greedy).
- ``loglikelihood_rolling``: lm-eval's disjoint rolling windows, all documents batched together.
- ``generate_until``: greedy decoding with the KV cache, stop sequences, ``max_gen_toks`` and
  end-of-text; prompts of different lengths share a batch, left-padded, when the model's cache
  takes padding. Evaluation is text-only: gpt4 is called without ``images``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import defaultdict
from typing import Any, Iterator, Sequence

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs
from tqdm import tqdm

from harness.serving.generation import decode, prefill, supports_left_padding

from harness.evaluation.packing import Window, make_batch, plan_batches

DEFAULT_BATCH_SIZE = 16  # packed: about batch_size x row_tokens tokens per forward pass; unpacked: windows per pass
DEFAULT_ROW_TOKENS = 256  # the widest packed row (at least the model's context)
DEFAULT_MAX_GEN_TOKS = 256
# what lm-eval adds to every model's arguments (simple_evaluate: max_batch_size besides
# batch_size and device; --trust_remote_code: trust_remote_code); nothing to do here
LM_EVAL_INJECTED_ARGS = frozenset({"max_batch_size", "trust_remote_code"})


def accepts_packed_input(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes ``positions``, ``attention_mask`` and ``logit_positions``."""
    parameters = inspect.signature(model.forward).parameters
    return all(name in parameters for name in ("positions", "attention_mask", "logit_positions"))


@register_model("harness")
class HarnessLM(TemplateLM):
    """lm-eval's view of a harness model: text in, log-likelihoods and greedy text out."""

    backend = "causal"

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        *,
        run_dir: str | None = None,
        batch_size: int | str | None = DEFAULT_BATCH_SIZE,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        device: str | None = None,
        packing: bool | None = None,
        row_tokens: int = DEFAULT_ROW_TOKENS,
        **lm_eval_args: Any,
    ):
        """``model_args`` other than these are refused, except the ones lm-eval passes every
        model (``LM_EVAL_INJECTED_ARGS``), which are ignored."""
        super().__init__()
        unknown = sorted(set(lm_eval_args) - LM_EVAL_INJECTED_ARGS)
        if unknown:
            accepted = [name for name in inspect.signature(HarnessLM.__init__).parameters if name not in ("self", "lm_eval_args")]
            raise ValueError(f"unknown HarnessLM argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}.")
        if run_dir is not None:
            from harness.runs.run_dir import load_run_model

            model, tokenizer, _ = load_run_model(run_dir)
        if model is None or tokenizer is None:
            raise ValueError("HarnessLM needs a model and its tokenizer, or run_dir= a trained run directory.")
        if device is not None:
            model = model.to(device)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = parse_batch_size(batch_size)
        self.max_gen_toks = int(max_gen_toks)
        self._device = next(model.parameters()).device
        self.scored_logits_only = "logit_positions" in inspect.signature(model.forward).parameters
        supported = accepts_packed_input(model)
        if packing and not supported:
            raise ValueError("packing=True needs a model whose forward takes positions, attention_mask and logit_positions.")
        self.packing = supported if packing is None else bool(packing)
        self.row_tokens = max(int(row_tokens), self.max_length)

    @classmethod
    def from_run(cls, run_dir: str, **kwargs: Any) -> "HarnessLM":
        return cls(run_dir=run_dir, **kwargs)

    # ---- what lm-eval asks of a TemplateLM -------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eot_id)

    @property
    def max_length(self) -> int:
        """Text positions the model sees at once (an image prefix is never used here)."""
        return int(self.model.config.context)

    @property
    def tokenizer_name(self) -> str:
        return type(self.tokenizer).__name__

    def get_model_info(self) -> dict[str, Any]:
        """Added to lm-eval's results ``config``."""
        config = self.model.config
        counts = self.model.param_counts() if hasattr(self.model, "param_counts") else {}
        return {"arch": config.arch, "size": config.size, "context": config.context, **counts}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(string)]

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(t) for t in tokens])

    # ---- scoring ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Eval mode (no dropout, dropless MoE) and no autograd; the previous mode is restored."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.model.train(was_training)

    def _logits(self, idx: torch.Tensor, kv_cache: Any = None) -> torch.Tensor:
        return self.model(idx.to(self._device), kv_cache=kv_cache).logits

    def score_windows(
        self, windows: Sequence[Window], batch_size: int | None = None, disable_tqdm: bool = True
    ) -> list[tuple[float, bool]]:
        """(sum log-prob, is-greedy) of each window's continuation given its context.

        The model input is ``(context + continuation)[-(max_length+1):][:-1]``; the continuation
        must fit the context (``len(continuation) <= max_length``). Packed (the default for a
        model that takes ``positions``/``attention_mask``/``logit_positions``): windows that
        share their context run it once, everything is packed into rows at most ``row_tokens``
        wide (see ``packing.py``), about ``batch_size × row_tokens`` tokens per forward pass,
        and the LM head runs only at the scored positions. Otherwise (``packing=False``, or another model): windows
        sorted by length, right-padded, ``batch_size`` per forward pass; with
        ``batch_size=1`` every window is exactly one forward pass.
        """
        batch_size = batch_size or self.batch_size
        L = self.max_length
        for context, continuation in windows:
            if not context or not continuation or len(continuation) > L:
                raise ValueError(f"a scoring window needs 1..{L} continuation tokens and a non-empty context.")
        progress = tqdm(total=len(windows), disable=disable_tqdm, desc="Scoring")
        with self._eval_mode():
            if self.packing:
                results = self._score_packed(windows, batch_size, progress)
            else:
                results = self._score_plain(list(windows), batch_size, progress)
        progress.close()
        return results

    def _score_packed(self, windows: Sequence[Window], batch_size: int, progress) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(windows)
        attention_keys = 6.0 * getattr(self.model.config, "d_model", 256)
        for rows in plan_batches(windows, self.max_length, self.row_tokens, batch_size, attention_keys):
            batch = make_batch(rows)
            logits = self.model(
                batch.idx.to(self._device),
                positions=batch.positions.to(self._device),
                attention_mask=batch.attention_mask.to(self._device),
                logit_positions=batch.logit_positions.to(self._device),
            ).logits
            scored = _score(logits, [windows[i][1] for i in batch.windows])
            for i, result in zip(batch.windows, scored):
                results[i] = result
            progress.update(len(batch.windows))
        return results

    def _score_plain(self, windows: list[Window], batch_size: int, progress) -> list[tuple[float, bool]]:
        """Sorted by length with lm-eval's Collator, right-padded, ``batch_size`` per forward."""
        L = self.max_length

        def sort_key(window: Window) -> tuple[int, tuple[int, ...]]:
            tokens = window[0] + window[1]
            return -len(tokens), tuple(tokens)

        collator = Collator(windows, sort_fn=sort_key, group_by=None)
        results = []
        for chunk in collator.get_batched(n=batch_size):
            inputs = [(context + continuation)[-(L + 1) :][:-1] for context, continuation in chunk]
            width = max(len(row) for row in inputs)
            batch = torch.zeros(len(inputs), width, dtype=torch.long)
            for i, row in enumerate(inputs):
                batch[i, : len(row)] = torch.tensor(row)
            flat = []
            for i, (_, continuation) in enumerate(chunk):
                end = i * width + len(inputs[i])
                flat += range(end - len(continuation), end)
            if self.scored_logits_only:
                flat_positions = torch.tensor(flat, device=self._device)
                logits = self.model(batch.to(self._device), logit_positions=flat_positions).logits
            else:
                logits = self._logits(batch).flatten(0, 1)[flat]
            results += _score(logits, [continuation for _, continuation in chunk])
            progress.update(len(chunk))
        return collator.get_original(results)

    def _windows_for(self, context: list[int], continuation: list[int]) -> list[Window]:
        """One window, rolling windows when the continuation alone exceeds the context, none when
        it is empty (log-prob 0, greedy)."""
        context = context or [self.prefix_token_id]
        if not continuation:
            return []
        if len(continuation) <= self.max_length:
            return [(context, continuation)]
        rolling = lm_utils.get_rolling_token_windows(
            token_list=continuation, prefix_token=context[-1], max_seq_len=self.max_length, context_len=1
        )
        return [lm_utils.make_disjoint_window(pair) for pair in rolling]

    def _score_grouped(self, groups: list[list[Window]], disable_tqdm: bool) -> list[tuple[float, bool]]:
        """Score every window of every group in one batched pass; sum each group."""
        flat = [window for group in groups for window in group]
        scored = self.score_windows(flat, disable_tqdm=disable_tqdm)
        totals, start = [], 0
        for group in groups:
            part = scored[start : start + len(group)]
            start += len(group)
            totals.append((sum(lp for lp, _ in part), all(g for _, g in part)))
        return totals

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        groups = [self._windows_for(list(context), list(continuation)) for _, context, continuation in requests]
        results = self._score_grouped(groups, disable_tqdm)
        for (key, _, _), result in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        groups = []
        for (string,) in [request.args for request in requests]:
            rolling = lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            groups.append([lm_utils.make_disjoint_window(pair) for pair in rolling])
        # an empty document has no tokens to predict: log-likelihood 0
        totals = self._score_grouped([g for g in groups if g], disable_tqdm)
        results, it = [], iter(totals)
        for request, group in zip(requests, groups):
            value = next(it)[0] if group else 0.0
            results.append(value)
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, value)
        return results

    # ---- generation ---------------------------------------------------------------------------
    def generation_prompt(self, context: str, max_gen_toks: int) -> list[int]:
        """The prompt's tokens, left-truncated to leave room for ``max_gen_toks`` new tokens,
        but keeping at least half the context for the prompt."""
        tokens = self.tok_encode(context) or [self.prefix_token_id]
        keep = max(1, self.max_length - max_gen_toks + 1, self.max_length // 2)
        return tokens[-keep:]

    def greedy_generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        until: Sequence[str] = (),
        use_cache: bool = True,
        stop_at_eot: bool = True,
    ) -> list[list[int]]:
        """Greedy continuations of the prompts, one row per prompt.

        Stops a row at the end-of-text token (not returned; unless ``stop_at_eot`` is False) or
        once its decoded text contains a stop string; stops at ``max_new_tokens`` or when the
        context is full. With ``use_cache`` the prompts are run once (left-padded when their
        lengths differ, ``harness.serving.generation``) and each step feeds one token through the
        KV cache; without it every step recomputes the whole sequence (prompts of one length).
        """
        if not prompts:
            return []
        lengths = {len(p) for p in prompts}
        ragged_ok = use_cache and supports_left_padding(self.model)
        if 0 in lengths or (len(lengths) != 1 and not ragged_ok):
            raise ValueError("greedy_generate needs non-empty prompts of one length (the model takes no padding mask).")
        prompt_len = max(lengths)
        if prompt_len > self.max_length:
            raise ValueError(f"a prompt of {prompt_len} tokens does not fit the context of {self.max_length}.")
        n_new = min(max_new_tokens, self.max_length - prompt_len + 1)
        if n_new < 1:
            return [[] for _ in prompts]
        stops = [s for s in until if s]
        eot = self.eot_token_id if stop_at_eot else None
        generated: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        with self._eval_mode():
            if use_cache:
                steps = decode(self.model, *prefill(self.model, prompts, n_new - 1), n_new)
            else:
                steps = self._recomputed_steps(prompts, n_new)
            for next_token, _ in steps:
                for row, token in enumerate(next_token.tolist()):
                    if done[row]:
                        continue
                    if token == eot:
                        done[row] = True
                        continue
                    generated[row].append(token)
                    if stops:
                        text = self.tok_decode(generated[row])
                        done[row] = any(stop in text for stop in stops)
                if all(done):
                    break
        return generated

    def _recomputed_steps(self, prompts: Sequence[Sequence[int]], n_new: int) -> Iterator:
        """Greedy steps without a cache: (next tokens [B], None), the whole sequence rerun each time."""
        sequence = torch.tensor([list(p) for p in prompts], dtype=torch.long, device=self._device)
        for _ in range(n_new):
            next_token = self._logits(sequence)[:, -1].argmax(dim=-1)
            yield next_token, None
            sequence = torch.cat([sequence, next_token[:, None]], dim=1)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        args = [request.args for request in requests]
        collator = Collator(
            args,
            sort_fn=lambda x: (-len(self.tok_encode(x[0])), x[0]),
            group_by="gen_kwargs",
            group_fn=lambda x: x[1],
        )
        results: list[str] = []
        progress = tqdm(total=len(args), disable=disable_tqdm, desc="Generating")
        for chunk in collator.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = normalize_gen_kwargs(dict(all_kwargs[0]), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.get("until"), eos=None)
            max_gen_toks = int(kwargs["max_gen_toks"])
            prompts = [self.generation_prompt(context, max_gen_toks) for context in contexts]
            texts: list[str] = [""] * len(prompts)
            by_length: dict[int, list[int]] = defaultdict(list)
            ragged_ok = supports_left_padding(self.model)  # else one batch per prompt length
            for i, prompt in enumerate(prompts):
                by_length[0 if ragged_ok else len(prompt)].append(i)
            for rows in by_length.values():
                outputs = self.greedy_generate([prompts[i] for i in rows], max_gen_toks, until)
                for i, tokens in zip(rows, outputs):
                    text = self.tok_decode(tokens)
                    for stop in until:
                        if stop:
                            text = text.split(stop)[0]
                    texts[i] = text
            for (context, gen_kwargs), text in zip(chunk, texts):
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            results.extend(texts)
            progress.update(len(chunk))
        progress.close()
        return collator.get_original(results)


def _score(logits: torch.Tensor, continuations: list[list[int]]) -> list[tuple[float, bool]]:
    """(sum log-prob, all greedy) per continuation; ``logits`` [Σ len, vocab] holds their
    predicting positions one after another. log p(target) = logit(target) - logsumexp(logits),
    in float32, for the whole batch at once."""
    logits = logits.float()
    targets = torch.tensor([t for continuation in continuations for t in continuation], device=logits.device)
    token_log_probs = (logits.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)).tolist()
    greedy = (logits.argmax(dim=-1) == targets).tolist()
    results, start = [], 0
    for continuation in continuations:
        end = start + len(continuation)
        results.append((sum(token_log_probs[start:end]), all(greedy[start:end])))
        start = end
    return results


def parse_batch_size(batch_size: int | str | None) -> int:
    """An int ≥ 1; ``None`` or ``"auto"`` give the default."""
    if batch_size is None or batch_size == "auto":
        return DEFAULT_BATCH_SIZE
    try:
        value = int(batch_size)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}.")
    return value
