"""One factory for every model: the CIFAR zoo (registered in timm's registry as ``cifar_*``) or any timm model.

Names the zoo shares with ImageNet models (resnet18, resnet50, vgg13, MobileNetV2, ...) resolve to the CIFAR
variant for small images (<= 64 px) and to timm's ImageNet model otherwise. Zoo names are matched
case-insensitively (``ShuffleV1`` and ``shufflev1`` are the same model).
"""

from __future__ import annotations

import timm
import torch.nn as nn

from ..errors import ConfigError
from .cifar import ZOO_MODELS

SMALL_IMAGE_MAX = 64

# Zoo names that also name an ImageNet architecture, and the timm model they mean at ImageNet size.
IMAGENET_EQUIVALENT = {
    "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50",
    "vgg11": "vgg11_bn", "vgg13": "vgg13_bn", "vgg16": "vgg16_bn", "vgg19": "vgg19_bn",
    "mobilenetv2": "mobilenetv2_100",
}

_ZOO_BY_KEY = {name.lower(): registry for name, registry in ZOO_MODELS.items()}


def zoo_names() -> list[str]:
    """The CIFAR zoo's names, spelled as the reference repositories spell them."""
    return sorted(ZOO_MODELS, key=str.lower)


def resolve_model_name(name: str, image_size: int = 32) -> str:
    """The timm registry name that ``name`` means at this image size; ConfigError if there is none."""
    key = str(name).lower()
    small = image_size <= SMALL_IMAGE_MAX
    if key in _ZOO_BY_KEY and (small or key not in IMAGENET_EQUIVALENT):
        return _ZOO_BY_KEY[key]
    if not small and key in IMAGENET_EQUIVALENT:
        return IMAGENET_EQUIVALENT[key]
    if timm.is_model(name):
        return str(name)
    raise ConfigError(
        f"unknown model '{name}'; valid: the CIFAR zoo ({', '.join(zoo_names())}) or any timm model name "
        f"(python -c 'import timm; print(timm.list_models())')"
    )


def check_pretrained(name: str, image_size: int = 32, role: str = "teacher") -> str:
    """The resolved name, if timm hosts weights for it; ConfigError (naming ``<role>.pretrained``) for the zoo."""
    resolved = resolve_model_name(name, image_size)
    if resolved.startswith("cifar_"):
        raise ConfigError(f"{role}.pretrained: none are hosted for CIFAR zoo model '{name}'; "
                          f"pass {role}.checkpoint=<file>")
    return resolved


def create_model(name: str, num_classes: int, image_size: int = 32, pretrained: bool = False, role: str = "teacher",
                 **kwargs) -> nn.Module:
    """Build ``name`` with ``num_classes`` outputs; the resolved registry name is kept as ``model.kdbench_name``.

    With ``pretrained``, timm's weights load (a head for another number of classes is freshly initialised); a
    download that fails (offline, no cached copy) is a ConfigError naming ``<role>.checkpoint`` as the way out.
    """
    resolved = check_pretrained(name, image_size, role) if pretrained else resolve_model_name(name, image_size)
    try:
        model = timm.create_model(resolved, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except OSError as e:  # network, huggingface_hub and urllib errors, a missing local cache: all OSError
        if not pretrained:
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "no detail"
        raise ConfigError(f"{role}.pretrained: cannot download timm weights for '{resolved}' ({type(e).__name__}: "
                          f"{reason}); without network, load a local copy with {role}.checkpoint=<file>") from None
    model.kdbench_name = resolved
    return model
