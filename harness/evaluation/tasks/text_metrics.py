"""Per-document ROUGE of the harness_summarize task (referenced by its YAML)."""

from __future__ import annotations

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_scorer = None


def rouge_results(doc: dict, results: list[str]) -> dict:
    """rouge-score's F-measure (0-1) of the generated text against the reference, per ROUGE type."""
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    scores = _scorer.score(doc["target"], results[0])
    return {name: scores[name].fmeasure for name in ROUGE_TYPES}
