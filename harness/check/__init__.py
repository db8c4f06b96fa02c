"""The regression gate: retrain every architecture small, evaluate, compare with a committed baseline.

    from harness.check import run_check, update_baseline
    result = run_check("results/baselines/ci-cpu.json")           # CheckResult; result.passed
    print(result.table())
    baseline, diff = update_baseline("results/baselines/ci-cpu.json")

What one check does, per architecture (gpt1..gpt4 at ``nano`` by default): train from
scratch at a fixed seed and a small FLOP budget on the CPU in fp32 (deterministic: the
same numbers run to run on one machine), evaluate the harness probes with a small
``--limit``, and compare with the baseline, metric by metric:

- **exact**: parameter counts, FLOPs per token (total and by component), planned steps and
  tokens must be equal; the optimizer's parameter groups (a ``digest``) too; the data's
  entropy floor and unigram loss agree to a relative 1e-6 (``data``).
- **deterministic** (``harness.check.deterministic``): a short run of each architecture
  (10-11 steps, its whole schedule) gives the untrained model's loss, the trained losses and
  the last learning rate, equal to a relative ``DETERMINISTIC_RTOL``; one short run is also
  stopped half-way and resumed, and must equal the uninterrupted one exactly (``resume``).
- **text** (``harness.check.text_run``): one short run on a shared corpus gates the split,
  the BPE tokenizer and bits per byte exactly (a missing corpus fails under ``CI=true``).
- **quality**: final validation loss and probe metrics must lie within the tolerance the
  baseline stores for that metric, ``max(TOLERANCE_K x std, floor)``, where ``std`` is the
  sample standard deviation across seeds measured when the baseline was made (seed 0 plus
  ``spread_seeds``): a change larger than the seed-to-seed spread fails, whichever way
  it goes (an unexplained improvement is a change too: refresh the baseline with
  ``--update`` in the same change that explains it).
- **perf**: training throughput as a ratio to a reference matmul timed in the same process,
  ``tokens/s x training FLOPs/token / (1024² fp32 matmul FLOP/s)``, so a slower or busier
  machine moves both; it warns when it falls below ``(1 - PERF_TOLERANCE)`` x the baseline
  (the median of the baseline's runs) and fails only with ``strict_perf``.

Runs use one torch thread (``CheckSettings.threads``): the numbers then do not depend on
the core count, and other work on the machine does not stall the check.

The modules, one job each: ``settings`` (what is trained, the tolerances, the metric kinds),
``measure`` (train and evaluate through ``harness.runs.pipeline``, as flat metrics),
``deterministic`` (the short runs, parameter groups, FLOPs by component, resume), ``text_run``
(the text group), ``errors`` (``PartialRun``), ``baseline``
(build, write and read the baseline file), ``compare`` (judge each metric, ``run_check``),
``update`` (``update_baseline`` and the diff it prints). This package's namespace holds the
entry points below.
"""

from harness.check.baseline import load_baseline
from harness.check.compare import CheckResult, Direction, Row, run_check
from harness.check.settings import DEFAULT_BASELINE, TEXT_GROUP, CheckSettings
from harness.check.update import update_baseline

__all__ = ["CheckResult", "CheckSettings", "DEFAULT_BASELINE", "Direction", "Row", "TEXT_GROUP", "load_baseline",
           "run_check", "update_baseline"]
