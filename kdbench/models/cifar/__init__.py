"""CIFAR model zoo, architecture-identical to HobbitLong/RepDistiller ``models/``
and megvii-research/mdistiller ``mdistiller/models/cifar/``.

Importing this package registers every model in timm's registry as
``cifar_<lowercase name>``, with a CIFAR-100 ``pretrained_cfg`` (3x32x32 input, no hosted weights), so the
zoo answers timm's whole model interface (``features_only``, ``out_indices``, ``forward_intermediates``,
``resolve_data_config``, torch.fx, TorchScript); :data:`ZOO_MODELS` maps the canonical names (as the
reference repositories spell them) to those registry names::

    model = timm.create_model(ZOO_MODELS["resnet32x4"], num_classes=100)
    model.load_state_dict(torch.load("ckpt_epoch_240.pth")["model"], strict=True)
"""

from __future__ import annotations

from typing import Any, Dict

# the zoo's pretrained_cfgs by registry name, filled as the family modules register their models (timm's
# register_model reads a module's ``default_cfgs``)
default_cfgs: Dict[str, Dict[str, Any]] = {}

from . import mobilenetv2, resnet, resnetv2, shufflenetv1, shufflenetv2, vgg, wrn  # noqa: E402,F401  (registration)
from . import grid  # noqa: E402,F401  (width / depth variants of resnet, wrn and vgg: registration)
from ._base import CifarNet  # noqa: E402

__all__ = ["CifarNet", "ZOO_MODELS", "create_zoo_model"]

# canonical (reference) name -> timm registry name
ZOO_MODELS: Dict[str, str] = {
    "resnet8": "cifar_resnet8",
    "resnet14": "cifar_resnet14",
    "resnet20": "cifar_resnet20",
    "resnet32": "cifar_resnet32",
    "resnet44": "cifar_resnet44",
    "resnet56": "cifar_resnet56",
    "resnet110": "cifar_resnet110",
    "resnet8x4": "cifar_resnet8x4",
    "resnet32x4": "cifar_resnet32x4",
    "wrn_16_1": "cifar_wrn_16_1",
    "wrn_16_2": "cifar_wrn_16_2",
    "wrn_40_1": "cifar_wrn_40_1",
    "wrn_40_2": "cifar_wrn_40_2",
    "vgg8": "cifar_vgg8",
    "vgg11": "cifar_vgg11",
    "vgg13": "cifar_vgg13",
    "vgg16": "cifar_vgg16",
    "vgg19": "cifar_vgg19",
    "MobileNetV2": "cifar_mobilenetv2",
    "ShuffleV1": "cifar_shufflev1",
    "ShuffleV2": "cifar_shufflev2",
    "ResNet18": "cifar_resnet18",
    "ResNet34": "cifar_resnet34",
    "ResNet50": "cifar_resnet50",
}


def create_zoo_model(name: str, num_classes: int = 100, **kwargs) -> CifarNet:
    """Build a zoo model from its canonical name (or its ``cifar_*`` registry name)."""
    import timm

    registry_name = ZOO_MODELS.get(name, name)
    if registry_name not in ZOO_MODELS.values():
        raise KeyError(f"unknown CIFAR zoo model {name!r}; known: {', '.join(ZOO_MODELS)}")
    return timm.create_model(registry_name, num_classes=num_classes, **kwargs)
