"""Datasets load through the real code path from files in their real on-disk formats."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, write_cifar100
from kdbench.data import build_data, build_loaders, build_transforms, check_data
from kdbench.errors import ConfigError


def dataset_cfg(name: str, **overrides):
    cfg = OmegaConf.load(REPO / "conf" / "dataset" / f"{name}.yaml")
    cfg.merge_with(overrides)
    return cfg


def write_cifar10(root, n=40):
    """``cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta`` as the CIFAR-10 python release."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, n).tolist(), "batch_label": name,
                         "filenames": [f"{i}.png" for i in range(n)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": n}, f)


def test_cifar100_from_the_python_pickles(tmp_path):
    write_cifar100(tmp_path, n_train=50, n_test=20)
    data = build_data(dataset_cfg("cifar100", root=str(tmp_path)))
    assert (len(data.train), len(data.test), data.num_classes, data.image_size) == (50, 20, 100, 32)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    image, target = data.train[7]
    assert target == raw["fine_labels"][7]
    assert np.array_equal(np.asarray(image), raw["data"][7].reshape(3, 32, 32).transpose(1, 2, 0))


def test_cifar10_from_the_python_pickles(tmp_path):
    write_cifar10(tmp_path)
    data = build_data(dataset_cfg("cifar10", root=str(tmp_path)))
    assert (len(data.train), len(data.test), data.num_classes) == (200, 40, 10)


def test_missing_cifar_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root: no cifar100 data at .*cifar-100-python .*dataset.download=true"):
        check_data(dataset_cfg("cifar100", root=str(tmp_path)))


def test_corrupt_cifar_is_a_config_error(tmp_path):
    write_cifar100(tmp_path, n_train=10, n_test=10)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="cannot read cifar100"):
        build_data(dataset_cfg("cifar100", root=str(tmp_path)))


def test_digits_and_synthetic_are_offline_and_fixed():
    digits = build_data(dataset_cfg("digits"))
    assert (len(digits.train), len(digits.test), digits.image_size) == (1437, 360, 8)
    image, _ = digits.train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
    again = build_data(dataset_cfg("digits"))
    assert torch.equal(digits.train.images, again.train.images)
    synthetic = build_data(dataset_cfg("synthetic"))
    assert len(synthetic.train) == 2048 and synthetic.train.images.shape[1:] == (3, 32, 32)


def test_loader_yields_index_and_normalised_images(tmp_path):
    cfg = dataset_cfg("synthetic", train_size=100, test_size=30)
    data = build_data(cfg)
    train, test = build_loaders(data, cfg, 32, 64, pin_memory=False, generator=torch.Generator().manual_seed(0))
    images, targets, index = next(iter(train))
    assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal(targets, data.train.targets[index])
    assert sum(len(b[0]) for b in test) == 30


def test_cifar_augmentation_is_pad4_crop_flip():
    tf = build_transforms("cifar", 32, [0.0] * 3, [1.0] * 3, train=True)
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, 0, 0] = 255  # one bright corner pixel: where it lands tells the crop offset and flip
    positions = set()
    torch.manual_seed(0)
    for _ in range(3000):
        out = tf(image)
        ys, xs = torch.nonzero(out[0] > 0.5, as_tuple=True)
        if len(ys):
            positions.add((int(ys[0]), int(xs[0])))
    # Pad 4 then crop 32: the pixel moves by -4..4 (it stays only where the offset keeps it in view),
    # and a flip mirrors x; every reachable position appears.
    assert positions == {(y, x) for y in range(0, 5) for x in list(range(0, 5)) + list(range(27, 32))}
