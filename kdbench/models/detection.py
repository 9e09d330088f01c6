"""Faster R-CNN + FPN detectors (torchvision), set up as the Detectron2 configs of the detection KD papers
(ReviewKD ``Detection/``, mdistiller ``detection/``: ``Base-Distillation.yaml``).

Backbones: ResNet-18/34/50/101 with FPN on layer1-4 (frozen BN; stem and layer1 frozen: Detectron2's FREEZE_AT 2)
and MobileNetV2 with FPN on ``features`` 3, 6, 13, 17 (24/32/96/320 channels, the ends of the stride-4/8/16/32
stages as mdistiller's m2-m5; every layer trainable, frozen BN). FPN: 256 channels, p2-p6 (p6 = max-pool of p5).
RPN: 2000 proposals per level before NMS, ``rpn_post_nms_train`` (1000) per image after it in training, 1000 at
test; RoI head: ``rois_per_image`` (512) sampled RoIs per image, 25% foreground, ground truth appended, a 2-FC
head of ``representation_size`` (1024); test: score 0.05, NMS 0.5, 100 detections. Training images are resized
to a short side drawn from ``train_sizes`` (max ``max_size``), evaluation to the last of ``train_sizes``.
Labels are contiguous, 0 = background (torchvision's convention; Detectron2 puts background last).

What torchvision does differently from Detectron2: RoIAlign is not pixel-aligned (``aligned=False``) and samples
2 points per bin (Detectron2's ROIAlignV2: aligned, adaptive sampling); box regression and RPN use smooth-L1 with
beta 1/9 (Detectron2: L1, beta 0).

:meth:`Detector.train_outputs` is the KD step's student pass: one transform of the batch, the student's RPN and
RoI sampling, its RoI class logits, box features and FPN maps; :meth:`Detector.paired_outputs` is the teacher's
pass on the same transformed images and the student's sampled proposals (its own RPN and box regression unused).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torchvision.models import mobilenet_v2, resnet
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import ConfigError
from .outputs import ModelOutput

RESNETS = {"resnet18": resnet.ResNet18_Weights, "resnet34": resnet.ResNet34_Weights,
           "resnet50": resnet.ResNet50_Weights, "resnet101": resnet.ResNet101_Weights}
MOBILENETS = ("mobilenetv2", "mobilenet_v2")
MOBILENET_TAPS = {"3": "0", "6": "1", "13": "2", "17": "3"}  # features index -> FPN input (m2..m5)
MOBILENET_CHANNELS = [24, 32, 96, 320]


@dataclass(frozen=True)
class DetectorSettings:
    train_sizes: tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    max_size: int = 1333
    rpn_post_nms_train: int = 1000
    rois_per_image: int = 512
    representation_size: int = 1024
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # normalisation of RGB in [0, 1] (ImageNet statistics)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


def _settings(cfg) -> DetectorSettings:
    """Settings from a dataset config's keys (``train_sizes``, ``image_size``, ``max_size``, ``mean``, ``std``,
    ``detector.*``); the evaluation size (``image_size``) must be the last training size, where torchvision's
    transform takes it."""
    if cfg is None:
        return DetectorSettings()
    sizes = tuple(int(s) for s in (cfg.get("train_sizes") or DetectorSettings.train_sizes))
    if cfg.get("image_size") is not None and int(cfg.image_size) != sizes[-1]:
        raise ConfigError(f"dataset.image_size: the evaluation short side ({cfg.image_size}) must be the last of "
                          f"dataset.train_sizes ({list(sizes)})")
    detector = {k: int(v) for k, v in dict(cfg.get("detector") or {}).items()}
    unknown = set(detector) - set(DetectorSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"dataset.detector.{sorted(unknown)[0]}: unknown key; valid: rpn_post_nms_train, "
                          "rois_per_image, representation_size")
    return DetectorSettings(train_sizes=sizes, max_size=int(cfg.get("max_size", 1333)),
                            mean=tuple(float(m) for m in cfg.get("mean") or DetectorSettings.mean),
                            std=tuple(float(v) for v in cfg.get("std") or DetectorSettings.std), **detector)


def backbone_key(name: str) -> str:
    key = str(name).lower()
    if key in RESNETS or key in MOBILENETS:
        return "mobilenetv2" if key in MOBILENETS else key
    raise ConfigError(f"unknown detection backbone '{name}'; valid: {', '.join([*RESNETS, 'MobileNetV2'])}")


def _weights(enum, pretrained: bool, key: str, role: str):
    if not pretrained:
        return None
    weights = enum.IMAGENET1K_V1
    try:
        weights.get_state_dict(progress=False)  # fetch (or find in torch's cache) before building
    except OSError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{role}.pretrained: cannot download torchvision's ImageNet weights for the {key} backbone "
                          f"({reason}); without network, load a local copy with {role}.checkpoint=<file>") from None
    return weights


def build_backbone(key: str, pretrained: bool = False, role: str = "student") -> BackboneWithFPN:
    if key in RESNETS:
        return resnet_fpn_backbone(backbone_name=key, weights=_weights(RESNETS[key], pretrained, key, role),
                                   norm_layer=FrozenBatchNorm2d, trainable_layers=3)
    from torchvision.models import MobileNet_V2_Weights

    body = mobilenet_v2(weights=_weights(MobileNet_V2_Weights, pretrained, key, role), norm_layer=FrozenBatchNorm2d)
    return BackboneWithFPN(body.features, return_layers=MOBILENET_TAPS, in_channels_list=MOBILENET_CHANNELS,
                           out_channels=256, extra_blocks=LastLevelMaxPool())


class Detector(FasterRCNN):
    """A torchvision Faster R-CNN (its state_dict keys are torchvision's) with the KD step's two passes."""

    def __init__(self, backbone: str, num_classes: int, settings: DetectorSettings = DetectorSettings(),
                 pretrained: bool = False, role: str = "student"):
        key = backbone_key(backbone)
        body = build_backbone(key, pretrained, role)
        rep = settings.representation_size
        super().__init__(
            body, num_classes=None, min_size=settings.train_sizes, max_size=settings.max_size,
            image_mean=list(settings.mean), image_std=list(settings.std),
            rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=settings.rpn_post_nms_train,
            rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000,
            box_head=TwoMLPHead(body.out_channels * 7 * 7, rep), box_predictor=FastRCNNPredictor(rep, num_classes + 1),
            box_batch_size_per_image=settings.rois_per_image, box_positive_fraction=0.25)
        self.kdbench_name = f"fasterrcnn_{key}_fpn"

    def roi_outputs(self, features, proposals, image_sizes):
        """(class logits, box regression, box-head features) of ``proposals`` pooled on ``features``."""
        heads = self.roi_heads
        box_features = heads.box_head(heads.box_roi_pool(features, proposals, image_sizes))
        logits, regression = heads.box_predictor(box_features)
        return logits, regression, box_features

    def train_outputs(self, images: list[torch.Tensor], targets: list[dict]):
        """The student's training pass: (outputs, labels of the sampled RoIs, the detector's own losses).

        ``outputs.logits``: class logits of every sampled RoI, background included (sum of RoIs x classes + 1);
        ``embedding``: their box-head features; ``stages``: the FPN maps p2..p6; ``paired``: what the teacher's
        pass needs (the transformed images and the sampled proposals). The RoI classification loss is not among
        the losses: it is the method's ``ce`` term on these logits and labels."""
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, features, targets)
        proposals, _, labels, regression_targets = self.roi_heads.select_training_samples(proposals, targets)
        logits, regression, box_features = self.roi_outputs(features, proposals, image_list.image_sizes)
        _, box_loss = fastrcnn_loss(logits, regression, labels, regression_targets)
        out = ModelOutput(logits=logits, embedding=box_features, stages=list(features.values()),
                          paired={"images": image_list.tensors, "image_sizes": image_list.image_sizes,
                                  "proposals": proposals})
        losses = {"rpn_objectness": rpn_losses["loss_objectness"], "rpn_box": rpn_losses["loss_rpn_box_reg"],
                  "box_reg": box_loss}
        return out, torch.cat(labels), losses

    def paired_outputs(self, student: ModelOutput) -> ModelOutput:
        """The teacher's pass on the student's transformed images and sampled proposals."""
        paired = student.paired
        features = self.backbone(paired["images"])
        logits, _, box_features = self.roi_outputs(features, paired["proposals"], paired["image_sizes"])
        return ModelOutput(logits=logits, embedding=box_features, stages=list(features.values()))


def create_detector(name: str, num_classes: int, dataset_cfg=None, pretrained: bool = False,
                    role: str = "student") -> Detector:
    """A Faster R-CNN-FPN with backbone ``name`` for ``num_classes`` foreground classes (+ background);
    ``pretrained``: the backbone starts from torchvision's ImageNet weights (the students of the papers)."""
    return Detector(name, num_classes, _settings(dataset_cfg), pretrained=pretrained, role=role)
