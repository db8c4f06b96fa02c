"""Command line: ``python -m harness <command>``.

Each command lives in its own module under ``harness/cli/`` and defines
``add_arguments(parser)`` and ``main(args) -> int``; its docstring is the command's
description and ``COMMANDS`` holds its one-line help. Only the invoked command's module
is imported, so ``python -m harness list`` does not pay for lm-eval or matplotlib.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import re
import sys

# command name -> (module under harness.cli, one-line help)
COMMANDS = {
    "list": ("list_archs", "list every architecture with its sizes and parameter counts"),
    "flops": ("flops", "FLOPs per token (forward, training) with a breakdown and cross-checked counts"),
    "bench": ("bench", "measure training/prefill throughput, achieved FLOP/s and MFU"),
    "data": ("data", "prepare a corpus: stream it into token shards + manifest in parallel (resumable)"),
    "run": ("run", "train one architecture at a FLOP budget, validate, evaluate, record"),
    "eval": ("eval", "evaluate a trained run with lm-evaluation-harness tasks"),
    "import": ("import_hf", "import a Hugging Face GPT-2 / OpenAI GPT / GPT-Neo checkpoint as a run directory"),
    "export": ("export_hf", "export a run as a Hugging Face checkpoint directory transformers loads"),
    "finetune": ("finetune", "fine-tune a run (trained or imported) on downstream data at a FLOP budget: full or LoRA"),
    "compare": ("compare", "train and evaluate several architectures at matched compute, then report"),
    "study": ("study", "run a study (several sweeps, e.g. studies/gpt-family-cpu.yaml) and write its Findings report"),
    "sweep": ("sweep", "sweep status <name or study file>: each run's state, executor and job id, FLOPs done"),
    "report": ("report", "regenerate a markdown report with figures from run records"),
    "results": ("results", "print every run record as one table"),
    "check": ("check", "regression gate: retrain nano models and compare with the committed baseline"),
}


# OSErrors reported as one line (exit 1) rather than a traceback
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EISDIR)


def add_set_argument(parser: argparse.ArgumentParser, help: str = "override a model config field, e.g. --set window=64 (repeatable)") -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.set``; parse with ``architectures.config.parse_overrides``."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (to add its arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Train GPT-family models at matched compute, evaluate them with lm-eval, report.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"harness.cli.{module_name}")
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_command_main=module.main)
    return parser


NEGATIVE_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|-inf(inity)?|-nan", re.IGNORECASE)


def join_negative_values(argv: list[str]) -> list[str]:
    """``--budget -3e11`` → ``--budget=-3e11``: argparse would take ``-3e11`` for an option and say only
    "expected one argument"; joined, the command's own check says what is wrong with the number."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and NEGATIVE_NUMBER.fullmatch(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = join_negative_values(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args._command_main(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # a write that failed (disk full, read-only, not a folder): one line
        from harness.io import WriteFailed, as_write_failed

        if not (isinstance(error, WriteFailed) or error.errno in WRITE_ERRNOS):
            raise
        print(f"error: {as_write_failed(error.filename or '?', error)}", file=sys.stderr)
        return 1
    except RuntimeError as error:
        from harness.runs.lock import RunLocked

        if not isinstance(error, RunLocked):
            raise
        print(f"error: {error}", file=sys.stderr)  # another process is running it
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _end_process_group()


def _end_process_group() -> None:
    """Under torchrun: destroy the process group the command made (on every rank, however it ended)."""
    if "torch.distributed" in sys.modules:  # never imported: no group to end, and no torch to pay for
        from harness.training.distributed import shutdown

        shutdown()


if __name__ == "__main__":
    sys.exit(main())
