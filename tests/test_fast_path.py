"""The fast path keeps the maths: device loader == DataLoader path, cached teacher logits == online ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, REPO, read_result, run_cli, write_cifar100
from kdbench.data import build_data
from kdbench.data.augment import NUM_VIEWS, apply_view
from kdbench.data.base import IndexedDataset, build_transforms
from kdbench.data.augment import view_ids
from kdbench.data.batch import DeviceBatches
from kdbench.data.device_loader import DeviceTrainLoader, uint8_images
from kdbench.data.sampler import epoch_seed
from kdbench.data.sampler import EpochSampler
from kdbench.engine.logit_cache import DATA, META, TeacherLogitCache
from kdbench.engine.build import weights_fingerprint
from kdbench.models import create_model


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory):
    root = write_cifar100(tmp_path_factory.mktemp("c"), n_train=24, n_test=16)
    cfg = OmegaConf.load(REPO / "conf" / "dataset" / "cifar100.yaml")
    cfg.root = str(root)
    return cfg, build_data(cfg)


@pytest.mark.parametrize("world,start", [(1, 0), (1, 10), (2, 4)])
def test_device_loader_gives_the_dataloader_batches(small_cifar, world, start):
    cfg, data = small_cifar
    for rank in range(world):
        a, b = EpochSampler(24, seed=9, rank=rank, world=world), EpochSampler(24, seed=9, rank=rank, world=world)
        torch_path = DeviceBatches(torch.utils.data.DataLoader(
            IndexedDataset(data.train, build_transforms("cifar", 32, cfg.mean, cfg.std, True)), batch_size=8, sampler=a),
            torch.device("cpu"), view_ids_of=lambda index: torch.from_numpy(view_ids(epoch_seed(9, a.epoch), index.numpy())))
        device_path = DeviceTrainLoader(data.train, b, 8, "cifar", cfg.mean, cfg.std, torch.device("cpu"))
        for epoch in (1, 2):
            a.set_epoch(epoch, start=start)
            b.set_epoch(epoch, start=start)
            pairs = list(zip(torch_path, device_path))
            assert len(pairs) == len(device_path) > 0
            for t, d in pairs:  # the same Batch from both: samples, labels, pixels and reference view ids
                assert torch.equal(t.index, d.index) and torch.equal(t.targets, d.targets)
                assert torch.equal(t.view_ids, d.view_ids)
                torch.testing.assert_close(t.images, d.images, rtol=0, atol=1e-6)


def _cache(tmp_path, data, cfg, teacher):
    images, targets = uint8_images(data.train)
    return TeacherLogitCache.open(tmp_path, teacher, weights_fingerprint(teacher), images, targets, cfg.mean, cfg.std,
                                  data.num_classes, torch.device("cpu"), batch_size=400)


def test_cached_logits_equal_the_online_teacher_for_every_view(tmp_path, small_cifar):
    cfg, data = small_cifar
    torch.manual_seed(0)
    teacher = create_model("resnet8", 100).eval()
    cache = _cache(tmp_path, data, cfg, teacher)
    assert cache.built and cache.table.shape == (24, NUM_VIEWS, 100)
    images, _ = uint8_images(data.train)
    mean = torch.tensor(cfg.mean).view(-1, 1, 1) * 255
    std = torch.tensor(cfg.std).view(-1, 1, 1) * 255
    g = torch.Generator().manual_seed(1)
    index = torch.randint(0, 24, (40,), generator=g)
    views = torch.randint(0, NUM_VIEWS, (40,), generator=g)
    x = torch.stack([(apply_view(images[i], int(v)).float() - mean) / std for i, v in zip(index, views)])
    with torch.no_grad():
        online = teacher(x)
    cached = cache.lookup(index, views)
    # fp16 rounding (half an ulp: 2^-11 relative), plus float32 noise from a different batch composition
    assert ((cached - online).abs() <= online.abs() * 2.0**-10 + 1e-5).all()
    assert (cached == online.half().float()).float().mean() > 0.95
    again = _cache(tmp_path, data, cfg, teacher)
    assert not again.built and torch.equal(again.table, cache.table)


def test_corrupted_or_stale_cache_is_rebuilt(tmp_path, small_cifar):
    cfg, data = small_cifar
    torch.manual_seed(0)
    teacher = create_model("resnet8", 100).eval()
    cache = _cache(tmp_path, data, cfg, teacher)
    good = cache.table.clone()
    data_file = cache.directory / DATA
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the middle
    data_file.write_bytes(bytes(raw))
    fixed = _cache(tmp_path, data, cfg, teacher)
    assert fixed.built and torch.equal(fixed.table, good)
    meta = json.loads((cache.directory / META).read_text())
    (cache.directory / META).write_text(json.dumps({**meta, "key": "another-teacher"}))
    assert _cache(tmp_path, data, cfg, teacher).built
    data_file.write_bytes(data_file.read_bytes()[:100])  # truncated
    assert _cache(tmp_path, data, cfg, teacher).built
    # other weights: another cache altogether
    with torch.no_grad():
        next(teacher.parameters()).add_(0.1)
    other = _cache(tmp_path, data, cfg, teacher)
    assert other.built and other.directory != cache.directory


def test_cached_run_matches_the_online_run(tmp_path, env):
    cifar_root = write_cifar100(tmp_path / "cifar", n_train=64, n_test=64)
    common = [f"dataset.root={cifar_root}", "teacher=resnet8", "teacher.train_epochs=1", "student=resnet8",
              "method=kd", "trainer.epochs=2", "trainer.deterministic=true", "seed=4", "logger.mode=disabled", *FAST,
              "trainer.loader=device", "trainer.batch_size=16"]
    runs = {}
    for mode in ("off", "on"):
        out = run_cli(common + [f"trainer.teacher_cache={mode}", f"hydra.run.dir={tmp_path / mode}"], tmp_path, env)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[mode] = read_result(tmp_path / mode)
    assert "logit_cache" in runs["on"]["teacher"] and "logit_cache" not in runs["off"]["teacher"]
    assert runs["on"]["dataset"]["loader"] == "device"
    for a, b in zip(runs["off"]["history"], runs["on"]["history"]):
        assert abs(a["loss"] - b["loss"]) <= 1e-3 * abs(a["loss"]), (a["loss"], b["loss"])
        assert abs(a["top1"] - b["top1"]) <= 1.0


def test_teacher_cache_refuses_a_method_that_needs_teacher_features(tmp_path, env, cifar_root):
    out = run_cli([f"dataset.root={cifar_root}", "teacher=resnet8", "teacher.train_epochs=1", "student=resnet8",
                   "method=fitnet", "trainer.epochs=1", "trainer.teacher_cache=on", "logger.mode=disabled", *FAST,
                   f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, env)
    assert out.returncode == 2 and "trainer.teacher_cache: cannot be used here" in out.stderr


def test_bench_times_every_configuration_against_the_reference(tmp_path, env):
    out_file = tmp_path / "bench.md"
    args = ["--teacher", "resnet8", "--student", "resnet8", "--steps", "4", "--rounds", "2", "--warmup", "1",
            "--batch-size", "8", "--workers", "0", "--cache-images", "4", "--configs", "reference", "device+cl",
            "device+cl+cache", "--out", str(out_file)]
    out = run_cli(args, tmp_path, env, script="kdbench-bench")
    assert out.returncode == 0, out.stderr[-3000:]
    table = out_file.read_text()
    assert table.startswith("Command: `kdbench-bench " + " ".join(args[:4]))
    assert "4 timed steps per configuration in 2 interleaved rounds" in table and "fp32 " in table
    header = next(line for line in table.splitlines() if line.startswith("| configuration"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = [dict(zip(columns, (c.strip() for c in line.strip("|").split("|"))))
            for line in table.splitlines() if line.startswith("| ") and line != header]
    assert [r["configuration"] for r in rows] == ["reference", "device+cl", "device+cl+cache"]
    assert rows[0]["x reference"] == "1.00"
    assert all(float(r["images/s"]) > 0 and float(r["GFLOP/s"]) > 0 for r in rows)
    # the cache removes the teacher's forward from the step's arithmetic (resnet8 teacher, resnet8 student: the
    # teacher forward is one of about four forward-sized passes), and only the cached configuration has a build time
    online, cached = float(rows[0]["GFLOP/step"]), float(rows[2]["GFLOP/step"])
    assert cached == pytest.approx(online * 3 / 4, rel=0.05)
    assert rows[0]["cache build, h (50k)"] == "-" and float(rows[2]["cache build, h (50k)"]) > 0


@pytest.mark.parametrize("args,message", [(["--configs", "device+warp"], "unknown option(s) warp"),
                                          (["--rounds", "0"], "--rounds: must be >= 1"),
                                          (["--method", "nope"], "no method config 'nope'"),
                                          (["--method", "fitnet", "--configs", "reference", "device+cache"],
                                           "no cache for method fitnet in 'device+cache': the method needs more"),
                                          # the trainer's rule: mixup rewrites the batch, so no cache
                                          (["--method", "mixkd", "--configs", "device+cache"],
                                           "no cache for method mixkd in 'device+cache': the method changes"),
                                          (["--configs", "cache"], "the cache needs the device loader")])
def test_bench_refuses_bad_arguments(args, message, capsys):
    from kdbench.bench import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--teacher", "resnet8", "--student", "resnet8", "--steps", "1", "--warmup", "0", "--batch-size", "2",
              "--workers", "0", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
