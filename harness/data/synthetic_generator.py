"""Draws the synthetic corpus and its probes, with the exact per-token entropy floor.

The grammar (block types, markers, token and segment ids) and its parameters are in
``harness.data.synthetic_config``.

Every random choice is visible in the tokens it produces (block types by their
markers, a walk's stop by the next token being a marker, ...), so the conditional
entropy of each token given all previous tokens of its document is computed exactly
while generating: that is ``entropy`` (nats). A model with a shorter context can only
do worse, so it is a floor. The markov chain and the fact table come from
``table_seed`` alone; ``generate(n, seed)`` draws documents with ``seed``.

The marker token of a block and the end-of-text token get the segment of the block
they open or end. Probe builders return realistic document prefixes (starting with
end-of-text, as after a previous document) that end right before the answer.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import NamedTuple

import numpy as np

from harness.data.synthetic_config import (
    BLOCK_TOKEN,
    BLOCKS,
    COPY,
    COPY_TOKEN,
    EOT,
    FACTS,
    MARKOV,
    RECALL,
    SyntheticConfig,
)


class Probe(NamedTuple):
    """An evaluation item: the document prefix and the tokens that must follow it."""

    context: list[int]
    target: list[int]


def entropy(probs) -> float:
    """Shannon entropy in nats of a probability vector (zeros allowed)."""
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def binary_entropy(p: float) -> float:
    """Entropy in nats of a coin with probability ``p``."""
    return entropy([p, 1.0 - p])


class SyntheticGenerator:
    """Draws documents (``generate``) and evaluation probes from one ``SyntheticConfig``."""

    def __init__(self, config: SyntheticConfig | None = None):
        self.config = c = config or SyntheticConfig()
        markov_seed, fact_seed = np.random.SeedSequence(c.table_seed).spawn(2)

        rng = np.random.default_rng(markov_seed)
        # markov_next[s, j]: j-th successor state of state s, with probability markov_probs[s, j].
        self.markov_next = np.stack(
            [rng.choice(c.n_markov, size=c.markov_branching, replace=False) for _ in range(c.n_markov)]
        )
        self.markov_probs = rng.dirichlet([c.markov_alpha] * c.markov_branching, size=c.n_markov)
        self.markov_entropy = np.array([entropy(row) for row in self.markov_probs])  # nats per state
        self.stop_prob = 1.0 / c.markov_mean_len

        rng = np.random.default_rng(fact_seed)
        self.fact_objects = rng.integers(0, c.n_objects, size=c.n_subjects)  # subject -> object index
        ranks = rng.permutation(c.n_subjects) + 1
        weights = 1.0 / ranks.astype(np.float64) ** c.fact_zipf
        self.subject_probs = weights / weights.sum()
        self.subject_entropy = entropy(self.subject_probs)

        # Floors inside a copy span: after m span tokens the COPY marker comes with hazard h(m).
        lo, hi = c.copy_min_len, c.copy_max_len
        hazard = [0.0 if m < lo else 1.0 / (hi - m + 1) for m in range(hi + 1)]
        log_alphabet = math.log(c.n_markov)
        self.copy_span_entropy = [binary_entropy(h) + (1.0 - h) * log_alphabet for h in hazard]

        # Plain-Python tables for the per-token loops.
        self._next = self.markov_next.tolist()
        self._cum = _cumulative(self.markov_probs).tolist()
        self._subject_cum = _cumulative(self.subject_probs).tolist()
        self._fact_objects = self.fact_objects.tolist()
        self._walk_floor_cache: dict[float, list[float]] = {}
        self._policies: dict[tuple[bool, bool, bool], tuple[tuple[str, ...], list[float], float]] = {}

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    # ----------------------------------------------------------------- corpus
    def generate(self, n_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n_tokens`` tokens of documents separated by EOT, with segment ids and floors.

        Returns ``(tokens uint16, segments int8, entropy float32 nats)``. Document ``i`` is
        drawn from ``seed`` and ``i`` alone, so a shorter stream is a prefix of a longer one.
        """
        if n_tokens < 1:
            raise ValueError(f"n_tokens must be positive, got {n_tokens}")
        tokens: list[int] = []
        segments: list[int] = []
        entropies: list[float] = []
        doc_index = 0
        while len(tokens) < n_tokens:
            doc = _Document(self, np.random.default_rng([seed, doc_index]))
            doc.fill()
            tokens += doc.tokens
            segments += doc.segments
            entropies += doc.entropy
            doc_index += 1
        return (
            np.array(tokens[:n_tokens], dtype=np.uint16),
            np.array(segments[:n_tokens], dtype=np.int8),
            np.array(entropies[:n_tokens], dtype=np.float32),
        )

    def _policy(self, can_define: bool, can_query: bool, can_end: bool):
        """Allowed block kinds at a boundary, their cumulative probabilities, and the entropy."""
        key = (can_define, can_query, can_end)
        if key not in self._policies:
            c = self.config
            allowed = {
                "markov": c.weight_markov,
                "recall_def": c.weight_recall_def if can_define else 0.0,
                "recall_query": c.weight_recall_query if can_query else 0.0,
                "copy": c.weight_copy,
                "facts": c.weight_facts,
                "end": c.weight_end if can_end else 0.0,
            }
            kinds = tuple(k for k in BLOCKS if allowed[k] > 0)
            probs = np.array([allowed[k] for k in kinds]) / sum(allowed[k] for k in kinds)
            self._policies[key] = (kinds, _cumulative(probs).tolist(), entropy(probs))
        return self._policies[key]

    def _walk_floors(self, boundary_entropy: float) -> list[float]:
        """Floor of the token after markov state s, per s, when a stop leads to a boundary of that entropy.

        H = H_b(q) + (1 - q) H(successors of s) + q H(boundary), q the stop probability.
        """
        if boundary_entropy not in self._walk_floor_cache:
            q = self.stop_prob
            stop_term = binary_entropy(q) + q * boundary_entropy
            self._walk_floor_cache[boundary_entropy] = [stop_term + (1.0 - q) * h for h in self.markov_entropy.tolist()]
        return self._walk_floor_cache[boundary_entropy]

    # ----------------------------------------------------------------- probes
    def recall_probe(self, n: int, distance: int, seed: int) -> list[Probe]:
        """``n`` prefixes ending with QUERY KEY; target ``[VALUE]`` defined ``distance`` tokens back.

        ``distance`` counts the tokens strictly between the definition's value token (with
        ``bound_pairs``: its pair token) and the query's key token (the model predicting the
        value must reach ``distance + 1`` positions back). Filler is markov blocks. Distance 2
        cannot occur in this grammar.
        """
        pairs = self.config.recall_pairs
        per_pair = 1 if self.config.bound_pairs else 2  # tokens per definition
        if distance < 1 or distance == 2:
            raise ValueError(f"recall distance must be 1 or at least 3 tokens, got {distance}")
        probes = []
        for i in range(n):
            rng = np.random.default_rng([seed, i, 1])
            doc = _Document(self, rng, start_with_eot=True)
            doc.markov_block()
            doc.recall_def_block()
            # Choose which pair to query so the filler is 0 or >= 2 tokens (a markov block).
            choices = [j for j in range(pairs) if (f := distance - 1 - per_pair * (pairs - 1 - j)) == 0 or f >= 2]
            j = choices[int(rng.integers(len(choices)))]
            filler = distance - 1 - per_pair * (pairs - 1 - j)
            while filler:
                size = 1 + int(rng.geometric(self.stop_prob))
                if size > filler - 2:
                    size = filler  # the last block takes the rest, never leaving a single token
                doc.markov_block(length=size - 1)
                filler -= size
            doc.recall_query_block(key=doc.defined[-pairs + j])
            probes.append(Probe(doc.tokens[:-1], doc.tokens[-1:]))
        return probes

    def copy_probe(self, n: int, span_len: int, seed: int) -> list[Probe]:
        """``n`` prefixes ``... SPAN s1..sL COPY`` with target the span ``s1..sL`` (L = span_len)."""
        if span_len < 1:
            raise ValueError(f"span_len must be at least 1, got {span_len}")
        probes = []
        for i in range(n):
            doc = _Document(self, np.random.default_rng([seed, i, 2]), start_with_eot=True)
            doc.markov_block()
            doc.copy_block(length=span_len)
            probes.append(Probe(doc.tokens[:-span_len], doc.tokens[-span_len:]))
        return probes

    def fact_probe(self, n: int, seed: int) -> list[Probe]:
        """``n`` prefixes ``... FACT s o ... SUBJECT`` with target ``[OBJECT]``; subjects uniform over the table."""
        c = self.config
        probes = []
        for i in range(n):
            rng = np.random.default_rng([seed, i, 3])
            doc = _Document(self, rng, start_with_eot=True)
            doc.markov_block()
            subjects = [doc.draw_subject() for _ in range(c.facts_per_block)]
            k = int(rng.integers(c.facts_per_block))  # position of the asked fact in its block
            subjects[k] = asked = int(rng.integers(c.n_subjects))
            doc.facts_block(subjects=subjects)
            end = len(doc.tokens) - 2 * (c.facts_per_block - 1 - k)  # just after the asked object
            probes.append(Probe(doc.tokens[: end - 1], [c.object_base + int(self.fact_objects[asked])]))
        return probes


def _cumulative(probs: np.ndarray) -> np.ndarray:
    """Cumulative sums along the last axis, the last forced to 1.0 so that
    ``bisect_right(cum, u)`` with ``u`` in [0, 1) is always a valid index."""
    cum = np.cumsum(probs, axis=-1)
    cum[..., -1] = 1.0
    return cum


class _Document:
    """One document being drawn: its tokens, segments and floors, and the recall state."""

    def __init__(self, gen: SyntheticGenerator, rng: np.random.Generator, start_with_eot: bool = False):
        self.gen, self.c, self.rng = gen, gen.config, rng
        self.tokens: list[int] = []
        self.segments: list[int] = []
        self.entropy: list[float] = []
        self.defined: list[int] = []  # key indices in order of definition
        self.value_of: dict[int, int] = {}  # key index -> value index
        self.available = list(range(self.c.n_keys))  # keys not yet defined in this document
        self.n_blocks = 0
        if start_with_eot:  # as after a previous document (its floor is not ours to know)
            self.emit(EOT, MARKOV, 0.0)
        self.boundary_entropy = self.policy()[2]  # floor of the next block's first token

    def emit(self, token: int, segment: int, floor: float) -> None:
        self.tokens.append(token)
        self.segments.append(segment)
        self.entropy.append(floor)

    def policy(self):
        return self.gen._policy(len(self.available) >= self.c.recall_pairs, bool(self.defined), self.n_blocks > 0)

    def fill(self) -> None:
        """Draw blocks until the document ends with EOT."""
        blocks = {
            "markov": self.markov_block,
            "recall_def": self.recall_def_block,
            "recall_query": self.recall_query_block,
            "copy": self.copy_block,
            "facts": self.facts_block,
        }
        while True:
            kinds, cum, _ = self.policy()
            kind = kinds[bisect_right(cum, self.rng.random())]
            if kind == "end":
                self.emit(EOT, self.segments[-1], self.boundary_entropy)
                return
            blocks[kind]()

    def _open(self, kind: str, segment: int) -> float:
        """Emit the block's marker; return the entropy of the boundary that follows the block."""
        self.emit(BLOCK_TOKEN[kind], segment, self.boundary_entropy)
        self.n_blocks += 1
        return self.policy()[2]

    def markov_block(self, length: int | None = None) -> None:
        c, gen = self.c, self.gen
        self._open("markov", MARKOV)
        length = int(self.rng.geometric(gen.stop_prob)) if length is None else length
        state = int(self.rng.integers(c.n_markov))
        # After each token the next one is a successor (prob 1-q) or the next boundary's
        # token (prob q); their tokens are disjoint, so the floor adds up (see _walk_floors).
        floor_after = gen._walk_floors(self.policy()[2])
        states, floors = [state], [math.log(c.n_markov)]
        nxt, cum = gen._next, gen._cum
        for u in self.rng.random(length - 1).tolist():
            floors.append(floor_after[state])
            state = nxt[state][bisect_right(cum[state], u)]
            states.append(state)
        self.tokens += [c.markov_base + s for s in states]
        self.segments += [MARKOV] * length
        self.entropy += floors
        self.boundary_entropy = floor_after[state]

    def recall_def_block(self) -> None:
        c = self.c
        self._open("recall_def", RECALL)
        log_values = math.log(c.n_values)
        picks = self.rng.random(c.recall_pairs).tolist()
        values = self.rng.integers(c.n_values, size=c.recall_pairs).tolist()
        for u, value in zip(picks, values):
            floor = math.log(len(self.available))  # a key not yet defined in this document
            key = self.available.pop(int(u * len(self.available)))
            self.defined.append(key)
            self.value_of[key] = value
            if c.bound_pairs:  # one token: the key (among the unused) and the value together
                self.tokens.append(c.pair_token(key, value))
                self.entropy.append(floor + log_values)
            else:
                self.tokens += [c.key_base + key, c.value_base + value]
                self.entropy += [floor, log_values]
        self.segments += [RECALL] * ((1 if c.bound_pairs else 2) * c.recall_pairs)
        self.boundary_entropy = self.policy()[2]

    def recall_query_block(self, key: int | None = None) -> None:
        c = self.c
        after = self._open("recall_query", RECALL)
        if key is None:
            key = self.defined[int(self.rng.integers(len(self.defined)))]
        self.emit(c.key_base + key, RECALL, math.log(len(self.defined)))
        self.emit(c.value_base + self.value_of[key], RECALL, 0.0)
        self.boundary_entropy = after

    def copy_block(self, length: int | None = None) -> None:
        c, span_entropy = self.c, self.gen.copy_span_entropy
        after = self._open("copy", COPY)
        if length is None:
            length = int(self.rng.integers(c.copy_min_len, c.copy_max_len + 1))
        span = (c.markov_base + self.rng.integers(c.n_markov, size=length)).tolist()
        # Before span token m+1 (and before COPY, m = length) the marker comes with hazard h(m).
        self.tokens += span + [COPY_TOKEN] + span
        self.entropy += [span_entropy[min(m, c.copy_max_len)] for m in range(length + 1)] + [0.0] * length
        self.segments += [COPY] * (2 * length + 1)
        self.boundary_entropy = after

    def draw_subject(self) -> int:
        return bisect_right(self.gen._subject_cum, self.rng.random())

    def facts_block(self, subjects: list[int] | None = None) -> None:
        c, gen = self.c, self.gen
        after = self._open("facts", FACTS)
        if subjects is None:
            subjects = [self.draw_subject() for _ in range(c.facts_per_block)]
        for subject in subjects:
            self.tokens += [c.subject_base + subject, c.object_base + gen._fact_objects[subject]]
            self.entropy += [gen.subject_entropy, 0.0]  # the object is fixed by the table
        self.segments += [FACTS] * (2 * len(subjects))
        self.boundary_entropy = after
