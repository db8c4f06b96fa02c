"""The isoFLOP delta-method interval of the compute-optimal size, against a known value and by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from harness.reporting.stats import IsoFlopFit, fit_isoflop

T_975_2DOF = 4.302652729749464  # Student's t, 97.5 % quantile, 2 degrees of freedom (tables: 4.303)


def test_delta_interval_is_ten_to_the_vertex_plus_minus_t_times_se():
    fit = IsoFlopFit(ok=True, n_points=5, log10_params_opt=6.0, log10_params_opt_se=0.1)
    low, high = fit.params_opt_delta_interval()
    assert low == pytest.approx(10 ** (6.0 - T_975_2DOF * 0.1), rel=1e-9)
    assert high == pytest.approx(10 ** (6.0 + T_975_2DOF * 0.1), rel=1e-9)
    assert fit.params_opt_interval() == (low, high)  # no bootstrap: the delta interval alone
    assert IsoFlopFit(ok=True, n_points=3, log10_params_opt=6.0, log10_params_opt_se=0.1).params_opt_delta_interval() is None
    assert IsoFlopFit(ok=False, reason="no minimum").params_opt_delta_interval() is None


def test_delta_interval_covers_the_true_optimum_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    x_opt, params = 5.2, np.repeat(10 ** np.linspace(4.6, 5.8, 5), 2)
    covered = []
    for _ in range(400):
        losses = 3.0 + 0.8 * (np.log10(params) - x_opt) ** 2 + rng.normal(0, 0.01, len(params))
        low, high = fit_isoflop(params, losses, n_bootstrap=0).params_opt_delta_interval()
        covered.append(low <= 10**x_opt <= high)
    assert 0.92 <= np.mean(covered) <= 0.98
