"""Data: source (synthetic | text | hf) -> tokenizer -> fixed train/val token arrays -> batches.

See ``prepare.py`` for the data spec syntax and ``docs/design.md`` ("Data contract").
"""

from harness.data.baselines import unigram_cross_entropy
from harness.data.batches import IGNORE_INDEX, get_batch
from harness.data.prepare import VAL_SEED, PreparedData, prepare_data
from harness.data.synthetic_config import SEGMENT_NAMES, SyntheticConfig
from harness.data.synthetic_generator import Probe, SyntheticGenerator
from harness.data.tokenizer import (
    BPETokenizer,
    SyntheticTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    get_tokenizer,
    load_tokenizer,
    train_bpe,
)

__all__ = [
    "BPETokenizer",
    "IGNORE_INDEX",
    "PreparedData",
    "Probe",
    "SEGMENT_NAMES",
    "SyntheticConfig",
    "SyntheticGenerator",
    "SyntheticTokenizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "VAL_SEED",
    "get_batch",
    "get_tokenizer",
    "load_tokenizer",
    "prepare_data",
    "train_bpe",
    "unigram_cross_entropy",
]
