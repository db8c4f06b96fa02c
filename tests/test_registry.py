"""The architecture registry: third-party architectures by ``register`` and by entry point."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import architectures
from architectures import Architecture, GPT, ModelConfig, ModelOutput, available, build, build_from_config, get
from architectures import registry
from architectures.gpt2 import GPT2_DEFAULTS
from architectures.presets import CPU_SIZES


class BigramLM(nn.Module):
    """A third-party model honouring the contract: next token from the current one only."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)

    def param_counts(self) -> dict[str, int]:
        n = sum(p.numel() for p in self.parameters())
        return {"params": n, "non_embedding_params": 0, "active_params": n, "active_non_embedding_params": 0}

    def new_kv_cache(self, batch_size: int):
        return {"position": 0}  # a bigram needs no keys or values

    def forward(self, idx, targets=None, images=None, kv_cache=None) -> ModelOutput:
        if images is not None:
            raise ValueError("BigramLM has no image input.")
        logits = self.table(idx)
        if targets is None:
            return ModelOutput(logits=logits)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return ModelOutput(logits=logits, loss=loss, lm_loss=loss)


BIGRAM = Architecture(
    name="test-bigram",
    summary="a bigram table (third-party test architecture)",
    defaults=dict(n_layer=1, n_head=1),
    sizes={"tiny": dict(vocab_size=50, d_model=8, context=16), "small": dict(vocab_size=100, d_model=8, context=16)},
    model_class=BigramLM,
)

# the shared GPT with other defaults: ReLU, every layer banded
RELU_BANDED = Architecture(
    name="test-relu-banded",
    summary="GPT-2 with ReLU and only banded attention (test architecture)",
    defaults={**GPT2_DEFAULTS, "activation": "relu", "attention_pattern": ("banded",), "window": 4},
    sizes={"nano": CPU_SIZES["nano"]},
)


@pytest.fixture
def registered():
    """Register the test architectures, and remove them afterwards whatever happens."""
    architectures.register(BIGRAM)
    architectures.register(RELU_BANDED)
    yield
    architectures.unregister(BIGRAM.name)
    architectures.unregister(RELU_BANDED.name)


def test_builtins_are_registered_first():
    assert available()[:4] == ["gpt1", "gpt2", "gpt3", "gpt4"]


def test_third_party_model_class_builds_by_name(registered):
    assert "test-bigram" in available()
    assert get("test-bigram") is BIGRAM
    model = build("test-bigram", "small")
    assert isinstance(model, BigramLM)
    assert model.config.arch == "test-bigram" and model.config.size == "small"
    assert model.config.vocab_size == 100
    assert isinstance(build("test-bigram"), BigramLM)  # the first size is the default
    assert build("test-bigram").config.size == "tiny"
    idx = torch.randint(0, 100, (2, 5))
    out = model(idx, targets=idx)
    assert out.logits.shape == (2, 5, 100) and torch.isfinite(out.loss)
    # and rebuilds from its saved config
    rebuilt = build_from_config(ModelConfig.from_json(model.config.to_json()))
    assert isinstance(rebuilt, BigramLM)


def test_third_party_architecture_appears_in_the_list_command(registered):
    from harness.cli.list_archs import architecture_rows

    rows = architecture_rows("test-bigram")
    assert [(r["arch"], r["size"]) for r in rows] == [("test-bigram", "tiny"), ("test-bigram", "small")]
    assert rows[0]["params"] == 50 * 50


def test_gpt_with_other_defaults_builds_by_name(registered):
    torch.manual_seed(0)
    model = build("test-relu-banded", "nano")
    assert isinstance(model, GPT)
    assert model.config.activation == "relu"
    assert [block.attn.window for block in model.blocks] == [4, 4]
    out = model(torch.randint(0, 4096, (2, 12)), targets=torch.randint(0, 4096, (2, 12)))
    assert out.logits.shape == (2, 12, 4096) and torch.isfinite(out.loss)
    # overrides still apply on top of the architecture's defaults
    assert build("test-relu-banded", "nano", window=2).config.window == 2


def test_register_refuses_a_taken_name_unless_replacing(registered):
    impostor = Architecture(name="gpt2", summary="not GPT-2", defaults={}, sizes={"nano": CPU_SIZES["nano"]})
    with pytest.raises(ValueError, match="already registered"):
        architectures.register(impostor)
    assert get("gpt2") is not impostor
    assert architectures.register(BIGRAM) is BIGRAM  # the same object again is fine
    other = Architecture(name="test-bigram", summary="v2", defaults={}, sizes=BIGRAM.sizes, model_class=BigramLM)
    architectures.register(other, replace=True)
    assert get("test-bigram") is other


def test_unregister_removes_the_architecture():
    architectures.register(BIGRAM)
    architectures.unregister(BIGRAM.name)
    assert "test-bigram" not in available()
    with pytest.raises(ValueError, match="unknown architecture 'test-bigram'"):
        build("test-bigram")
    architectures.unregister("never-registered")  # a no-op


def _write_distribution(root, package: str, entries: dict[str, str]) -> None:
    """A package plus the ``*.dist-info`` an installer would write for it."""
    (root / package).mkdir()
    (root / package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from architectures import Architecture, register
            from architectures.presets import CPU_SIZES

            ARCH = Architecture(
                name="ep-object",
                summary="found through an entry point (an Architecture)",
                defaults=dict(norm_placement="post", final_norm=False),
                sizes={"nano": CPU_SIZES["nano"]},
            )


            def register_mine():
                return register(
                    Architecture(
                        name="ep-callable",
                        summary="found through an entry point (a callable)",
                        defaults=dict(activation="relu"),
                        sizes={"nano": CPU_SIZES["nano"]},
                    )
                )
            """
        )
    )
    _write_entry_points(root, package, entries)


def _write_entry_points(root, package: str, entries: dict[str, str]) -> None:
    """The ``*.dist-info`` an installer would write for ``package``, with these entry points."""
    info = root / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}\n")


def test_entry_point_architectures_are_discovered(tmp_path, monkeypatch):
    assert registry.ENTRY_POINT_GROUP == "harness.architectures"
    package = "harness_test_ep_pkg"
    _write_distribution(tmp_path, package, {"ep-object": f"{package}:ARCH", "ep-callable": f"{package}:register_mine"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_loaded_entry_points", set())
    try:
        names = available()
        assert "ep-object" in names and "ep-callable" in names
        assert registry._entry_points_loaded  # discovery runs once
        model = build("ep-object", "nano")
        assert isinstance(model, GPT) and model.config.norm_placement == "post" and model.ln_f is None
        assert build("ep-callable", "nano").config.activation == "relu"
    finally:
        architectures.unregister("ep-object")
        architectures.unregister("ep-callable")
        sys.modules.pop(package, None)
    assert "ep-object" not in available()


def test_entry_points_are_looked_up_by_get_too(tmp_path, monkeypatch):
    package = "harness_test_ep_pkg_get"
    _write_distribution(tmp_path, package, {"ep-object": f"{package}:ARCH"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_loaded_entry_points", set())
    try:
        assert get("ep-object").summary.startswith("found through an entry point")
    finally:
        architectures.unregister("ep-object")
        sys.modules.pop(package, None)


def test_an_entry_point_cannot_replace_a_builtin(tmp_path, monkeypatch):
    package = "harness_test_ep_impostor"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(
        "from architectures import Architecture\n"
        "from architectures.presets import CPU_SIZES\n"
        "IMPOSTOR = Architecture(name='gpt2', summary='not GPT-2', defaults={}, sizes={'nano': CPU_SIZES['nano']})\n"
    )
    builtin = get("gpt2")
    _write_entry_points(tmp_path, package, {"impostor": f"{package}:IMPOSTOR"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_loaded_entry_points", set())
    try:
        with pytest.raises(ValueError, match="plugin 'impostor' .* registers 'gpt2', which is already registered"):
            available()
        assert registry._REGISTRY["gpt2"] is builtin
    finally:
        architectures.register(builtin, replace=True)
        sys.modules.pop(package, None)


def test_a_failing_entry_point_is_reported_every_time_until_it_loads(tmp_path, monkeypatch):
    import importlib

    package = "harness_test_ep_broken"
    (tmp_path / package).mkdir()
    source = tmp_path / package / "__init__.py"
    source.write_text("raise RuntimeError('the plugin is broken')\n")
    _write_entry_points(tmp_path, package, {"ep-fixed": f"{package}:ARCH"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_loaded_entry_points", set())
    try:
        for _ in range(2):  # not marked loaded after a failure: the error comes back
            with pytest.raises(ValueError, match="plugin 'ep-fixed' .* failed to load: RuntimeError: the plugin is broken"):
                available()
        source.write_text(
            "from architectures import Architecture\n"
            "from architectures.presets import CPU_SIZES\n"
            "ARCH = Architecture(name='ep-fixed', summary='fixed', defaults={}, sizes={'nano': CPU_SIZES['nano']})\n"
        )
        sys.modules.pop(package, None)
        importlib.invalidate_caches()
        assert "ep-fixed" in available()
    finally:
        architectures.unregister("ep-fixed")
        sys.modules.pop(package, None)
