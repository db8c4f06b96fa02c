"""Model definitions and their registry.

    from architectures import build, available
    model = build("gpt3", size="nano")

Built-in: gpt1, gpt2, gpt3, gpt4 (see each module's docstring for the paper's facts).
Add your own with ``register(Architecture(...))`` or the ``harness.architectures``
entry-point group; see README "Adding an architecture".
"""

from architectures.config import ModelConfig
from architectures.model import GPT, ModelOutput
from architectures.registry import (
    Architecture,
    available,
    build,
    build_from_config,
    get,
    register,
    unregister,
)

# built-in architectures register themselves on import
from architectures import gpt1, gpt2, gpt3, gpt4  # noqa: E402,F401

__all__ = [
    "Architecture",
    "GPT",
    "ModelConfig",
    "ModelOutput",
    "available",
    "build",
    "build_from_config",
    "get",
    "register",
    "unregister",
]
