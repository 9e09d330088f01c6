"""Shared plumbing for the CIFAR model zoo.

Every zoo network subclasses :class:`CifarNet` and implements one method,
``_forward_impl(x, want_preact)``, which runs the trunk once and returns
``(final_map, feats, preacts)``.  The timm-style API (``forward_features``,
``forward_head``, ``forward_intermediates``, ``get_classifier``,
``reset_classifier``) is built on top of it here.

``feats``/``preacts`` follow the stage lists that mdistiller returns as
``feats["feats"]`` / ``feats["preact_feats"]`` (RepDistiller returns the same
tensors from ``forward(is_feat=True, preact=...)``, plus the pooled vector).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import math

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

__all__ = ["CifarNet", "build_model", "feature_indices", "register", "run_stage", "stage_info"]

# kwargs that timm.create_model always forwards to an entry point; the zoo has
# no pretrained configs, so they are dropped.
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def feature_indices(num_stages: int, indices: Union[None, int, Sequence[int]]) -> List[int]:
    """Resolve ``indices`` (None = all, int n = last n, list = those; negative
    entries count from the end) into absolute stage indices."""
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"indices={indices}: last-n must be in 1..{num_stages}")
        return list(range(num_stages - indices, num_stages))
    out = []
    for i in indices:
        j = int(i) + num_stages if int(i) < 0 else int(i)
        if not 0 <= j < num_stages:
            raise IndexError(f"stage index {i} out of range for {num_stages} stages")
        out.append(j)
    return out


class CifarNet(nn.Module):
    """Base class: timm-style interface over ``_forward_impl``.

    Subclasses set ``num_classes``, ``num_features``, ``feature_info`` and the
    name of their classifier attribute in ``_head_attr`` (the reference
    repositories use ``fc``, ``linear`` or ``classifier``; the attribute name is
    part of the checkpoint keys so it is kept per family).
    """

    _head_attr: str = "fc"
    num_classes: int
    num_features: int
    feature_info: List[Dict[str, Any]]

    # ---- to implement -------------------------------------------------
    def _forward_impl(
        self, x: torch.Tensor, want_preact: bool
    ) -> Tuple[torch.Tensor, List[torch.Tensor], Optional[List[torch.Tensor]]]:
        raise NotImplementedError

    # ---- classifier ----------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return getattr(self, self._head_attr)

    def _set_classifier(self, head: nn.Module) -> None:
        setattr(self, self._head_attr, head)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier with a freshly initialised one (``num_classes=0``
        gives an identity head, so ``forward`` returns the pooled embedding)."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"only global average pooling is supported, got {global_pool!r}")
        self.num_classes = int(num_classes)
        head = self._make_classifier(self.num_classes)
        ref = next(self.parameters(), None)  # follow the trunk's device / dtype
        if ref is not None:
            head = head.to(device=ref.device, dtype=ref.dtype)
        self._set_classifier(head)

    # ---- forward API -----------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final post-activation feature map (the one that gets pooled)."""
        return self._forward_impl(x, False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool + flatten, then the classifier unless ``pre_logits``.

        Adaptive pooling: at 32x32 input it equals the references' fixed-size
        AvgPool, and it also accepts other input resolutions.
        """
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Union[None, int, Sequence[int]] = None,
        intermediates_only: bool = False,
        return_preact: bool = False,
    ):
        """One trunk pass returning the stage features.

        Returns ``(final, feats)``; ``(final, feats, preacts)`` with
        ``return_preact``; only ``feats`` (or ``(feats, preacts)``) with
        ``intermediates_only``.  ``final`` is ``forward_features(x)``.
        """
        final, feats, preacts = self._forward_impl(x, return_preact)
        take = feature_indices(len(self.feature_info), indices)
        feats = [feats[i] for i in take]
        if return_preact:
            assert preacts is not None
            preacts = [preacts[i] for i in take]
            return (feats, preacts) if intermediates_only else (final, feats, preacts)
        return feats if intermediates_only else (final, feats)


def run_stage(blocks: nn.Sequential, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run a stage; return its output and the pre-activation of its last block
    (the references' ``is_last`` convention).  The last block must provide
    ``forward_with_preact``."""
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        if i == last:
            return block.forward_with_preact(x)
        x = block(x)
    raise ValueError("empty stage")


def run_stages(stem_out: torch.Tensor, stages: Sequence[nn.Sequential]):
    """Run the stages after the stem; return (final, feats, preacts), both lists starting with the stem output
    (the ResNet / ShuffleNetV1 references list the post-ReLU stem as feats[0] and preacts[0])."""
    x, feats, preacts = stem_out, [stem_out], [stem_out]
    for stage in stages:
        x, pre = run_stage(stage, x)
        feats.append(x)
        preacts.append(pre)
    return x, feats, preacts


def init_fan_out_normal(model: nn.Module) -> None:
    """The VGG / MobileNetV2 references' init: conv N(0, sqrt(2 / fan_out)), BN (1, 0), linear N(0, 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def init_kaiming_fan_out(model: nn.Module) -> None:
    """The CIFAR ResNet references' init: conv kaiming-normal (fan_out, relu), norm layers (1, 0)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def stage_info(chs: Sequence[int], reductions: Sequence[int], modules: Sequence[str]) -> List[Dict[str, Any]]:
    return [
        {"num_chs": int(c), "reduction": int(r), "module": str(m)}
        for c, r, m in zip(chs, reductions, modules)
    ]


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``timm.models.register_model``, filed under timm module name ``"cifar"``.

    The family files share their names with timm's own ``resnet``/``resnetv2``/``vgg``
    modules; filing the entry points under the package keeps
    ``timm.list_models(module="resnet")`` free of CIFAR models and makes
    ``timm.list_models(module="cifar")`` list the whole zoo.
    """
    fn.__module__ = __name__.rsplit(".", 1)[0]  # "kdbench.models.cifar"
    return register_model(fn)


def build_model(model_name: str, ctor: Callable[..., nn.Module], pretrained: bool, kwargs: Dict[str, Any], **arch: Any) -> nn.Module:
    """Common body of the ``cifar_*`` timm entry points."""
    if pretrained:
        raise ValueError(
            f"{model_name}: the CIFAR zoo hosts no pretrained weights; create the model with "
            "pretrained=False and load a checkpoint, e.g. "
            "model.load_state_dict(torch.load(path)['model'], strict=True)"
        )
    kwargs = {k: v for k, v in kwargs.items() if v is not None and k not in _TIMM_ONLY_KWARGS}
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    model = ctor(**arch, **kwargs)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model
