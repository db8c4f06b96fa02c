"""Sweeps of runs: matched-compute comparisons, studies, the runs file, adaptation stages."""
