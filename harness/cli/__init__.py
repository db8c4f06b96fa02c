"""Command line: ``python -m harness <command>``.

Each command lives in its own module under ``harness/cli/`` and defines
``add_arguments(parser)`` and ``main(args) -> int``; its docstring's first line is
the command's help. Modules are imported only when their command runs, so
``python -m harness list`` does not pay for lm-eval or matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under harness.cli
COMMANDS = {
    "list": "list_archs",
    "flops": "flops",
    "bench": "bench",
    "run": "run",
    "eval": "eval",
    "compare": "compare",
    "report": "report",
    "results": "results",
    "check": "check",
}


def _available_commands() -> dict[str, object]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"harness.cli.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"harness.cli.{module_name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Train GPT-family models at matched compute, evaluate them with lm-eval, report.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _available_commands().items():
        doc = (module.__doc__ or name).strip()
        sub = subparsers.add_parser(
            name,
            help=doc.splitlines()[0],
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_command_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._command_main(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
