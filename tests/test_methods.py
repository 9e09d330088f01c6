"""kdbench/methods/__init__.py (hyper-parameters checked against the constructor) and the plain logit methods
ce.py, kd.py, dkd.py, pld.py: published defaults, weighting of the named terms, warm-up. The contract every
registered method keeps is tests/test_methods_contract.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import REPO
from kdbench.errors import ConfigError
from kdbench.losses import dkd_loss, kd_loss, pld_loss
from kdbench.methods import Batch, Progress, build_method
from kdbench.models import ModelOutput


def method_cfg(name: str, **overrides):
    cfg = OmegaConf.load(REPO / "conf" / "method" / f"{name}.yaml")
    cfg.merge_with(overrides)
    return cfg


@pytest.fixture()
def batch_and_logits():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, 10, generator=g, requires_grad=True)
    t = torch.randn(8, 10, generator=g) * 3
    y = torch.randint(0, 10, (8,), generator=g)
    return Batch(torch.zeros(8, 3, 4, 4), y, torch.arange(8)), s, t


def progress(epoch):
    return Progress(epoch=epoch, epochs=240, step=0, steps_per_epoch=1)


def test_published_defaults_are_the_config_defaults():
    # mdistiller configs/cifar100/kd.yaml and dkd/res32x4_res8x4.yaml
    assert build_method(method_cfg("kd")).hparams() == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
    assert build_method(method_cfg("dkd")).hparams() == {"ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0,
                                                         "warmup_epochs": 20}
    assert build_method(method_cfg("pld")).hparams() == {"temperature": 1.0, "weight": 1.0}


def test_ce_uses_no_teacher(batch_and_logits):
    batch, s, _ = batch_and_logits
    method = build_method(method_cfg("ce"))
    assert method.uses_teacher is False
    terms = method(ModelOutput(s), None, batch, progress(1))
    assert torch.allclose(terms["ce"], F.cross_entropy(s, batch.targets))


def test_kd_terms_are_weighted(batch_and_logits):
    batch, s, t = batch_and_logits
    terms = build_method(method_cfg("kd"))(ModelOutput(s), ModelOutput(t), batch, progress(1))
    assert torch.allclose(terms["ce"], 0.1 * F.cross_entropy(s, batch.targets))
    assert torch.allclose(terms["kd"], 0.9 * kd_loss(s, t, temperature=4.0))


def test_dkd_warms_up_linearly_over_20_epochs(batch_and_logits):
    batch, s, t = batch_and_logits
    method = build_method(method_cfg("dkd"))
    full = dkd_loss(s, t, batch.targets, alpha=1.0, beta=8.0, temperature=4.0)
    for epoch, scale in ((1, 1 / 20), (10, 0.5), (20, 1.0), (200, 1.0)):
        assert torch.allclose(method(ModelOutput(s), ModelOutput(t), batch, progress(epoch))["dkd"], scale * full)


def test_pld_replaces_cross_entropy(batch_and_logits):
    batch, s, t = batch_and_logits
    terms = build_method(method_cfg("pld", temperature=4.0))(ModelOutput(s), ModelOutput(t), batch, progress(1))
    assert set(terms) == {"pld"}
    assert torch.allclose(terms["pld"], pld_loss(s, t, batch.targets, temperature=4.0))
    terms["pld"].backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("overrides, message", [
    ({"temperature": "hot"}, "method.temperature: expected float"),
    ({"warmup_epochs": 2.5}, "method.warmup_epochs: expected int"),
])
def test_bad_hyper_parameters_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_method(method_cfg("dkd", **overrides))


def test_unknown_hyper_parameter_lists_the_valid_ones():
    cfg = method_cfg("kd")
    OmegaConf.set_struct(cfg, False)
    cfg.tau = 2.0
    with pytest.raises(ConfigError, match="method.tau: unknown hyper-parameter .* valid: temperature, ce_weight, kd_weight"):
        build_method(cfg)


def test_int_is_accepted_where_float_is_declared():
    assert build_method(method_cfg("kd", temperature=2)).temperature == 2.0
