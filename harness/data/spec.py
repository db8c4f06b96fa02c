"""Parse a data spec string into a source and its options.

Syntax (one form for every source)::

    SOURCE[?key=value[&key=value...]]

    synthetic                              built-in generator (default sizes)
    synthetic?n_train=500000&recall_pairs=4
    path/to/file.txt | dir/ | data.jsonl   local text
    hf:NAME[:CONFIG][@SPLIT]               Hugging Face datasets, streamed
    hf:json?data_files=/abs/x.jsonl        ... the same loader on local files

Values are kept as strings here; each source converts the options it knows and rejects
the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: ``kind`` is ``synthetic``, ``text`` or ``hf``."""

    raw: str
    kind: str
    target: str = ""  # text: the path; hf: NAME[:CONFIG][@SPLIT]
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> DataSpec:
    """Split ``spec`` into kind, target and ``?key=value&...`` options."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("data spec is empty; use 'synthetic', a path to .txt/.jsonl or a folder, or 'hf:NAME'")
    spec = spec.strip()
    target, _, query = spec.partition("?")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"data spec option {part!r} in {spec!r} is not key=value")
        if key in options:
            raise ValueError(f"data spec option {key!r} is given twice in {spec!r}")
        options[key] = unquote(value)
    if target == "synthetic":
        return DataSpec(spec, "synthetic", "", options)
    if target.startswith("synthetic:"):
        raise ValueError(f"synthetic options go after '?', e.g. 'synthetic?n_train=2000000', not {spec!r}")
    if target.startswith("hf:"):
        if not target[3:]:
            raise ValueError(f"data spec {spec!r} names no dataset; write hf:NAME[:CONFIG][@SPLIT]")
        return DataSpec(spec, "hf", target[3:], options)
    return DataSpec(spec, "text", target, options)


def take_options(spec: DataSpec, defaults: dict[str, object], types: dict[str, type] | None = None) -> dict[str, object]:
    """Options of ``spec`` converted to the types of ``defaults`` (or ``types[key]`` where a
    default is ``None``); unknown keys raise ValueError."""
    unknown = sorted(set(spec.options) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {spec.kind} data spec {spec.raw!r}; "
            f"known: {', '.join(sorted(defaults))}"
        )
    values = dict(defaults)
    for key, text in spec.options.items():
        like = (types or {}).get(key, str)() if defaults[key] is None else defaults[key]
        values[key] = convert(text, like, f"option {key!r} of {spec.raw!r}")
    return values


def convert(text: str, like: object, what: str) -> object:
    """``text`` as the type of ``like`` (int, float, bool or str)."""
    try:
        if isinstance(like, bool):
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return text.lower() in ("1", "true", "yes")
        if isinstance(like, int):
            return int(float(text)) if "e" in text.lower() else int(text)
        if isinstance(like, float):
            return float(text)
    except ValueError:
        expected = {bool: "true or false", int: "an integer", float: "a number"}[type(like)]
        raise ValueError(f"{what} is {text!r}, expected {expected}") from None
    return text
