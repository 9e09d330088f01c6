"""Shared fixtures: small files in the real on-disk formats, and a way to run the real console scripts."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def write_cifar100(root: Path, n_train: int = 256, n_test: int = 128, classes: int = 100, seed: int = 0) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` exactly as the CIFAR-100 python release lays them out
    (pickled dicts with uint8 ``data`` of shape (N, 3072), ``fine_labels``, ``coarse_labels``, ...).
    Images are learnable: a class-specific colour pattern plus noise."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    patterns = rng.integers(0, 256, size=(classes, 3, 4, 4))

    def batch(n):
        labels = rng.integers(0, classes, size=n)
        base = np.kron(patterns[labels], np.ones((1, 1, 8, 8)))  # (n, 3, 32, 32)
        images = np.clip(base + rng.normal(0, 40, size=base.shape), 0, 255).astype(np.uint8)
        return images.reshape(n, 3072), labels

    for name, n in (("train", n_train), ("test", n_test)):
        data, labels = batch(n)
        entry = {"batch_label": f"{name} batch", "filenames": [f"img_{i}.png" for i in range(n)],
                 "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(), "data": data}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    meta = {"fine_label_names": [f"class_{i}" for i in range(classes)],
            "coarse_label_names": [f"super_{i}" for i in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar"))



@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """In-process tensors in the tests are small: intra-op threads only add contention on a shared 2-core
    machine (and made loss modules several times slower). Restored at the end."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

@pytest.fixture()
def env(tmp_path) -> dict:
    """Environment for CLI runs: private teacher store, W&B offline and never online, no progress bars."""
    e = dict(os.environ)
    e.update(KDBENCH_HOME=str(tmp_path / "store"), WANDB_MODE="offline", WANDB_SILENT="true",
             WANDB_DISABLE_GIT="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    return e


def run_cli(args: list[str], cwd: Path, env: dict, script: str = "kdbench", timeout: int = 600):
    """Run an installed console script (``kdbench`` / ``kdbench-table``) the way a user does."""
    cmd = [sys.executable, "-c", f"import sys; from importlib.metadata import entry_points; "
           f"ep = [e for e in entry_points(group='console_scripts') if e.name == '{script}'][0]; "
           f"sys.argv = ['{script}'] + sys.argv[1:]; sys.exit(ep.load()())", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def read_result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def compose_config(*overrides: str):
    """The kdbench config ``overrides`` compose to, as the command line composes it (in this process)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def float64_default():
    """torch's default dtype float64 within the test (reference numbers computed in float64)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# Small and fast settings every CLI test shares.
FAST = ["trainer.progress=false", "trainer.batch_size=64", "trainer.eval_batch_size=128", "dataset.num_workers=0",
        "trainer.device=cpu"]


COCO_SIZES = ((96, 64), (160, 120), (64, 96), (120, 160), (128, 96), (96, 128))  # (width, height)


def write_coco(root: Path, n_train: int = 16, n_val: int = 16, categories=(1, 3, 7, 12), seed: int = 0) -> Path:
    """Write the COCO 2017 layout: ``root/{train2017,val2017}/<id>.jpg`` and
    ``root/annotations/instances_{train,val}2017.json``. Images (landscape and portrait, 64..160 px) show filled
    rectangles, ellipses and triangles on noise; each annotation has its polygon ``segmentation``, its ``bbox`` and
    ``area`` = the shape's true area (not the box's). Category ids are non-contiguous; every 7th image (from the
    4th) has no annotation, every 5th (from the 2nd) one extra crowd box. In the train split, image 2 has only a
    crowd box and image 4 one extra zero-width box."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    cats = [{"id": int(c), "name": f"shape_{c}", "supercategory": "shape"} for c in categories]
    colours = {int(c): tuple(int(v) for v in rng.integers(60, 256, 3)) for c in categories}
    ann_id = 1
    for split, n, first_id in (("train", n_train, 100), ("val", n_val, 5000)):
        folder = root / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            width, height = COCO_SIZES[i % len(COCO_SIZES)]
            image_id = first_id + 3 * i  # sparse ids
            noise = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
            im = Image.fromarray(noise, "RGB")
            draw = ImageDraw.Draw(im)
            objects = []
            if i % 7 != 3:
                crowd_only = split == "train" and i == 2
                for _ in range(0 if crowd_only else int(rng.integers(1, 4))):
                    objects.append((int(rng.choice(categories)), int(rng.integers(0, 3)), 0))
                if i % 5 == 1 or crowd_only:
                    objects.append((int(rng.choice(categories)), 0, 1))
            for category, shape, crowd in objects:
                w = int(rng.integers(6, width - 4))
                h = int(rng.integers(6, height - 4))
                x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
                if shape == 0:
                    polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
                    area = float(w * h)
                    draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colours[category])
                elif shape == 1:
                    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
                    polygon = np.stack([x + w / 2 * (1 + np.cos(t)), y + h / 2 * (1 + np.sin(t))], 1).ravel().tolist()
                    area = float(np.pi * w * h / 4)
                    draw.ellipse([x, y, x + w - 1, y + h - 1], fill=colours[category])
                else:
                    polygon = [x, y + h, x + w / 2, y, x + w, y + h]
                    area = float(w * h / 2)
                    draw.polygon([(x, y + h), (x + w / 2, y), (x + w, y + h)], fill=colours[category])
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": category,
                                    "bbox": [float(x), float(y), float(w), float(h)], "area": area,
                                    "segmentation": [[round(v, 2) for v in polygon]], "iscrowd": crowd})
                ann_id += 1
            if split == "train" and i == 4:
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": int(categories[0]),
                                    "bbox": [5.0, 5.0, 0.0, 10.0], "area": 0.0,
                                    "segmentation": [[5, 5, 5, 15, 5, 15]], "iscrowd": 0})
                ann_id += 1
            file_name = f"{image_id:012d}.jpg"
            im.save(folder / file_name, "JPEG", quality=95)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height,
                           "license": 1, "coco_url": "", "date_captured": ""})
        rng.shuffle(annotations)  # json order is not image order
        ann_folder = root / "annotations"
        ann_folder.mkdir(parents=True, exist_ok=True)
        data = {"info": {"description": "synthetic COCO"}, "licenses": [{"id": 1, "name": "none", "url": ""}],
                "images": images[::-1], "annotations": annotations, "categories": cats[::-1]}
        (ann_folder / f"instances_{split}2017.json").write_text(json.dumps(data))
    return root
