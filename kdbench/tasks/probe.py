"""Probe evaluation: a model is scored by k-NN and linear probes on its frozen encoder's pooled embeddings.

Training batches are those of image classification (the labels are there, a label-free method ignores them); what
changes is the scoring. Every evaluation embeds the training set without augmentation and the test set (the
model in eval mode), then measures, as safelix/dinopl ``dinopl/probing.py`` (``Prober`` with its
``LinearAnalysis`` and ``KNNAnalysis``, the defaults of ``configuration.py``: ``probing_k 20``,
``probing_epochs 10``, ``normalize_probe true``, ``bs_eval 256``):

- ``knn_top1``: the majority label of the ``k`` = 20 training embeddings nearest in Euclidean distance (faiss
  ``IndexFlat``, unweighted votes; a tie goes to the smallest label, as ``torch.mode`` on the CPU);
- ``linear_top1``: a linear classifier (``nn.Linear``, weight and bias uniform in +-1/sqrt(d)) trained for 10 epochs
  with AdamW at torch's defaults (lr 1e-3, weight decay 0.01) on cross-entropy, over batches of 256 training
  embeddings in one seeded shuffled order that every epoch repeats;
- ``knn_norm_top1``, ``linear_norm_top1``: the same after standardising both sets with the training embeddings'
  mean and (unbiased) std (a std below 10 float32 eps counts as 1, as scikit-learn's StandardScaler).

Percentages; ``knn_top1`` is the primary metric. The draws are seeded by ``dataset.probe.seed`` (default 0): the
shuffle of a generator with that seed after one int64 draw (the reference's DataLoader draws its base seed first),
the classifier's init from a fresh generator with that seed; both are CPU generators, so a probe gives the same
numbers on every device (the reference, seedless by default, drew the init on the GPU in its CUDA runs). Settings:
``dataset.probe.{k, linear_epochs, batch_size, seed}``. Under data parallelism every rank embeds and probes the
whole of both sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.base import IndexedDataset, build_transforms
from ..data.batch import DeviceBatches
from ..data.device_loader import DeviceTestLoader, device_loadable
from ..models import run_model, supports
from ..precision import autocast
from .base import Metric
from .classification import ClassificationTask

PROBE_DEFAULTS = {"k": 20, "linear_epochs": 10, "batch_size": 256, "seed": 0}


@dataclass
class ProbeData:
    """What a probe evaluation reads: the training set without augmentation (``train``) and the test set
    (``test``), both as batches on the device. Iterating it gives the test batches."""

    train: Any
    test: Any

    def __iter__(self):
        return iter(self.test)

    def __len__(self) -> int:
        return len(self.test)


def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, k: int = 20,
                num_classes: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """Labels of ``test_x`` by an unweighted vote of the ``k`` training embeddings nearest in Euclidean distance;
    ties go to the smallest label."""
    k = min(int(k), len(train_x))
    num_classes = int(num_classes or int(train_y.max()) + 1)
    sq = train_x.pow(2).sum(1)
    out = []
    for start in range(0, len(test_x), chunk):
        query = test_x[start:start + chunk]
        distance = sq.unsqueeze(0) - 2.0 * query @ train_x.T  # + |q|^2, the same for every neighbour
        nearest = distance.topk(k, dim=1, largest=False).indices
        votes = torch.zeros(len(query), num_classes, device=query.device)
        votes.scatter_add_(1, train_y[nearest], torch.ones_like(nearest, dtype=votes.dtype))
        out.append(votes.argmax(1))  # the first maximum: the smallest label among tied ones
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=test_x.device)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, epochs: int = 10,
                 batch_size: int = 256, seed: int = 0) -> nn.Linear:
    """A linear classifier trained on frozen embeddings as dinopl's ``LinearAnalysis`` (see the module docstring)."""
    device, (n, dim) = train_x.device, train_x.shape
    with torch.inference_mode(False), torch.enable_grad():  # callable from inference mode: own tensors throughout
        order = torch.Generator().manual_seed(int(seed))
        torch.empty((), dtype=torch.int64).random_(generator=order)  # the DataLoader iterator's base seed comes first
        perm = torch.randperm(n, generator=order).to(device)
        init = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / math.sqrt(dim)
        clf = nn.Linear(dim, num_classes)
        with torch.no_grad():
            clf.weight.copy_(torch.empty(num_classes, dim).uniform_(-bound, bound, generator=init))
            clf.bias.copy_(torch.empty(num_classes).uniform_(-bound, bound, generator=init))
        clf.to(device)
        optimizer = torch.optim.AdamW(clf.parameters())
        x, y = train_x.clone(), train_y.clone()
        for _ in range(int(epochs)):
            for start in range(0, n, batch_size):
                index = perm[start:start + batch_size]
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(clf(x[index]), y[index]).backward()
                optimizer.step()
    return clf.eval()


def standardise(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets shifted and scaled by the training set's mean and unbiased std (std < 10 eps counts as 1)."""
    mean = train_x.mean(0)
    std = train_x.std(0, unbiased=True) if len(train_x) > 1 else torch.ones_like(mean)
    std = torch.where(std < 10 * torch.finfo(std.dtype).eps, torch.ones_like(std), std)
    return (train_x - mean) / std, (test_x - mean) / std


def probe_scores(train_x, train_y, test_x, test_y, num_classes: int, k: int = 20, linear_epochs: int = 10,
                 batch_size: int = 256, seed: int = 0) -> dict[str, float]:
    """Every probe metric (percent, 4 decimals) of training / test embeddings with their labels."""
    def accuracy(predicted):
        return round(100.0 * (predicted == test_y).float().mean().item(), 4) if len(test_y) else 0.0

    out = {}
    for suffix, (a, b) in (("", (train_x, test_x)), ("_norm", standardise(train_x, test_x))):
        out[f"knn{suffix}_top1"] = accuracy(knn_predict(a, train_y, b, k, num_classes))
        clf = linear_probe(a, train_y, num_classes, linear_epochs, batch_size, seed)
        with torch.no_grad():
            out[f"linear{suffix}_top1"] = accuracy(clf(b).argmax(1))
    return {m.name: out[m.name] for m in ProbeTask.metrics}


class ProbeTask(ClassificationTask):
    name = "probe"
    metrics = (Metric("knn_top1", "k-NN top-1"), Metric("linear_top1", "linear top-1"),
               Metric("knn_norm_top1", "k-NN top-1, standardised"),
               Metric("linear_norm_top1", "linear top-1, standardised"))

    @property
    def settings(self) -> dict:
        given = (self.dataset_cfg or {}).get("probe") or {}
        return {key: type(default)(given.get(key, default) if given.get(key) is not None else default)
                for key, default in PROBE_DEFAULTS.items()}

    def refusal(self, model, method, role):
        return supports(model, set(method.needs_of(role)) | {"embedding"})  # the probes read the embedding

    def loaders(self, cfg, data, world, batch_per_rank, device, views, channels_last):
        """The classification training loader; the probes' :class:`ProbeData` for evaluation (the device path
        already builds it through :meth:`test_loader`, the others build a plain test loader in its place)."""
        train, sampler, test, kind = super().loaders(cfg, data, world, batch_per_rank, device, views, channels_last)
        if not isinstance(test, ProbeData):
            test = self.test_loader(cfg, data, device, world, channels_last)
        return train, sampler, test, kind

    def test_loader(self, cfg, data, device, world=None, channels_last=False):
        """:class:`ProbeData`: the training and the test set, un-augmented, whole on every rank."""
        dcfg, eval_batch = cfg.dataset, int(cfg.trainer.eval_batch_size)
        if str(cfg.trainer.loader) != "torch" and not device_loadable(data, "none"):
            return ProbeData(*(DeviceTestLoader(split, eval_batch, dcfg.mean, dcfg.std, device, 0, 1, channels_last)
                               for split in (data.train, data.test)))
        plain = build_transforms(str(dcfg.augment), data.image_size, dcfg.mean, dcfg.std, train=False)
        return ProbeData(*(DeviceBatches(torch.utils.data.DataLoader(
            IndexedDataset(split, plain), batch_size=eval_batch, shuffle=False), device, channels_last)
            for split in (data.train, data.test)))

    @staticmethod
    def embed(model, batches, device, precision) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled embeddings as float32 (N, D), labels) of every batch, the model as it is (eval mode)."""
        xs, ys = [], []
        for batch in batches:
            with autocast(precision, device):
                xs.append(run_model(model, batch.images, ("embedding",)).embedding.float().flatten(1))
            ys.append(batch.targets)
        return torch.cat(xs), torch.cat(ys)

    def evaluate(self, model, loader, device, precision, num_classes, sharded=False, out_dir=None):
        """The probe metrics of the model's embeddings (``loader``: this task's :class:`ProbeData`)."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                train_x, train_y = self.embed(model, loader.train, device, precision)
                test_x, test_y = self.embed(model, loader.test, device, precision)
        finally:
            model.train(was_training)
        s = self.settings
        return probe_scores(train_x, train_y, test_x, test_y, num_classes, k=s["k"], linear_epochs=s["linear_epochs"],
                            batch_size=s["batch_size"], seed=s["seed"])
