"""The check's one error type for a run that gave nothing to compare."""


class PartialRun(ValueError):
    """A training run failed or was interrupted, or its evaluation left a metric out."""
