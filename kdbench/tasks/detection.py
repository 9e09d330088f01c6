"""Object detection (COCO): Faster R-CNN-FPN students and teachers, box mAP (COCOeval's numbers via torchmetrics).

The KD pairing of the detection papers (ReviewKD ``Detection/``, mdistiller ``detection/``): the batch is
transformed once (resized to a drawn short side, normalised, padded) and that tensor feeds both backbones; the
student's RPN proposes and its RoI head samples 512 RoIs per image; the teacher's box head classifies exactly
those RoIs pooled on the teacher's FPN (its RPN and box regression are unused). A method then sees the RoI class
logits of both (background included) scored against the sampled RoIs' labels, the box-head features as the
embedding and the FPN maps p2..p6 as stages; the detector's own losses (RPN objectness and box, RoI box
regression) are added beside the method's terms, whose ``ce`` is the RoI classification loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.batch import Batch
from ..data.coco import detection_collate
from ..data.sampler import EpochSampler, GroupedEpochBatchSampler, ShardSampler, aspect_groups
from ..precision import autocast
from ..errors import ConfigError
from ..methods import Method
from ..models.detection import create_detector
from .base import Metric, Task
from .coco_eval import CocoMAP, coco_map, write_detections

DETECTIONS_FILE = "detections_val.json"
STUDENT_NEEDS = frozenset({"logits", "embedding", "stages"})


@dataclass
class DetectionBatch:
    images: list[torch.Tensor]  # float (3, H, W) in [0, 1], on the device; sizes differ
    targets: list[dict]  # boxes (N, 4) xyxy, labels (N,) in 1..K, ... on the device
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


class DetectionBatches:
    """A DataLoader of ``detection_collate`` tuples as :class:`DetectionBatch` on ``device``."""

    def __init__(self, loader, device):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, targets, index in self.loader:
            images = [im.to(self.device, non_blocking=True).float().div_(255.0) for im in images]
            targets = [{k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                        for k, v in t.items()} for t in targets]
            yield DetectionBatch(images, targets, index)


class DetectionTask(Task):
    name = "detection"
    metrics = (Metric("ap", "AP"), Metric("ap50", "AP50"), Metric("ap75", "AP75"), Metric("ap_s", "AP_S"),
               Metric("ap_m", "AP_M"), Metric("ap_l", "AP_L"))
    loss_names = frozenset({"rpn_objectness", "rpn_box", "box_reg"})

    def create_model(self, name, num_classes, image_size, pretrained=False, role="student"):
        try:
            return create_detector(name, num_classes, self.dataset_cfg, pretrained=pretrained, role=role)
        except ConfigError as e:
            raise ConfigError(f"{role}.name: {e}" if str(e).startswith("unknown") else str(e)) from None

    def refusal(self, model, method: Method, role):
        if missing := set(method.needs_of(role)) - STUDENT_NEEDS:
            return (f"a detector gives RoI logits, box-head embeddings and FPN maps, not {', '.join(sorted(missing))}")
        if method.views or type(method).prepare is not Method.prepare:
            return "the method changes or adds to the batch, which detection batches do not support"
        if method.image_logits_from_stages:
            return "the method builds image-level logits from stage maps, and a detector's logits are per RoI"
        if method.needs_training_samples:
            return ("the method works on training images as such (per-sample memory or a pass over the training "
                    "set), which a detector's RoIs are not")
        return None

    def _workers(self, cfg) -> int:
        from ..data.base import loader_workers

        return loader_workers(int(cfg.dataset.get("num_workers", 0) or 0))

    def loaders(self, cfg, data, world, batch_per_rank, device, views, channels_last):
        """Training batches grouped by aspect ratio (landscape / portrait, as torchvision's reference), order and
        flips seeded by (seed, epoch, sample); the test set sharded over ranks."""
        sampler = EpochSampler(len(data.train), int(cfg.seed), shuffle=True, rank=world.rank, world=world.size)
        batches = GroupedEpochBatchSampler(sampler, aspect_groups(data.train.aspect_ratios()), batch_per_rank)
        workers = self._workers(cfg)
        # a generator of its own: creating an iterator never draws from the global RNG (exact resume)
        train = torch.utils.data.DataLoader(data.train, batch_sampler=batches, collate_fn=detection_collate,
                                            num_workers=workers, pin_memory=device.type == "cuda",
                                            persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
        return DetectionBatches(train, device), batches, self.test_loader(cfg, data, device, world), "torch"

    def test_loader(self, cfg, data, device, world=None, channels_last=False):
        rank, size = (world.rank, world.size) if world is not None else (0, 1)
        workers = self._workers(cfg)
        test = torch.utils.data.DataLoader(data.test, batch_size=int(cfg.trainer.eval_batch_size),
                                           sampler=ShardSampler(len(data.test), rank, size),
                                           collate_fn=detection_collate, num_workers=workers,
                                           pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
        return DetectionBatches(test, device)

    def training_labels(self, data):
        return torch.zeros(0, dtype=torch.long)  # an image has many boxes, no single label

    def forward_student(self, model, batch, method):
        out, labels, losses = model.train_outputs(batch.images, batch.targets)
        scored = Batch(images=out.paired["images"], targets=labels, index=torch.arange(len(labels), device=labels.device))
        return out, scored, losses

    def forward_teacher(self, model, batch, student_out, method):
        return model.paired_outputs(student_out)

    def sample_outputs(self, student, teacher, loader, method):
        """The pair's outputs on the first batch (training pass, gradients off; a detector has no running
        statistics to protect: its BN layers are frozen)."""
        batch = next(iter(loader))
        with torch.no_grad():
            was_training = student.training
            student.train()
            s_out, _, _ = student.train_outputs(batch.images, batch.targets)
            t_out = teacher.paired_outputs(s_out) if teacher is not None else None
            student.train(was_training)
        return s_out, t_out

    @torch.inference_mode()
    def evaluate(self, model, loader, device, precision, num_classes, sharded=False, out_dir=None):
        """COCO box AP, AP50, AP75, AP_S/M/L in percent (COCOeval's numbers; every rank's images when sharded);
        with ``out_dir`` the detections are also written there in the COCO results format."""
        was_training = model.training
        model.eval()
        scores = CocoMAP(sharded=sharded)  # not sharded: the teacher's measurement on rank 0 alone
        for batch in loader:
            with autocast(precision, device):
                detections = model(batch.images)
            detections = [{k: v.float() if k != "labels" else v for k, v in d.items()} for d in detections]
            scores.update(detections, batch.targets)
        model.train(was_training)
        predictions, targets = scores.gathered()
        if out_dir is not None and (not sharded or torch.distributed.get_rank() == 0):
            dataset = loader.loader.dataset
            write_detections(out_dir / DETECTIONS_FILE, predictions, [t["image_id"] for t in targets],
                             dataset.label_to_category_id)
        return {k: round(v, 4) for k, v in coco_map(predictions, targets).items()}
