"""One run: its spec and id, run directory, record, lock, pipeline (train then evaluate) and number checks."""
