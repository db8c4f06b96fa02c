"""The architecture registry: ``register``, ``get``, ``available``, ``build``.

An ``Architecture`` is a name, a one-line summary, config defaults and named size
presets, each with its default training recipe (``size_defaults``: lr, batch, budgets). Built-in architectures register on import; third-party ones either call
``register`` themselves or are found through the ``harness.architectures`` entry-point
group, whose value is an ``Architecture`` or a callable that registers (or returns) one::

    [project.entry-points."harness.architectures"]
    mygpt = "mypkg.arch:MYGPT"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from torch import nn

from architectures.config import ModelConfig
from architectures.presets import CPU_SIZE_DEFAULTS, SizeDefaults

ENTRY_POINT_GROUP = "harness.architectures"


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str
    defaults: dict[str, Any]
    sizes: dict[str, dict[str, Any]]
    model_class: Callable[[ModelConfig], nn.Module] | None = None  # default: architectures.model.GPT
    size_notes: dict[str, str] = field(default_factory=dict)
    size_defaults: dict[str, SizeDefaults] = field(default_factory=dict)  # per size: lr, batch, budgets

    def training_defaults(self, size: str) -> SizeDefaults:
        """``size``'s default recipe: its ``size_defaults`` entry, else the shared CPU preset of that
        name (nano, mini, micro; ``architectures.presets.CPU_SIZE_DEFAULTS``), else none (all None)."""
        return self.size_defaults.get(size) or CPU_SIZE_DEFAULTS.get(size) or SizeDefaults()

    def config(self, size: str | None = None, **overrides: Any) -> ModelConfig:
        """The resolved config for ``size`` (default: the first preset) with field overrides."""
        size = size or next(iter(self.sizes))
        if size not in self.sizes:
            raise ValueError(f"unknown size {size!r} for {self.name}; known sizes: {', '.join(self.sizes)}.")
        return ModelConfig.from_dict({**self.defaults, **self.sizes[size], **overrides, "arch": self.name, "size": size})

    def build(self, config: ModelConfig) -> nn.Module:
        if self.model_class is None:
            from architectures.model import GPT

            return GPT(config)
        return self.model_class(config)


_REGISTRY: dict[str, Architecture] = {}
_entry_points_loaded = False  # set once every entry point has loaded
_loaded_entry_points: set[tuple[str, str]] = set()  # (name, target) of those that have


def register(architecture: Architecture, *, replace: bool = False) -> Architecture:
    """Add an architecture; registering a taken name needs ``replace=True``."""
    if architecture.name in _REGISTRY and not replace and _REGISTRY[architecture.name] is not architecture:
        raise ValueError(f"an architecture named {architecture.name!r} is already registered; pass replace=True.")
    _REGISTRY[architecture.name] = architecture
    return architecture


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    """Register every ``harness.architectures`` entry point, once each.

    A plugin never replaces an architecture already registered (a built-in, or another
    plugin's) under the same name: that is refused. A plugin that fails to load raises a
    ``ValueError`` naming it, now and on every later lookup until it loads.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    for point in entry_points(group=ENTRY_POINT_GROUP):
        key = (point.name, point.value)
        if key in _loaded_entry_points:
            continue
        try:
            loaded = point.load()
            result = loaded() if callable(loaded) and not isinstance(loaded, Architecture) else loaded
        except Exception as error:
            raise ValueError(
                f"the architecture plugin {point.name!r} ({point.value}) failed to load: "
                f"{type(error).__name__}: {error}"
            ) from error
        if isinstance(result, Architecture):
            if result.name in _REGISTRY and _REGISTRY[result.name] is not result:
                raise ValueError(
                    f"the architecture plugin {point.name!r} ({point.value}) registers {result.name!r}, "
                    f"which is already registered; give the plugin's architecture another name."
                )
            register(result)
        _loaded_entry_points.add(key)
    _entry_points_loaded = True


def available() -> list[str]:
    """Names of every registered architecture, built-in first."""
    _load_entry_points()
    return list(_REGISTRY)


def get(name: str) -> Architecture:
    _load_entry_points()
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; known architectures: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def build(name: str, size: str | None = None, **overrides: Any) -> nn.Module:
    """Build architecture ``name`` at preset ``size`` with any ModelConfig field overridden."""
    architecture = get(name)
    return architecture.build(architecture.config(size, **overrides))


def build_from_config(config: ModelConfig | dict) -> nn.Module:
    """Rebuild a model from a saved config (``config.json``, a checkpoint's ``config``)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return get(config.arch).build(config)
