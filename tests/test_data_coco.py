"""COCO detection data (kdbench.data.coco), the aspect-grouped batch sampler and COCO box mAP, on a synthetic COCO
set in the real 2017 layout; the mAP is pinned to pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, write_coco
from kdbench.data import DATASETS, build_data, check_data
from kdbench.data.coco import CocoSplit, build_coco, check_coco_root, detection_collate, flip_of
from kdbench.data.sampler import EpochSampler, GroupedEpochBatchSampler, aspect_groups
from kdbench.errors import ConfigError
from kdbench.tasks.coco_eval import KEYS, CocoMAP, coco_map, write_detections

CATEGORIES = (1, 3, 7, 12)


def coco_cfg(root, **overrides):
    cfg = OmegaConf.load(REPO / "conf" / "dataset" / "coco.yaml")
    cfg.merge_with({"root": str(root), "num_classes": len(CATEGORIES), **overrides})
    return cfg


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco") / "coco", n_train=16, n_val=24, categories=CATEGORIES)


@pytest.fixture(scope="module")
def bundle(coco_root):
    return build_data(coco_cfg(coco_root))


def raw(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


# ---------------------------------------------------------------------------------------------- loading


def test_config_registers_coco(coco_root):
    cfg = OmegaConf.load(REPO / "conf" / "dataset" / "coco.yaml")
    assert (cfg.name, cfg.task, cfg.num_classes, cfg.image_size, cfg.augment) == ("coco", "detection", 80, 800,
                                                                                     "detection")
    assert DATASETS["coco"] is build_coco
    check_data(coco_cfg(coco_root))


def test_val_split_keeps_every_image_and_annotation_with_ids_mapped(coco_root, bundle):
    data, val = raw(coco_root, "val"), bundle.test
    assert (bundle.name, bundle.num_classes, bundle.image_size) == ("coco", 4, 800)
    assert val.label_to_category_id == [0, 1, 3, 7, 12]
    assert val.image_ids.tolist() == sorted(im["id"] for im in data["images"])
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    assert val.aspect_ratios() == [sizes[i][0] / sizes[i][1] for i in val.image_ids.tolist()]
    empty = crowd = 0
    for index in range(len(val)):
        image, target, returned = val[index]
        image_id = target["image_id"]
        assert returned == index and image_id == val.image_ids[index]
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, sizes[image_id][1], sizes[image_id][0])
        anns = [a for a in data["annotations"] if a["image_id"] == image_id]
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (len(anns), 4)
        assert target["labels"].dtype == torch.int64 and target["iscrowd"].dtype == torch.int64
        assert target["area"].dtype == torch.float32
        # every annotation kept, in json order, category id <-> label both ways
        assert [val.label_to_category_id[k] for k in target["labels"].tolist()] == [a["category_id"] for a in anns]
        assert target["iscrowd"].tolist() == [a["iscrowd"] for a in anns]
        assert torch.allclose(target["area"], torch.tensor([a["area"] for a in anns]).float())
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        assert torch.equal(target["boxes"], expected.float())
        empty += not anns
        crowd += sum(a["iscrowd"] for a in anns)
    assert empty >= 3 and crowd >= 3
    # evaluation has no augmentation: a seed changes nothing
    image, target, _ = val[(5, 12345)]
    assert torch.equal(image, val[5][0]) and torch.equal(target["boxes"], val[5][1]["boxes"])


def test_train_split_drops_crowd_zero_size_boxes_and_images_without_boxes(coco_root, bundle):
    data, train = raw(coco_root, "train"), bundle.train
    kept = []
    for im in sorted(data["images"], key=lambda im: im["id"]):
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"] and not a["iscrowd"]
                and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        if anns:
            kept.append((im["id"], anns))
    assert train.image_ids.tolist() == [i for i, _ in kept]
    dropped = {im["id"] for im in data["images"]} - set(train.image_ids.tolist())
    assert 100 + 3 * 2 in dropped and 100 + 3 * 3 in dropped  # crowd-only image, image without annotations
    for index, (image_id, anns) in enumerate(kept):
        target = train.target(index)
        assert target["image_id"] == image_id and target["iscrowd"].sum() == 0
        assert [train.label_to_category_id[k] for k in target["labels"].tolist()] == [a["category_id"] for a in anns]
        assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
    assert train.label_to_category_id == bundle.test.label_to_category_id
    assert len(train.aspect_ratios()) == len(train)


def test_training_flip_is_drawn_from_the_seed_and_moves_the_boxes(bundle):
    train = bundle.train
    plain = CocoSplit(train.images, train.images.parent / "annotations" / "instances_train2017.json", train=True,
                      flip=False)
    seeds = list(range(40))
    flips = [flip_of(s) for s in seeds]
    assert 10 < sum(flips) < 30 and 0 < sum(flips[:len(train)]) < len(train)  # a fair coin; both cases below
    for index in range(len(train)):
        seed = seeds[index]
        image, target, _ = train[(index, seed)]
        again, target2, _ = train[(index, seed)]
        assert torch.equal(image, again) and torch.equal(target["boxes"], target2["boxes"])  # same seed, same view
        source, original, _ = plain[(index, seed)]
        width = source.shape[-1]
        if flips[index]:
            assert torch.equal(image, source.flip(-1))
            x1, y1, x2, y2 = original["boxes"].unbind(1)
            assert torch.equal(target["boxes"], torch.stack([width - x2, y1, width - x1, y2], 1))
            for (a1, b1, a2, b2), (c1, _, c2, _) in zip(original["boxes"].int().tolist(),
                                                        target["boxes"].int().tolist()):
                assert torch.equal(image[:, b1:b2, c1:c2], source[:, b1:b2, a1:a2].flip(-1))  # same pixels in the box
        else:
            assert torch.equal(image, source) and torch.equal(target["boxes"], original["boxes"])
        assert torch.equal(target["labels"], original["labels"])


def test_collate_keeps_sizes_apart(bundle):
    images, targets, indices = detection_collate([bundle.test[i] for i in (0, 1, 2)])
    assert [tuple(im.shape) for im in images] == [tuple(bundle.test[i][0].shape) for i in (0, 1, 2)]
    assert [t["image_id"] for t in targets] == bundle.test.image_ids[:3].tolist()
    assert indices.dtype == torch.int64 and indices.tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("missing", ["train2017", "val2017", "annotations/instances_train2017.json",
                                     "annotations/instances_val2017.json"])
def test_missing_layout_is_one_line(tmp_path, missing):
    root = tmp_path / "coco"
    for folder in ("train2017", "val2017", "annotations"):
        (root / folder).mkdir(parents=True)
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}2017.json").write_text("{}")
    target = root / missing
    target.unlink() if target.is_file() else target.rmdir()
    for check in (check_data, check_coco_root, build_data):
        with pytest.raises(ConfigError) as err:
            check(coco_cfg(root))
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"dataset.root: no {missing} ")
        assert str(target.absolute()) in message and "train2017/" in message


def test_coco_cannot_download(tmp_path):
    with pytest.raises(ConfigError, match="^dataset.download: coco cannot be downloaded"):
        check_data(coco_cfg(tmp_path, download=True))


def test_unreadable_annotations_and_too_few_classes_are_one_line(tmp_path, coco_root):
    with pytest.raises(ConfigError, match="^dataset.num_classes: 3 is smaller than the 4 categories"):
        build_data(coco_cfg(coco_root, num_classes=3))
    root = tmp_path / "coco"
    for folder in ("train2017", "val2017", "annotations"):
        (root / folder).mkdir(parents=True)
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}2017.json").write_text("{not json")
    with pytest.raises(ConfigError) as err:
        build_data(coco_cfg(root))
    assert str(err.value).startswith("dataset.root: cannot read coco annotations") and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- grouped sampler


def _groups(size, seed=3):
    return np.random.default_rng(seed).integers(0, 2, size).tolist()


@pytest.mark.parametrize("size,world,batch", [(37, 1, 4), (37, 2, 4), (40, 2, 3), (5, 1, 8)])
def test_grouped_sampler_covers_each_sample_once_in_ceil_batches(size, world, batch):
    groups = _groups(size)
    seen = []
    for rank in range(world):
        sampler = EpochSampler(size, seed=7, rank=rank, world=world)
        grouped = GroupedEpochBatchSampler(EpochSampler(size, seed=7, rank=rank, world=world), groups, batch)
        for epoch in (1, 2):
            sampler.set_epoch(epoch)
            grouped.set_epoch(epoch, 0)
            batches = list(grouped)
            assert len(batches) == len(grouped) == math.ceil(sampler.per_rank / batch) == math.ceil(
                grouped.per_rank / batch)
            flat = [pair for b in batches for pair in b]
            assert sorted(flat) == sorted(sampler)  # every (index, seed) of the rank exactly once
            mixed = [k for k, b in enumerate(batches) if len(b) < batch or len({groups[i] for i, _ in b}) > 1]
            assert all(k >= len(batches) - 2 for k in mixed)  # only the leftovers at the end may mix or be short
            assert all(len(b) == batch for b in batches[:-1])
            if epoch == 1:
                seen.append({i for i, _ in flat})
            assert grouped.epoch == epoch and grouped.seed == 7
    if world > 1 and size % world == 0:
        assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(size))  # ranks disjoint, together all


def test_grouped_sampler_resumes_exactly_mid_epoch():
    groups = _groups(50)
    grouped = GroupedEpochBatchSampler(EpochSampler(50, seed=1, rank=1, world=2), groups, 4)
    grouped.set_epoch(3, 0)
    full = list(grouped)
    for skipped in range(len(full) + 1):
        resumed = GroupedEpochBatchSampler(EpochSampler(50, seed=1, rank=1, world=2), groups, 4)
        resumed.set_epoch(3, skipped * 4)
        assert list(resumed) == full[skipped:] and len(resumed) == len(full) - skipped
    with pytest.raises(ValueError, match="multiple of the batch size"):
        resumed.set_epoch(3, 5)


def test_grouped_loader_batches_by_image_orientation(bundle):
    train = bundle.train
    groups = aspect_groups(train.aspect_ratios())
    assert groups == [int(r >= 1) for r in train.aspect_ratios()] and {0, 1} <= set(groups)
    grouped = GroupedEpochBatchSampler(EpochSampler(len(train), seed=0), groups, 2)
    grouped.set_epoch(1, 0)
    loader = torch.utils.data.DataLoader(train, batch_sampler=grouped, collate_fn=detection_collate)
    batches = list(loader)
    assert len(batches) == math.ceil(len(train) / 2)
    assert sorted(i for _, _, idx in batches for i in idx.tolist()) == list(range(len(train)))
    for images, _, _ in batches[:-2]:
        assert len({im.shape[-1] >= im.shape[-2] for im in images}) == 1


# ---------------------------------------------------------------------------------------------- mAP pin


def noisy_detections(bundle, seed=0) -> list[dict]:
    """Jittered copies of most ground-truth boxes (some with a wrong label) plus false positives, on a
    quarter-pixel grid (exact in float32 and in xywh <-> xyxy), with distinct scores."""
    rng = np.random.default_rng(seed)
    preds, scores = [], rng.permutation(100000)[:2000] / 100000
    used = 0
    for index in range(len(bundle.test)):
        target = bundle.test.target(index)
        boxes, labels = [], []
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            for _ in range(int(rng.integers(0, 3))):
                w, h = box[2] - box[0], box[3] - box[1]
                jitter = rng.normal(0, 0.12, 4) * np.array([w, h, w, h])
                boxes.append(np.array(box) + jitter)
                labels.append(label if rng.random() < 0.85 else int(rng.integers(1, 5)))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 60, 2)
            boxes.append(np.array([x, y, x + rng.uniform(4, 60), y + rng.uniform(4, 60)]))
            labels.append(int(rng.integers(1, 5)))
        boxes = np.round(np.array(boxes).reshape(-1, 4) * 4) / 4
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.25)
        n = len(boxes)
        preds.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels).long(),
                      "scores": torch.tensor(scores[used:used + n], dtype=torch.float32)})
        used += n
    return preds


def cocoeval_stats(gt_json: Path, results) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def run():
        gt = COCO(str(gt_json))
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        return evaluator.stats[:6]

    return quiet(run)


def test_coco_map_equals_cocoeval_and_detections_round_trip(coco_root, bundle, tmp_path):
    val = bundle.test
    preds = noisy_detections(bundle)
    targets = [val.target(i) for i in range(len(val))]
    # the reference: pycocotools on the GT json and results built here in COCO ids and xywh
    results = [{"image_id": int(t["image_id"]), "category_id": val.label_to_category_id[int(label)],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
               for p, t in zip(preds, targets)
               for (x1, y1, x2, y2), label, score in zip(p["boxes"].tolist(), p["labels"].tolist(),
                                                         p["scores"].tolist())]
    gt_json = coco_root / "annotations" / "instances_val2017.json"
    reference = cocoeval_stats(gt_json, results)
    assert sum(len(p["boxes"]) for p in preds) > 60 and 0.05 < reference[0] < 0.95
    assert (reference[3:6] > 0).all()  # small, medium and large all have ground truth here

    ours = coco_map(preds, targets)
    assert list(ours) == list(KEYS)
    assert np.allclose([ours[k] / 100 for k in KEYS], reference, atol=1e-6, rtol=0), (ours, reference)

    # image order does not matter (sorted by image id, as COCOeval's image list)
    order = np.random.default_rng(1).permutation(len(val)).tolist()
    shuffled = coco_map([preds[i] for i in order], [targets[i] for i in order])
    assert shuffled == ours

    # per-batch accumulation gives the same numbers
    metric = CocoMAP()
    for lo in range(0, len(val), 5):
        metric.update(preds[lo:lo + 5], targets[lo:lo + 5])
    assert metric.compute() == ours

    # the written results json scores the same through COCO.loadRes
    path = write_detections(tmp_path / "detections_val.json", preds, val.image_ids.tolist(), val.label_to_category_id)
    written = json.loads(path.read_text())
    assert len(written) == len(results) and {r["category_id"] for r in written} <= set(CATEGORIES)
    assert sorted(written[0]) == ["bbox", "category_id", "image_id", "score"]
    assert np.array_equal(cocoeval_stats(gt_json, str(path)), reference)


def test_map_without_crowd_and_area_would_drift(bundle):
    """The reason iscrowd and area are passed: dropping them changes the numbers on this set."""
    val = bundle.test
    preds = noisy_detections(bundle)
    targets = [val.target(i) for i in range(len(val))]
    ours = coco_map(preds, targets)
    from torchmetrics.detection import MeanAveragePrecision

    plain = MeanAveragePrecision(iou_type="bbox")
    plain.update(preds, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
    out = plain.compute()
    assert abs(float(out["map"]) * 100 - ours["ap"]) > 1e-3 or abs(float(out["map_small"]) * 100 - ours["ap_s"]) > 1e-3


def _map_rank(rank: int, world: int, init_file: str, data: str, out: str) -> None:
    """One evaluation rank: its ShardSampler share of the images, then CocoMAP.compute() over all ranks."""
    import torch.distributed as dist

    from kdbench.data.sampler import ShardSampler

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        preds, targets = torch.load(data, weights_only=False)
        metric = CocoMAP()
        shard = list(ShardSampler(len(targets), rank, world))
        for lo in range(0, len(shard), 4):
            metric.update([preds[i] for i in shard[lo:lo + 4]], [targets[i] for i in shard[lo:lo + 4]])
        torch.save(metric.compute(), out)
    finally:
        dist.destroy_process_group()


def test_coco_map_under_data_parallelism_with_uneven_shards(bundle, tmp_path):
    """Two gloo processes holding 12 and 11 images: both return the single-process numbers."""
    import torch.multiprocessing as mp

    val = bundle.test
    preds, targets = noisy_detections(bundle)[:23], [val.target(i) for i in range(23)]
    torch.save((preds, targets), tmp_path / "data.pt")
    # fork: the children reuse this process's imports (spawn would re-import torch and kdbench, ~10 s per rank)
    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = [context.Process(target=_map_rank, args=(r, 2, str(tmp_path / "pg"), str(tmp_path / "data.pt"),
                                                                      str(tmp_path / f"rank{r}.pt"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        if p.is_alive():
            p.kill()
        assert p.exitcode == 0
    single = coco_map(preds, targets)
    for r in range(2):
        assert torch.load(tmp_path / f"rank{r}.pt") == single


def test_decode_falls_back_to_pil_for_formats_torchvision_refuses(tmp_path):
    from PIL import Image

    from kdbench.data.coco import decode

    pixels = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(tmp_path / "a.bmp", "BMP")
    Image.fromarray(pixels[..., 0], "L").save(tmp_path / "b.png", "PNG")
    assert torch.equal(decode(str(tmp_path / "a.bmp")), torch.from_numpy(pixels).permute(2, 0, 1))
    grey = decode(str(tmp_path / "b.png"))  # a grey image comes back as 3 equal channels
    assert grey.shape == (3, 12, 20) and torch.equal(grey[0], torch.from_numpy(pixels[..., 0])) and torch.equal(
        grey[0], grey[2])
