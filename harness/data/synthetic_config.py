"""Vocabulary layout, reserved token and segment ids, and process parameters of the synthetic corpus.

The corpus is drawn by ``harness.data.synthetic_generator``. Documents are sequences of
*blocks*; each block opens with a marker token, and a document ends with the end-of-text
token (id 0). At every block boundary the next block is drawn from fixed weights
(restricted to the blocks allowed in the current state; see ``SyntheticGenerator._policy``).

Block types and their segment (``SEGMENT_NAMES``):

- ``markov``: MARKOV s1 s2 ... a walk on a sparse random Markov chain ("language"):
  every state has ``markov_branching`` successors with fixed random probabilities;
  the walk stops after each token with probability ``1 / markov_mean_len``.
- ``recall`` (definition): DEF k1 v1 ... kP vP, ``recall_pairs`` key/value pairs, keys
  distinct within a document, values uniform.
- ``recall`` (query): QUERY k v for a key defined earlier in the document; ``v`` is
  determined by the context (floor 0).
- with ``bound_pairs``, a definition is DEF p1 ... pP instead: each pair is ONE token that names
  its key and value together (id ``pair_base + key * n_values + value``), so answering a query
  takes one attention hop (the query's key to the pair token) instead of an induction circuit
  (the key, then the token after it); the query block is unchanged.
- ``copy``: SPAN s1..sL COPY s1..sL, L uniform in [copy_min_len, copy_max_len]; the
  copy is determined by the context (floor 0).
- ``facts``: FACT s1 o1 ... subjects drawn Zipf-like from a fixed global table
  subject -> object shared by all documents; the object has floor 0 given the table.

Token ids, in vocabulary order: ``N_RESERVED`` reserved ids, then markov states, keys,
values, subjects, objects and (with ``bound_pairs``) the n_keys × n_values pair tokens (first id
of each range: ``SyntheticConfig.*_base``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

SEGMENT_NAMES = ("markov", "recall", "copy", "facts")
MARKOV, RECALL, COPY, FACTS = range(4)  # segment ids

# Reserved token ids: end-of-text, one marker per block kind, the copy marker, one spare.
EOT, MARKOV_TOKEN, DEF_TOKEN, QUERY_TOKEN, SPAN_TOKEN, COPY_TOKEN, FACT_TOKEN = range(7)
N_RESERVED = 8

# Block kinds chosen at a boundary, with the token that opens each ("end" = EOT).
BLOCKS = ("markov", "recall_def", "recall_query", "copy", "facts", "end")
BLOCK_TOKEN = {
    "markov": MARKOV_TOKEN,
    "recall_def": DEF_TOKEN,
    "recall_query": QUERY_TOKEN,
    "copy": SPAN_TOKEN,
    "facts": FACT_TOKEN,
    "end": EOT,
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Vocabulary layout and process parameters (lengths in tokens; default vocab 512)."""

    n_markov: int = 200  # markov states; also the alphabet of copy spans
    n_keys: int = 64
    n_values: int = 64
    n_subjects: int = 128
    n_objects: int = 48
    markov_branching: int = 4  # successors per state
    markov_alpha: float = 1.0  # Dirichlet concentration of each state's successor probabilities
    markov_mean_len: float = 32.0  # mean walk length; stop probability 1/mean after each token
    recall_pairs: int = 8  # key/value pairs per definition block
    copy_min_len: int = 4
    copy_max_len: int = 32
    facts_per_block: int = 4
    fact_zipf: float = 1.0  # subject frequency ~ 1 / rank**fact_zipf
    weight_markov: float = 0.30  # relative block weights at a boundary
    weight_recall_def: float = 0.10
    weight_recall_query: float = 0.30
    weight_copy: float = 0.08
    weight_facts: float = 0.20
    weight_end: float = 0.04
    table_seed: int = 1234  # fixes the markov chain and the fact table, not the documents
    bound_pairs: bool = False  # definitions as single key-value tokens (one-hop recall; see the module docstring)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "bound_pairs":
                if not isinstance(value, bool):
                    raise ValueError(f"SyntheticConfig.bound_pairs must be true or false, got {value!r}")
                continue
            may_be_zero = f.name.startswith("weight_") or f.name == "table_seed"
            if value < 0 or value == 0 and not may_be_zero:
                wanted = "non-negative" if may_be_zero else "positive"
                raise ValueError(f"SyntheticConfig.{f.name} must be {wanted}, got {value}")
        if self.markov_branching > self.n_markov:
            raise ValueError("SyntheticConfig.markov_branching must not exceed n_markov")
        if self.recall_pairs > self.n_keys:
            raise ValueError("SyntheticConfig.recall_pairs must not exceed n_keys")
        if self.copy_min_len > self.copy_max_len:
            raise ValueError("SyntheticConfig.copy_min_len must not exceed copy_max_len")
        if self.vocab_size > 2**16:
            raise ValueError(f"SyntheticConfig vocabulary of {self.vocab_size} tokens exceeds 65536 (tokens are uint16)")
        if self.markov_mean_len < 1:
            raise ValueError("SyntheticConfig.markov_mean_len must be at least 1")
        if self.weight_end <= 0 or self.weight_markov + self.weight_copy + self.weight_facts + self.weight_recall_def <= 0:
            raise ValueError("SyntheticConfig weights must allow documents to end and to contain content")

    # First token id of each range, in vocabulary order.
    @property
    def markov_base(self) -> int:
        return N_RESERVED

    @property
    def key_base(self) -> int:
        return self.markov_base + self.n_markov

    @property
    def value_base(self) -> int:
        return self.key_base + self.n_keys

    @property
    def subject_base(self) -> int:
        return self.value_base + self.n_values

    @property
    def object_base(self) -> int:
        return self.subject_base + self.n_subjects

    @property
    def pair_base(self) -> int:
        return self.object_base + self.n_objects

    @property
    def vocab_size(self) -> int:
        return self.pair_base + (self.n_keys * self.n_values if self.bound_pairs else 0)

    def pair_token(self, key: int, value: int) -> int:
        """The token that defines ``key`` as ``value`` (``bound_pairs`` only)."""
        return self.pair_base + key * self.n_values + value

    def to_dict(self) -> dict:
        return asdict(self)
