"""The JPEG tensor path (kdbench.data.jpeg): same crop boxes and flips as the PIL path, pixels within decoder and
resampler tolerance, PIL fallback for files the decoder refuses, a training run through it, detection helpers, and
the loader-only benchmark."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from conftest import FAST, read_result, run_cli
from kdbench.data.base import build_transforms
from kdbench.data.jpeg import (JpegBatches, JpegLoader, crop_flip_params, decode_batch, draw_flip, draw_short_side,
                               hflip_with_boxes, loader_workers, normalize, resize_short_side, eval_view, train_view)
from kdbench.data.sampler import EpochSampler, ShardSampler

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LEVELS = torch.tensor(STD).view(3, 1, 1) * 255  # normalised difference -> difference in 0..255 grey levels


def natural(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour gradients plus noise: JPEG-compressible like a photograph, not a flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, f = rng.uniform(0, 6.28, 3), rng.uniform(8, 30, 3)
    img = np.stack([127 + 100 * np.sin(x / f[c] + a[c]) * np.cos(y / (1.3 * f[c]) - a[c]) for c in range(3)], -1)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A colour JPEG, a greyscale JPEG, a CMYK JPEG and a PNG named .JPEG (all four occur in ImageNet)."""
    d = tmp_path_factory.mktemp("jpegs")
    rgb = Image.fromarray(natural(75, 100, 0))
    out = {k: d / f"{k}.JPEG" for k in ("rgb", "grey", "cmyk", "png")}
    rgb.save(out["rgb"], quality=90)
    rgb.convert("L").save(out["grey"], quality=90)
    rgb.convert("CMYK").save(out["cmyk"], quality=90)
    rgb.save(out["png"], format="PNG")
    return out


def encoded(path: Path) -> torch.Tensor:
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)


def pil_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_decoded_pixels_match_pil_and_refused_files_fall_back(files):
    """Both decoders are libjpeg-turbo with the same default IDCT (islow) and chroma upsampling, so the decoded
    pixels may differ only by libjpeg-turbo version rounding: tolerance 1 grey level (observed here: 0)."""
    images, fallbacks = decode_batch([encoded(files[k]) for k in ("rgb", "grey", "cmyk", "png")])
    assert fallbacks == 1  # the PNG; greyscale and CMYK JPEGs are converted to RGB by the decoder itself
    for key, image in zip(("rgb", "grey", "cmyk", "png"), images):
        ref = pil_rgb(files[key])
        assert image.shape == ref.shape == (3, 75, 100) and image.dtype == torch.uint8
        assert (image.int() - ref.int()).abs().max() <= 1, key
    assert torch.equal(images[3], pil_rgb(files["png"]))  # the fallback is PIL itself
    only_jpegs, none = decode_batch([encoded(files["rgb"]), encoded(files["grey"])])
    assert none == 0 and len(only_jpegs) == 2


def test_same_crop_boxes_and_flips_as_the_pil_path(files, monkeypatch):
    """The PIL path's RandomResizedCrop box and flip for each sample seed, recorded as it runs, equal
    ``crop_flip_params``; the images agree within 1 grey level (PIL's and torch's antialiased bilinear resamplers
    round their fixed-point sums differently; same box, same filter support)."""
    seen = {}
    make_params = T.RandomResizedCrop.make_params
    flip = T.RandomHorizontalFlip.transform
    monkeypatch.setattr(T.RandomResizedCrop, "make_params",
                        lambda self, flat: seen.setdefault("box", make_params(self, flat)))
    monkeypatch.setattr(T.RandomHorizontalFlip, "transform",
                        lambda self, inpt, params: (seen.__setitem__("flip", True), flip(self, inpt, params))[1])
    pil_tf = build_transforms("imagenet", 64, MEAN, STD, train=True)
    flips = 0
    for key in ("rgb", "grey", "cmyk"):
        image = Image.open(files[key]).convert("RGB")
        decoded = decode_batch([encoded(files[key])])[0][0]
        for seed in [0, 1, 2**62 + 5] + [7919 * k for k in range(1, 20)]:
            seen.clear()
            reference = pil_tf(image, seed)
            top, left, h, w, flipped = crop_flip_params(seed, 75, 100)
            assert seen["box"] == dict(top=top, left=left, height=h, width=w)
            assert seen.get("flip", False) == flipped
            flips += flipped
            ours = normalize(train_view(decoded, seed, 64)[None], MEAN, STD)[0]
            assert ((ours - reference) * LEVELS).abs().max() <= 1.0 + 1e-3, (key, seed)
    assert 10 < flips < 56  # both outcomes occur
    state = torch.get_rng_state()
    crop_flip_params(3, 75, 100)
    assert torch.equal(state, torch.get_rng_state())  # the process RNG is left as it was
    test_tf = build_transforms("imagenet", 64, MEAN, STD, train=False)
    ours = normalize(eval_view(decode_batch([encoded(files["rgb"])])[0][0], 64)[None], MEAN, STD)[0]
    assert ((ours - test_tf(Image.open(files["rgb"]).convert("RGB"))) * LEVELS).abs().max() <= 1.0 + 1e-3


def test_normalize_matches_todtype_and_normalize():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    ref = T.Normalize(list(MEAN), list(STD))(T.ToDtype(torch.float32, scale=True)(x))
    assert torch.allclose(normalize(x, MEAN, STD), ref, atol=2e-6, rtol=0)


def write_tree(root: Path, per_class: int = 3, odd: dict | None = None) -> Path:
    """<root>/{train,val}/<wnid>/*.JPEG with photograph-like JPEGs of a few sizes (ImageNet's layout)."""
    for split in ("train", "val"):
        for c, wnid in enumerate(("n01440764", "n01443537")):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(natural(40 + 8 * i, 52 + 4 * c, 10 * c + i)).save(folder / f"{i}.JPEG", quality=90)
    for name, path in (odd or {}).items():
        (root / "train" / "n01440764" / f"{name}.JPEG").write_bytes(path.read_bytes())
    return root


def test_loader_yields_the_samplers_samples_and_logs_fallbacks(tmp_path, files, caplog):
    from torchvision.datasets import ImageFolder

    root = write_tree(tmp_path / "tree", odd={"png": files["png"], "cmyk": files["cmyk"]})
    train = ImageFolder(str(root / "train"))
    sampler = EpochSampler(len(train), seed=3)
    sampler.set_epoch(2)
    loader = JpegLoader(train.samples, sampler, 3, 32, True, MEAN, STD, "cpu", channels_last=True, workers=1)
    with caplog.at_level(logging.INFO, logger="kdbench"):
        batches = list(loader)
    assert loader.fallbacks == 1 and "1 file(s) decoded by PIL" in caplog.text
    keys = list(sampler)
    assert len(batches) == len(loader) == 3
    assert torch.cat([b.index for b in batches]).tolist() == [i for i, _ in keys]
    assert torch.cat([b.targets for b in batches]).tolist() == [train.targets[i] for i, _ in keys]
    first = batches[0]
    assert first.images.shape == (3, 3, 32, 32) and first.images.dtype == torch.float32
    assert first.images.is_contiguous(memory_format=torch.channels_last)
    # the same (seed, epoch, index) gives the same view, in a worker or in this process
    direct = JpegBatches(train.samples, 32, True)[keys[:3]][0]
    assert torch.equal(first.images, normalize(direct, MEAN, STD).contiguous(memory_format=torch.channels_last))
    test = JpegLoader(ImageFolder(str(root / "val")).samples, ShardSampler(6, 1, 2), 2, 32, False, MEAN, STD, "cpu",
                      workers=0)
    assert [b.index.tolist() for b in test] == [[1, 3], [5]]


def test_gpu_placement_reads_in_workers_and_decodes_on_the_device(tmp_path, files):
    """On CUDA the workers only read the files; nvJPEG decodes the batch in the training process (unmeasured here:
    no GPU), with pinned memory and deeper prefetch."""
    samples = [(str(files["rgb"]), 0)] * 4
    loader = JpegLoader(samples, EpochSampler(4, 0), 2, 32, True, MEAN, STD, "cuda", workers=1)
    assert loader.loader.dataset.decode is False and loader.loader.pin_memory
    assert loader.loader.prefetch_factor == 4
    data, targets, index, seeds = loader.loader.dataset[[(0, 11), (1, 12)]]
    assert len(data) == 2 and data[0].dtype == torch.uint8 and seeds == [11, 12]
    assert loader_workers(10**6) == len(__import__("os").sched_getaffinity(0)) == loader_workers(None)
    assert loader_workers(0) == 0


def test_training_run_uses_the_tensor_path(tmp_path, env):
    root = write_tree(tmp_path / "imagenet")
    run_dir = tmp_path / "run"
    out = run_cli(["dataset=imagenet", f"dataset.root={root}", "dataset.num_classes=2", "dataset.image_size=32",
                   "teacher=resnet8", "teacher.train_epochs=1", "student=resnet8", "method=kd", "trainer.epochs=1",
                   "trainer.loader=auto", "logger.mode=disabled", f"hydra.run.dir={run_dir}",
                   *[f for f in FAST if not f.startswith("dataset.num_workers")], "dataset.num_workers=1",
                   "trainer.batch_size=4", "trainer.eval_batch_size=4"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = read_result(run_dir)
    assert r["dataset"]["loader"] == "jpeg" and r["status"] == "completed"


def test_resize_short_side_moves_boxes_with_the_image():
    image = torch.zeros(3, 50, 100, dtype=torch.uint8)
    image[:, 10:20, 30:40] = 255  # a white square, boxed below
    boxes = torch.tensor([[30.0, 10.0, 40.0, 20.0], [0.0, 0.0, 100.0, 50.0]])
    out, moved = resize_short_side(image, boxes, short=100, max_size=1000)
    assert out.shape == (3, 100, 200) and torch.allclose(moved, boxes * 2)
    assert out[:, 22:38, 62:78].min() == 255  # the square's inside is still inside the moved box
    out, moved = resize_short_side(image, boxes, short=100, max_size=150)  # the long side caps the scale: 1.5
    assert out.shape == (3, 75, 150) and torch.allclose(moved, boxes * 1.5)
    flipped, fboxes = hflip_with_boxes(image, boxes)
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(fboxes, torch.tensor([[60.0, 10.0, 70.0, 20.0], [0.0, 0.0, 100.0, 50.0]]))
    assert flipped[:, 10:20, 60:70].min() == 255
    sizes = (640, 672, 704, 736, 768, 800)
    drawn = [draw_short_side(s, sizes) for s in range(200)]
    assert set(drawn) == set(sizes) and drawn == [draw_short_side(s, sizes) for s in range(200)]
    assert 60 < sum(draw_flip(s) for s in range(200)) < 140


def test_loader_only_benchmark_runs(tmp_path, capsys):
    from kdbench.bench import main

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(natural(60, 80, i)).save(folder / f"{i}.jpg", quality=90)
    out = tmp_path / "loader.md"
    assert main(["--loader-only", "--data", str(folder), "--batch-size", "4", "--steps", "2", "--rounds", "2",
                 "--warmup", "1", "--workers", "0", "--image-size", "32", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| pil |" in text and "| pil-v1 |" in text and "| tensor |" in text and "images/s per core" in text
