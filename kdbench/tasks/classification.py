"""Image classification: batches of images with integer labels, top-1 / top-5 accuracy (torchmetrics)."""

from __future__ import annotations

import dataclasses

import torch
from torchmetrics.classification import MulticlassAccuracy

from ..data import build_loaders, train_targets
from ..data.augment import view_ids
from ..data.batch import DeviceBatches
from ..data.device_loader import DeviceTestLoader, DeviceTrainLoader, device_loadable
from ..data.sampler import EpochSampler, ShardSampler, epoch_seed
from ..errors import ConfigError
from ..precision import autocast
from ..models import create_model, run_model, supports
from .base import Metric, Task


class ClassificationTask(Task):
    name = "classification"
    metrics = (Metric("top1", "top-1"), Metric("top5", "top-5"))
    ensemble_teachers = True

    def create_model(self, name, num_classes, image_size, pretrained=False, role="student"):
        return create_model(name, num_classes, image_size=image_size, pretrained=pretrained, role=role)

    def refusal(self, model, method, role):
        return supports(model, method.needs_of(role))

    def test_loader(self, cfg, data, device, world=None, channels_last=False):
        """Test batches on ``device`` (this rank's shard): the device loader where the data allows it."""
        dcfg, eval_batch = cfg.dataset, int(cfg.trainer.eval_batch_size)
        rank, size = (world.rank, world.size) if world is not None else (0, 1)
        if str(cfg.trainer.loader) != "torch" and not device_loadable(data, str(dcfg.augment)):
            return DeviceTestLoader(data.test, eval_batch, dcfg.mean, dcfg.std, device, rank, size, channels_last)
        _, test = build_loaders(data, dcfg, eval_batch, eval_batch, pin_memory=device.type == "cuda",
                                generator=torch.Generator().manual_seed(0),
                                test_sampler=ShardSampler(len(data.test), rank, size))
        return DeviceBatches(test, device, channels_last)

    def training_labels(self, data):
        return train_targets(data)

    def sample_outputs(self, student, teacher, loader, method):
        """The pair's outputs on two test images, the student in eval mode (its BN statistics stay untouched)."""
        images = next(iter(loader)).images[:2]
        with torch.no_grad():
            was_training = student.training
            student.eval()
            s_out = run_model(student, images, method.needs)
            t_out = run_model(teacher, images, method.needs_of("teacher")) if teacher is not None else None
            student.train(was_training)
        return s_out, t_out

    def split_training(self, data, method):
        from ..data.splits import split_training

        return split_training(data, self.dataset_cfg, method)

    def loaders(self, cfg, data, world, batch_per_rank, device, views, channels_last):
        """The device loader (dataset resident on the device, batched augmentation) when the data and the
        augmentation allow it and ``trainer.loader`` agrees; for ImageFolder trees the JPEG tensor path
        (``kdbench.data.jpeg``: decode_jpeg on the device or in CPU workers, uint8 v2 transforms); else torch's
        DataLoader over PIL images. All yield the same :class:`Batch` on the device, and the same samples and
        views (order and augmentation seeded by run seed, epoch and sample). With an unlabelled pool in ``data``
        (a method that uses one), each batch is a labelled batch followed by an unlabelled one
        (``kdbench.data.semi.LabelledAndUnlabelled``)."""
        train, sampler, test, kind = self._loaders(cfg, data, world, batch_per_rank, device, views, channels_last)
        if data.unlabelled is not None:
            from ..data.semi import LabelledAndUnlabelled

            pool = dataclasses.replace(data, train=data.unlabelled)
            pool_train, pool_sampler, _, _ = self._loaders(cfg, pool, world, batch_per_rank, device, views,
                                                           channels_last)
            train = sampler = LabelledAndUnlabelled(train, sampler, pool_train, pool_sampler, batch_per_rank,
                                                    labelled_size=len(data.train))
        return train, sampler, test, kind

    def _loaders(self, cfg, data, world, batch_per_rank, device, views, channels_last):
        """(train loader over ``data.train``, its sampler, test loader, loader kind)."""
        from ..data.jpeg import build_jpeg_loaders, jpeg_unavailable

        dcfg = cfg.dataset
        sampler = EpochSampler(len(data.train), int(cfg.seed), shuffle=True, rank=world.rank, world=world.size)
        wanted = str(cfg.trainer.loader)
        extra_views = "the method asks for extra views" if views else None
        reason = device_loadable(data, str(dcfg.augment)) or extra_views
        if wanted == "device" and reason:
            raise ConfigError(f"trainer.loader: device loader unavailable: {reason}; valid here: torch, auto")
        jpeg_reason = jpeg_unavailable(data, str(dcfg.augment)) or extra_views
        if wanted == "jpeg" and jpeg_reason:
            raise ConfigError(f"trainer.loader: JPEG tensor loader unavailable: {jpeg_reason}; valid here: torch, auto")
        eval_batch = int(cfg.trainer.eval_batch_size)
        if wanted in ("device", "auto") and not reason:
            train = DeviceTrainLoader(data.train, sampler, batch_per_rank, str(dcfg.augment), dcfg.mean, dcfg.std,
                                      device, channels_last)
            return train, sampler, self.test_loader(cfg, data, device, world, channels_last), "device"
        if wanted in ("jpeg", "auto") and not jpeg_reason:
            train, test = build_jpeg_loaders(
                data.train.samples, data.test.samples, sampler, ShardSampler(len(data.test), world.rank, world.size),
                batch_per_rank, eval_batch, data.image_size, dcfg.mean, dcfg.std, device, channels_last,
                workers=int(dcfg.get("num_workers", 0) or 0))
            return train, sampler, test, "jpeg"
        train, test = build_loaders(
            data, dcfg, batch_per_rank, eval_batch, pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(0), views=views, train_sampler=sampler,
            test_sampler=ShardSampler(len(data.test), world.rank, world.size))
        views_of = None
        if str(dcfg.augment) == "cifar":  # the reference views, for the teacher-logit cache
            views_of = lambda index: torch.from_numpy(view_ids(epoch_seed(sampler.seed, sampler.epoch), index.numpy()))
        return (DeviceBatches(train, device, channels_last, views_of), sampler,
                DeviceBatches(test, device, channels_last), "torch")

    @torch.inference_mode()
    def evaluate(self, model, loader, device, precision, num_classes, sharded=False, out_dir=None):
        """Top-1 / top-5 accuracy in percent, accumulated on the device with torchmetrics."""
        was_training = model.training
        model.eval()
        kw = dict(num_classes=num_classes, average="micro", sync_on_compute=sharded)
        top1 = MulticlassAccuracy(top_k=1, **kw).to(device)
        top5 = MulticlassAccuracy(top_k=min(5, num_classes), **kw).to(device)
        for batch in loader:
            with autocast(precision, device):
                logits = model(batch.images)
            top1.update(logits.float(), batch.targets)
            top5.update(logits.float(), batch.targets)
        model.train(was_training)
        return {"top1": round(100.0 * top1.compute().item(), 4), "top5": round(100.0 * top5.compute().item(), 4)}
