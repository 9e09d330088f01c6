"""The CIFAR zoo as timm models: every ``cifar_*`` model answers what timm promises of its own models.

Per model (default suite): the registered pretrained_cfg and what timm derives from it (data config, the
first-conv and classifier names), forward and backward, the head interface (``num_features``,
``head_hidden_size``, ``forward_head(pre_logits=)``, ``reset_classifier`` with and without pooling),
``features_only`` with ``out_indices`` agreeing with ``forward_intermediates``, and torch.fx feature extraction
agreeing with both. Under ``-m slow``: TorchScript, the hook extractor, fx in train mode with a backward pass,
and the ``forward_intermediates`` options on every model.
"""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from timm.data import resolve_data_config
from torch.fx import symbolic_trace

from kdbench.models import create_model, run_model
from kdbench.models.cifar import ZOO_MODELS
from kdbench.models.cifar._base import CIFAR100_MEAN, CIFAR100_STD

NAMES = sorted(ZOO_MODELS.values())
# one model per family for the finer-grained checks
FAMILIES = ["cifar_resnet8", "cifar_wrn_16_2", "cifar_vgg8", "cifar_mobilenetv2", "cifar_shufflev1",
            "cifar_shufflev2", "cifar_resnet18"]


def _x(batch: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)  # same construction order => same weights, so variants can be compared
    return timm.create_model(name, **kwargs).eval()


@functools.lru_cache(maxsize=None)
def _reference(name: str):
    """A model, its logits and all its stage maps on ``_x()`` (cached per model)."""
    model = _build(name)
    with torch.no_grad():
        final, feats = model.forward_intermediates(_x())
        logits = model(_x())
    return model, logits, final, feats


@pytest.fixture(scope="module", autouse=True)
def _drop_cache():
    yield
    _reference.cache_clear()


def _equal(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------- registry / cfg

def test_the_whole_zoo_is_registered_with_cfgs_and_no_weights():
    assert sorted(timm.list_models(module="cifar")) == NAMES
    assert timm.list_models("cifar_*", pretrained=True) == []  # nothing to download
    for name in NAMES:
        cfg = timm.get_pretrained_cfg(name)
        assert cfg is not None and cfg.architecture == name and not cfg.has_weights


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_cfg(name):
    model, logits, final, _ = _reference(name)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 100 == model.num_classes
    assert tuple(cfg["mean"]) == CIFAR100_MEAN and tuple(cfg["std"]) == CIFAR100_STD
    data = resolve_data_config(model=model)
    assert data["input_size"] == (3, 32, 32) and data["mean"] == CIFAR100_MEAN and data["std"] == CIFAR100_STD
    keys = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in keys and f"{cfg['classifier']}.weight" in keys
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    assert tuple(final.shape[-2:]) == tuple(cfg["pool_size"])


def test_cfg_overrides_and_in_chans():
    model = timm.create_model("cifar_resnet8", pretrained_cfg_overlay=dict(mean=(0.5,) * 3))
    assert model.pretrained_cfg["mean"] == (0.5,) * 3 and model.pretrained_cfg["input_size"] == (3, 32, 32)
    gray = timm.create_model("cifar_vgg8", in_chans=1, num_classes=10)
    assert gray.block0[0].weight.shape[1] == 1 and gray(torch.randn(2, 1, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------------------------------- forward / backward

@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name):
    model = _build(name, num_classes=42).train()
    out = model(_x(batch=2))
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("name", NAMES)
def test_head_interface(name):
    model, logits, final, _ = _reference(name)
    model = _build(name)  # a private copy: the head is replaced below
    pool = tuple(model.pretrained_cfg["pool_size"])
    with torch.no_grad():
        assert final.shape[1] == model.num_features and tuple(final.shape[-2:]) == pool
        pre = model.forward_head(final, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size) and model.head_hidden_size == model.num_features
        assert torch.equal(model.forward_head(final), logits)
        model.reset_classifier(0)
        assert model.num_classes == 0 and torch.equal(model(_x()), pre)
        model.reset_classifier(0, "")
        assert tuple(model(_x()).shape) == (1, model.num_features, *pool)
        model.reset_classifier(7, "avg")
        assert model(_x()).shape == (1, 7) and model.get_classifier().in_features == model.num_features
    bare = _build(name, num_classes=0, global_pool="")
    with torch.no_grad():
        assert tuple(bare(_x()).shape) == (1, model.num_features, *pool)


def test_other_global_pools():
    model = timm.create_model("cifar_resnet8", num_classes=5, global_pool="catavgmax").eval()
    assert model.get_classifier().in_features == 2 * model.num_features and model(_x()).shape == (1, 5)
    with pytest.raises(ValueError, match="no pooling"):
        timm.create_model("cifar_resnet8", global_pool="")  # a linear head needs pooled input


# ------------------------------------------------------------------- features_only and forward_intermediates

@pytest.mark.parametrize("name", NAMES)
def test_features_only_agrees_with_forward_intermediates(name):
    model, _, _, feats = _reference(name)
    n = len(model.feature_info)
    everything = _build(name, features_only=True)
    picked = _build(name, features_only=True, out_indices=(1, -1))
    assert everything.feature_info.channels() == [f["num_chs"] for f in model.feature_info]
    assert picked.feature_info.channels() == [model.feature_info[i]["num_chs"] for i in (1, n - 1)]
    assert picked.feature_info.reduction() == [model.feature_info[i]["reduction"] for i in (1, n - 1)]
    assert everything.pretrained_cfg["input_size"] == (3, 32, 32)
    with torch.no_grad():
        assert _equal(everything(_x()), feats)
        assert _equal(picked(_x()), [feats[1], feats[-1]])
    for f, info in zip(feats, model.feature_info):
        assert f.shape[1] == info["num_chs"] and f.shape[-1] == 32 // info["reduction"]


@pytest.mark.parametrize("name", NAMES)
def test_fx_feature_extraction(name):
    model, logits, _, feats = _reference(name)
    with torch.no_grad():
        assert torch.equal(symbolic_trace(model)(_x()), logits)
        assert _equal(_build(name, features_only=True, feature_cls="fx")(_x()), feats)


def _check_intermediate_options(name):
    model, _, final, feats = _reference(name)
    n, x = len(feats), _x()
    with torch.no_grad():
        # the pre-activation path (kdbench's run_model) gives the same stage maps in the same pass
        final_p, feats_p, pre = model.forward_intermediates(x, return_preact=True)
        assert torch.equal(final_p, final) and _equal(feats_p, feats) and len(pre) == n
        assert torch.equal(model.forward_features(x), final)
        # stop_early: the final output is the last stage run
        out, inter = model.forward_intermediates(x, indices=[0, 1], stop_early=True)
        assert torch.equal(out, feats[1]) and _equal(inter, feats[:2])
        assert _equal(model.forward_intermediates(x, indices=2, intermediates_only=True), feats[-2:])
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0]
        # norm=True: the final norm on the last stage where the net has one (WRN: BN-ReLU), so it is `final`
        assert torch.equal(normed, final if name.startswith("cifar_wrn") else feats[-1])
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


def _check_prune(name):
    _, _, _, feats = _reference(name)
    model = _build(name)
    assert model.prune_intermediate_layers([0, 2], prune_norm=True) == [0, 2]
    assert model.num_classes == 0
    with torch.no_grad():
        assert _equal(model.forward_intermediates(_x(), indices=[0, 2], intermediates_only=True),
                      [feats[0], feats[2]])
        out, inter = model.forward_intermediates(_x(), indices=[0, 2], stop_early=True)
    assert torch.equal(out, feats[2])
    pruned = sum(p.numel() for p in model.parameters())
    assert pruned < sum(p.numel() for p in _reference(name)[0].parameters())


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_intermediates_options(name):
    _check_intermediate_options(name)


@pytest.mark.parametrize("name", FAMILIES)
def test_prune_intermediate_layers(name):
    _check_prune(name)


def test_kdbench_interface_unchanged():
    """run_model's contract (stages, pre-activation maps, embedding, logits) on a timm-built zoo model."""
    model = create_model("wrn_16_2", 100).eval()
    with torch.no_grad():
        out = run_model(model, _x(2), {"logits", "embedding", "stages", "preact"})
        assert torch.equal(out.logits, model(_x(2)))
        final, stages = model.forward_intermediates(_x(2))
    assert _equal(out.stages, stages) and len(out.preact) == len(stages)
    assert out.embedding.shape == (2, model.num_features)
    assert model.kdbench_name == "cifar_wrn_16_2" and model.pretrained_cfg["architecture"] == "cifar_wrn_16_2"


# ------------------------------------------------------------------------------------------ exhaustive (slow)

@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_torchscript(name):
    model, logits, _, _ = _reference(name)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(model)(_x()), logits)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_hook_feature_extraction(name):
    _, _, _, feats = _reference(name)
    with torch.no_grad():
        assert _equal(_build(name, features_only=True, feature_cls="hook")(_x()), feats)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_fx_train_mode_backward(name):
    traced = symbolic_trace(_build(name, num_classes=42).train())
    traced(_x(2)).mean().backward()
    assert all(p.grad is not None for p in traced.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(NAMES) - set(FAMILIES)))
def test_forward_intermediates_options_rest_of_zoo(name):
    _check_intermediate_options(name)
    _check_prune(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_other_input_sizes(name):
    """Inputs other than 32x32 (timm sizes inputs from the cfg; the zoo also takes 16 and 64 px)."""
    model = _reference(name)[0]
    for size in (16, 64):
        with torch.no_grad():
            final, feats = model.forward_intermediates(_x(size=size))
            assert torch.equal(model(_x(size=size)), model.forward_head(final))
            assert torch.equal(symbolic_trace(model)(_x(size=size)), model(_x(size=size)))
        assert [f.shape[1] for f in feats] == [i["num_chs"] for i in model.feature_info]
