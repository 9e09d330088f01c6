"""COCO box mAP (pycocotools ``COCOeval`` numbers through torchmetrics) and the COCO results json.

torchmetrics' ``MeanAveragePrecision`` rebuilds a COCO ground truth from tensors. It equals ``COCOeval`` on the
json only when every ground-truth box carries its ``iscrowd`` flag and its ``area`` (else box area decides
small/medium/large and crowd boxes count as misses) and when the IoU and recall thresholds are float64
``np.linspace`` values, as pycocotools builds them (torchmetrics' float32 defaults move ties). Both are done here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write

KEYS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")
_SOURCE = {"ap": "map", "ap50": "map_50", "ap75": "map_75", "ap_s": "map_small", "ap_m": "map_medium",
           "ap_l": "map_large"}
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).tolist()  # float64, the values COCOeval's Params hold
REC_THRESHOLDS = np.linspace(0.0, 1.0, 101).tolist()


def _cpu(d: dict, keys) -> dict:
    return {k: (d[k].detach().cpu() if isinstance(d[k], torch.Tensor) else d[k]) for k in keys if k in d}


def _ordered(predictions: list[dict], targets: list[dict]) -> tuple[list[dict], list[dict]]:
    """Pairs sorted by ``image_id`` (COCOeval's image order, which breaks exact score ties), one per image."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if not targets or any("image_id" not in t for t in targets):
        return list(predictions), list(targets)
    seen, pairs = set(), []
    for p, t in sorted(zip(predictions, targets), key=lambda pt: int(pt[1]["image_id"])):
        if int(t["image_id"]) not in seen:  # the same image twice (a padded shard) counts once
            seen.add(int(t["image_id"]))
            pairs.append((p, t))
    return [p for p, _ in pairs], [t for _, t in pairs]


def coco_map(predictions: list[dict], targets: list[dict]) -> dict:
    """COCO box AP, AP50, AP75, AP_s, AP_m, AP_l in percent (``COCOeval.summarize``'s first six numbers x 100).

    ``predictions``: per image ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,), ``labels`` (N,) contiguous;
    ``targets``: the evaluation split's target dicts (``boxes``, ``labels``, ``iscrowd``, ``area``, ``image_id``),
    same order. A number with no ground truth to score is -100 (COCOeval's -1). Single process; for per-batch
    accumulation and data parallelism use :class:`CocoMAP`.
    """
    from torchmetrics.detection import MeanAveragePrecision

    predictions, targets = _ordered(predictions, targets)
    metric = MeanAveragePrecision(iou_type="bbox", box_format="xyxy", iou_thresholds=IOU_THRESHOLDS,
                                  rec_thresholds=REC_THRESHOLDS, sync_on_compute=False)
    preds = [{"boxes": p["boxes"].detach().float().cpu().reshape(-1, 4), "scores": p["scores"].detach().float().cpu(),
              "labels": p["labels"].detach().long().cpu()} for p in predictions]
    gts = [{"boxes": t["boxes"].float().cpu().reshape(-1, 4), "labels": t["labels"].long().cpu(),
            "iscrowd": t["iscrowd"].long().cpu(), "area": t["area"].float().cpu()} for t in targets]
    metric.update(preds, gts)
    out = metric.compute()
    return {key: float(out[_SOURCE[key]]) * 100.0 for key in KEYS}


class CocoMAP:
    """Accumulates predictions and targets batch by batch; ``compute()`` scores them once with :func:`coco_map`.

    ``sharded`` (the default) and ``torch.distributed`` initialised: ``compute()`` all-gathers every rank's images
    (``all_gather_object``) and every rank returns the numbers of the whole evaluation set; shards may differ in
    size. ``sharded=False`` scores this process's images alone, a collective never entered (one rank measuring a
    teacher while the others wait). torchmetrics' own ``sync_on_compute`` is not used: it all-gathers the per-image list states element by
    element, which needs the same number of images on every rank. ``update`` keeps CPU copies (boxes, scores,
    labels; the targets' boxes, labels, iscrowd, area, image_id).
    """

    def __init__(self, process_group=None, sharded: bool = True):
        self.process_group, self.sharded = process_group, sharded
        self.reset()

    def reset(self) -> None:
        self.predictions: list[dict] = []
        self.targets: list[dict] = []

    def update(self, predictions: list[dict], targets: list[dict]) -> None:
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        self.predictions.extend(_cpu(p, ("boxes", "scores", "labels")) for p in predictions)
        self.targets.extend(_cpu(t, ("boxes", "labels", "iscrowd", "area", "image_id")) for t in targets)

    def gathered(self) -> tuple[list[dict], list[dict]]:
        """Every rank's predictions and targets (this process's alone when not sharded or outside data
        parallelism)."""
        import torch.distributed as dist

        if not (self.sharded and dist.is_available() and dist.is_initialized()) or \
                dist.get_world_size(self.process_group) == 1:
            return list(self.predictions), list(self.targets)
        shards: list = [None] * dist.get_world_size(self.process_group)
        dist.all_gather_object(shards, (self.predictions, self.targets), group=self.process_group)
        return [p for ps, _ in shards for p in ps], [t for _, ts in shards for t in ts]

    def compute(self) -> dict:
        return coco_map(*self.gathered())


def write_detections(path, predictions: list[dict], image_ids, label_to_category_id) -> Path:
    """Write the COCO results json (``[{image_id, category_id, bbox: [x, y, w, h], score}, ...]``, the format
    ``COCO.loadRes`` reads) atomically; labels map back to COCO category ids through ``label_to_category_id``."""
    if len(predictions) != len(image_ids):
        raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
    records = []
    for p, image_id in zip(predictions, image_ids):
        boxes = p["boxes"].detach().cpu().double().reshape(-1, 4).tolist()
        scores = p["scores"].detach().cpu().double().tolist()
        labels = p["labels"].detach().cpu().long().tolist()
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels):
            records.append({"image_id": int(image_id), "category_id": int(label_to_category_id[label]),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return atomic_write(path, lambda f: json.dump(records, f))


__all__ = ["CocoMAP", "KEYS", "coco_map", "write_detections"]
