"""Run the command line in-process for a test: ``run_cli(argv) -> (exit code, stdout, stderr)``, warnings silenced."""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stderr, redirect_stdout


def run_cli(argv) -> tuple[int, str, str]:
    from harness.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli_main(argv)
    return code, out.getvalue(), err.getvalue()
