"""The public API as a package: typed (py.typed), every public name and method documented, the
augmentations, kNN, linear probe and heads usable on their own, the docs' split_gradient snippet
runnable as written, and the BatchNorm-free ViT example trained on real Fashion-MNIST images."""
import importlib.util
import inspect
import os
import re
import sys

import pytest
import torch
import torch.nn as nn

import siamdyn
from tests.conftest import needs_fmnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_py_typed_ships_with_the_package():
    assert os.path.isfile(os.path.join(os.path.dirname(siamdyn.__file__), "py.typed"))
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["siamdyn"]


def _undocumented(name: str, obj: object) -> list[str]:
    """`name` and its public methods and properties that have no docstring of their own (a
    dataclass's generated signature is not one)."""
    doc = obj.__doc__ or ""
    missing = [name] if not doc.strip() or doc.startswith(f"{getattr(obj, '__name__', '')}(") else []
    if inspect.isclass(obj):
        for attr, value in vars(obj).items():
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if not attr.startswith("_") and callable(func) and not (func.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
    return missing


def test_every_public_name_and_its_public_methods_have_docstrings():
    missing = [m for name in siamdyn.__all__ for obj in [getattr(siamdyn, name)]
               if inspect.isclass(obj) or inspect.isfunction(obj) for m in _undocumented(name, obj)]
    assert not missing, f"public names without a docstring: {missing}"


def test_the_heads_are_standalone_modules():
    torch.manual_seed(0)
    features = torch.randn(16, 20)
    projector, predictor = siamdyn.simsiam_projector(20, 32, 24), siamdyn.simsiam_predictor(24, 8)
    z = projector(features)
    p = predictor(z)
    assert z.shape == p.shape == (16, 24)
    torch.testing.assert_close(z.mean(0), torch.zeros(24), atol=1e-5, rtol=0)  # the affine-free BatchNorm centres z
    p.pow(2).sum().backward()
    assert all(w.grad is not None for w in [*projector.parameters(), *predictor.parameters()])
    assert siamdyn.byol_mlp(20, 32, 12)(features).shape == (16, 12)
    assert siamdyn.linear_predictor(24)(z).shape == (16, 24)


@needs_fmnist
def test_augmentations_knn_and_linear_probe_from_the_package_on_fashion_mnist():
    from siamdyn.data import load_split
    train = load_split("fashion-mnist", FMNIST, "train").balanced_subset(500)
    test = load_split("fashion-mnist", FMNIST, "test").balanced_subset(200)
    augment = siamdyn.BatchAugment(siamdyn.AugmentParams(), *siamdyn.channel_stats(train.images))
    g = torch.Generator().manual_seed(0)
    view1, view2 = augment(train.images[:32], g), augment(train.images[:32], g)
    assert view1.shape == (32, 1, 28, 28) and view1.dtype == torch.float32 and not torch.equal(view1, view2)
    bank, queries = siamdyn.encoder_features(nn.Flatten(), train.images, test.images, augment.normalize)
    knn = siamdyn.weighted_knn(bank, train.labels, queries, test.labels, k=20)
    assert 50 < knn <= 100 and siamdyn.euclidean_knn(bank, train.labels, queries, test.labels) > 50  # raw pixels
    probe = siamdyn.linear_probe(bank, train.labels, queries, test.labels, epochs=3)
    assert probe["linear_test_acc"] > 50


def test_the_docs_split_gradient_snippet_runs_with_only_your_modules_given():
    text = open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    snippet = next(b for b in blocks if "from siamdyn import split_gradient" in b)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU())
    projector, h = nn.Linear(16, 8), nn.Linear(8, 8)
    scope = {"backbone": backbone, "projector": projector, "h": h,
             "view1": torch.randn(10, 1, 6, 6), "view2": torch.randn(10, 1, 6, 6)}
    exec(snippet, scope)  # a name the snippet uses but does not define is a NameError here
    assert scope["split"]["g1_norm/backbone"] > 0 and scope["split"]["g2_norm/projector"] > 0


@needs_fmnist
def test_the_vit_example_trains_a_batchnorm_free_backbone_on_fashion_mnist(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # vit_loop puts examples/ on it to import own_loop
    try:
        example = _load_example("vit_loop")
    finally:
        sys.modules.pop("own_loop", None)  # imported by path: not a module the other tests should see
    vit = example.TinyViT()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in vit.modules())
    assert sum(isinstance(m, nn.LayerNorm) for m in vit.modules()) == 5  # pre-LN: 2 per block, and the last
    history = example.main(["--steps", "6", "--limit", "300", "--batch", "16", "--data-dir", FMNIST])
    assert len(history) == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    assert history[-1]["loss"] < history[0]["loss"]  # the predictor starts to fit
    assert all(k in history[0] for k in ("g1_norm/patch_embed", "g2_norm/block2", "speed/block1", "z_erank",
                                         "cos_images"))
    assert all(r["speed/patch_embed"] > 0 and r["speed/block2"] > 0 for r in history)
