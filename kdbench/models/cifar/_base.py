"""Shared plumbing for the CIFAR model zoo.

Every zoo network subclasses :class:`CifarNet` and provides:

* ``forward_features(x)``: the trunk, written as plain module calls (scriptable, fx-traceable);
* ``_stage_modules`` / ``_final_modules``: the module names of each feature stage (one per ``feature_info``
  entry) and of what follows the last stage, from which ``forward_intermediates`` and
  ``prune_intermediate_layers`` work;
* ``_logits(x)``: the classifier call (its attribute name is part of the reference checkpoint keys);
* ``_forward_impl(x, want_preact)``: one full pass returning ``(final, feats, preacts)``, the stage lists that
  mdistiller returns as ``feats["feats"]`` / ``feats["preact_feats"]`` (RepDistiller returns the same tensors
  from ``forward(is_feat=True, preact=...)``).

Models are built through timm's ``build_model_with_cfg`` with a CIFAR ``pretrained_cfg`` (no hosted weights), so
``features_only``, ``out_indices``, ``pretrained_cfg`` and ``resolve_data_config`` work as for timm's own models.
"""

# no ``from __future__ import annotations`` here: torch.fx copies ``forward``'s annotations into the code of a
# traced graph, which TorchScript must then resolve

import dataclasses
import math
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import PretrainedCfg, build_model_with_cfg, register_model
from torch import nn

__all__ = ["CIFAR100_MEAN", "CIFAR100_STD", "CifarNet", "build_model", "feature_indices", "register", "run_stage",
           "stage_info", "zoo_cfg"]

_PACKAGE = __name__.rsplit(".", 1)[0]  # "kdbench.models.cifar"

# the project's CIFAR-100 normalisation (conf/dataset/cifar100.yaml)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

_CFG_FIELDS = frozenset(f.name for f in dataclasses.fields(PretrainedCfg))


def zoo_cfg(pool_size: Tuple[int, int], first_conv: str, classifier: str, **extra: Any) -> Dict[str, Any]:
    """A zoo model's pretrained_cfg: CIFAR-100 input (3x32x32, its mean/std), no hosted weights."""
    return dict(
        num_classes=100, input_size=(3, 32, 32), pool_size=pool_size, crop_pct=1.0, interpolation="bilinear",
        mean=CIFAR100_MEAN, std=CIFAR100_STD, first_conv=first_conv, classifier=classifier,
        license="mit", origin_url="https://github.com/megvii-research/mdistiller", **extra,
    )


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


def make_pool(pool_type: str) -> SelectAdaptivePool2d:
    """Global pooling that flattens, or (``''``) passes the map through unpooled."""
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))


class CifarNet(nn.Module):
    """Base class: timm's model interface, plus pre-activation maps in ``forward_intermediates``.

    Subclasses set ``num_classes``, ``num_features``, ``feature_info``, ``global_pool`` and ``head_hidden_size`` (via
    :meth:`_init_pool`), the name of their classifier attribute in ``_head_attr`` (``fc``, ``linear`` or
    ``classifier`` as in the reference keys) and the stage tables described in the module docstring.
    """

    _head_attr: str = "fc"
    _stage_modules: Tuple[Tuple[str, ...], ...] = ()
    _final_modules: Tuple[str, ...] = ()

    # ---- to implement -------------------------------------------------
    def _forward_impl(
        self, x: torch.Tensor, want_preact: bool
    ) -> Tuple[torch.Tensor, List[torch.Tensor], Optional[List[torch.Tensor]]]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map (the one that gets pooled)."""
        raise NotImplementedError

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _enter_stage(self, index: int, x: torch.Tensor, height: int) -> torch.Tensor:
        """Parameter-free work between stages (VGG's max-pools); ``height`` is the input's."""
        return x

    def _forward_final(self, x: torch.Tensor, feats: List[torch.Tensor]) -> torch.Tensor:
        """What ``forward_features`` applies after the last stage (``feats`` holds every stage's output)."""
        for name in self._final_modules:
            x = self.get_submodule(name)(x)
        return x

    def _norm_feature(self, x: torch.Tensor) -> torch.Tensor:
        """``norm=True`` on the last intermediate: the final norm where the net has one (WRN), else identity."""
        return x

    # ---- classifier ----------------------------------------------------
    def _init_pool(self, global_pool: str) -> None:
        self.global_pool = make_pool(global_pool)
        self.head_hidden_size = self.num_features

    def get_classifier(self) -> nn.Module:
        return getattr(self, self._head_attr)

    def _set_classifier(self, head: nn.Module) -> None:
        setattr(self, self._head_attr, head)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.global_pool.is_identity():
            raise ValueError("global_pool='' (no pooling) needs num_classes=0")
        return nn.Linear(self.num_features * self.global_pool.feat_mult(), num_classes)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier with a freshly initialised one (``num_classes=0``: identity head, so ``forward``
        returns the pooled embedding; ``global_pool=''`` also drops the pooling)."""
        self.num_classes = int(num_classes)
        if global_pool is not None:
            self.global_pool = make_pool(global_pool)
        head = self._make_classifier(self.num_classes)
        ref = next(self.parameters(), None)  # follow the trunk's device / dtype
        if ref is not None:
            head = head.to(device=ref.device, dtype=ref.dtype)
        self._set_classifier(head)

    # ---- forward API -----------------------------------------------------
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pooling (adaptive average by default: at 32x32 it equals the references' fixed-size AvgPool),
        then the classifier unless ``pre_logits``."""
        x = self.global_pool(x)
        return x if pre_logits else self._logits(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)

    def _run_stages(self, x: torch.Tensor, last: int) -> List[torch.Tensor]:
        height = x.shape[2]
        feats = []
        for i, names in enumerate(self._stage_modules[: last + 1]):
            x = self._enter_stage(i, x, height)
            for name in names:
                x = self.get_submodule(name)(x)
            feats.append(x)
        return feats

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Union[None, int, Sequence[int]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_preact: bool = False,
    ):
        """One trunk pass returning the stage features (timm's semantics, plus ``return_preact``).

        ``indices``: None = all stages, int n = the last n, a list = those (negative from the end), returned in
        the order given. Returns ``(final, feats)`` (``final`` is ``forward_features(x)``; with ``stop_early`` the
        last stage run), or ``feats`` alone with ``intermediates_only``. ``norm`` applies the final norm (WRN) to
        the last stage's map. ``return_preact`` adds the references' pre-activation maps, always from one full
        pass: ``(final, feats, preacts)`` or ``(feats, preacts)``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: zoo models give NCHW maps only")
        n = len(self.feature_info)
        take = feature_indices(n, indices)
        if return_preact:
            final, feats, preacts = self._forward_impl(x, True)
            assert preacts is not None
            out, pre = [feats[i] for i in take], [preacts[i] for i in take]
            if norm:
                out = [self._norm_feature(f) if i == n - 1 else f for i, f in zip(take, out)]
            return (out, pre) if intermediates_only else (final, out, pre)
        last = max(take) if (stop_early or intermediates_only) else n - 1
        feats = self._run_stages(x, last)
        out = [self._norm_feature(feats[i]) if norm and i == n - 1 else feats[i] for i in take]
        if intermediates_only:
            return out
        final = self._forward_final(feats[-1], feats) if last == n - 1 else feats[-1]
        return final, out

    def prune_intermediate_layers(
        self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Replace the stages after the last of ``indices`` (and the final norm / head conv with ``prune_norm``,
        the pooling and classifier with ``prune_head``) by identities; return the absolute indices."""
        take = feature_indices(len(self.feature_info), indices)
        pruned = [name for names in self._stage_modules[max(take) + 1:] for name in names]
        if prune_norm:
            pruned += list(self._final_modules)
        for name in pruned:
            self.set_submodule(name, nn.Identity())
        if prune_head:
            self.reset_classifier(0, "")
        return take


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


def register(cfg: Dict[str, Any]) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """``timm.models.register_model`` with ``cfg`` as the model's pretrained_cfg, filed under timm module
    name ``"cifar"``.

    The family files share their names with timm's own ``resnet``/``resnetv2``/``vgg`` modules; filing the entry
    points under the package keeps ``timm.list_models(module="resnet")`` free of CIFAR models and makes
    ``timm.list_models(module="cifar")`` list the whole zoo. timm reads the cfg from the package's
    ``default_cfgs``.
    """
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        fn.__module__ = _PACKAGE
        sys.modules[_PACKAGE].default_cfgs[fn.__name__] = cfg
        return register_model(fn)
    return deco


def build_model(model_name: str, ctor: Callable[..., nn.Module], pretrained: bool, kwargs: Dict[str, Any],
                feature_levels: int) -> nn.Module:
    """Common body of the ``cifar_*`` timm entry points: timm's ``build_model_with_cfg`` (features_only via
    ``forward_intermediates``; ``feature_cls='hook'`` and ``'fx'`` work too)."""
    if pretrained:
        raise ValueError(
            f"{model_name}: the CIFAR zoo hosts no pretrained weights; create the model with "
            "pretrained=False and load a checkpoint, e.g. "
            "model.load_state_dict(torch.load(path)['model'], strict=True)"
        )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    cfg = kwargs.pop("pretrained_cfg", None)
    if isinstance(cfg, dict):  # a dict overlays the zoo's cfg (keys PretrainedCfg lacks are ignored)
        overlay = {**{k: v for k, v in cfg.items() if k in _CFG_FIELDS}, **overlay}
        cfg = None
    feature_cfg = dict(feature_cls="getter", out_indices=tuple(range(feature_levels)), no_rewrite=True)
    feature_cfg.update(kwargs.pop("feature_cfg", None) or {})
    model = build_model_with_cfg(
        ctor, model_name, pretrained=False, pretrained_cfg=cfg, pretrained_cfg_overlay=overlay or None,
        feature_cfg=feature_cfg, cache_dir=kwargs.pop("cache_dir", None), **kwargs,
    )
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model
