"""The model factory: name resolution, any timm model through the same interface, checkpoint loading."""

from __future__ import annotations

import pytest
import torch

from kdbench.errors import ConfigError
from kdbench.models import create_model, load_checkpoint, resolve_model_name, run_model, supports


@pytest.mark.parametrize("name, size, expected", [
    ("resnet8x4", 32, "cifar_resnet8x4"), ("ShuffleV1", 32, "cifar_shufflev1"), ("shufflev1", 32, "cifar_shufflev1"),
    ("MobileNetV2", 32, "cifar_mobilenetv2"), ("resnet18", 32, "cifar_resnet18"), ("ResNet50", 32, "cifar_resnet50"),
    ("resnet18", 224, "resnet18"), ("vgg13", 224, "vgg13_bn"), ("MobileNetV2", 224, "mobilenetv2_100"),
    ("resnet8x4", 224, "cifar_resnet8x4"), ("convnext_atto", 32, "convnext_atto"),
])
def test_names_resolve_by_image_size(name, size, expected):
    assert resolve_model_name(name, size) == expected


def test_unknown_name_lists_the_zoo():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet9'; valid: the CIFAR zoo \(.*resnet8x4.*\) or any timm"):
        resolve_model_name("resnet9")


def test_zoo_and_timm_models_answer_the_same_interface():
    x = torch.randn(2, 3, 32, 32)
    for name in ("resnet8x4", "resnet10t"):
        model = create_model(name, 10).eval()
        out = run_model(model, x, {"logits", "embedding", "stages"})
        assert out.logits.shape == (2, 10) and out.embedding.shape == (2, model.num_features)
        assert len(out.stages) >= 3 and all(f.ndim == 4 for f in out.stages)
        assert torch.allclose(out.logits, model(x), atol=1e-5)
    assert supports(create_model("resnet8x4", 10), {"preact"}) is None
    assert "pre-activation" in supports(create_model("resnet10t", 10), {"preact"})


def test_zoo_preact_maps(tmp_path):
    model = create_model("resnet8x4", 100).eval()
    out = run_model(model, torch.randn(2, 3, 32, 32), {"preact"})
    assert len(out.preact) == len(out.stages)
    # ReLU of the pre-activation map is the stage output for the last stage.
    assert torch.allclose(torch.relu(out.preact[-1]), out.stages[-1], atol=1e-6)


def test_community_checkpoint_loads_unchanged(tmp_path):
    source = create_model("wrn_16_2", 100).eval()
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": source.state_dict(), "best_acc": torch.tensor(73.3)}, path)
    target = load_checkpoint(create_model("wrn_16_2", 100).eval(), path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(source(x), target(x))
    # A DataParallel-saved state_dict ('module.' prefix) and a bare state_dict load too.
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    assert torch.equal(load_checkpoint(create_model("wrn_16_2", 100).eval(), path)(x), source(x))
    torch.save(source.state_dict(), path)
    assert torch.equal(load_checkpoint(create_model("wrn_16_2", 100).eval(), path)(x), source(x))


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": create_model("resnet8", 100).state_dict()}, path)
    with pytest.raises(ConfigError, match=r"teacher.checkpoint: .* does not fit model cifar_resnet32x4: .*keys"):
        load_checkpoint(create_model("resnet32x4", 100), path)
