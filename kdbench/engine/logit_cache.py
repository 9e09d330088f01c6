"""Exact teacher-logit cache: the frozen teacher's logits for every training image under every one of the 162
views of the reference augmentation (9 x 9 crop offsets x 2 flips), computed once and shared by every
logit-only method and every seed.

Layout: ``<store>/cache/teacher_logits/<key>/logits.f16`` is a (N, 162, classes) float16 array (row-major,
memory-mapped; 50000 x 162 x 100 x 2 bytes = 1.6 GB for CIFAR-100) with ``meta.json`` (key, shape, digest).
The key hashes the teacher's weights, the training images and labels, the normalisation, and the format
version, so any change yields a new cache. Built once per key under a file lock (a sweep builds it once), written
to a temporary file and renamed, checked on load (shape, size and a blake2b digest of the whole file) and rebuilt
when it does not check out. Logits are computed in float32 and rounded to float16: that rounding (relative
1e-3) is the only difference from the online teacher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock

from ..data.augment import NUM_VIEWS, PAD, crop_flip_batch
from ..io import write_json

log = logging.getLogger("kdbench")
FORMAT = 1
DATA, META = "logits.f16", "meta.json"


def cache_key(teacher_fingerprint: str, images: torch.Tensor, targets: torch.Tensor, mean, std) -> str:
    digest = hashlib.sha256()
    for part in (f"v{FORMAT}", teacher_fingerprint, str(tuple(images.shape)), repr([float(m) for m in mean]),
                 repr([float(s) for s in std])):
        digest.update(part.encode())
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(targets.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()[:24]


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


class TeacherLogitCache:
    """Lookup table of teacher logits by (sample index, view id), on the training device."""

    def __init__(self, table: torch.Tensor, directory: Path, built: bool):
        self.table, self.directory, self.built = table, directory, built

    def lookup(self, index: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return self.table[index, views].float()

    @staticmethod
    def exists(root: Path, fingerprint: str, images: torch.Tensor, targets: torch.Tensor, mean, std) -> bool:
        directory = Path(root) / "teacher_logits" / cache_key(fingerprint, images, targets, mean, std)
        return (directory / META).is_file() and (directory / DATA).is_file()

    @classmethod
    def open(cls, root: Path, teacher, fingerprint: str, images: torch.Tensor, targets: torch.Tensor, mean, std,
             num_classes: int, device, batch_size: int = 2048, channels_last: bool = False) -> "TeacherLogitCache":
        """Load the cache for this teacher and data, building (or rebuilding) it first if needed."""
        key = cache_key(fingerprint, images, targets, mean, std)
        directory = Path(root) / "teacher_logits" / key
        directory.mkdir(parents=True, exist_ok=True)
        shape = (images.shape[0], NUM_VIEWS, num_classes)
        built = False
        with FileLock(str(directory / "build.lock")):
            reason = cls._invalid(directory, key, shape)
            if reason:
                log.info("teacher-logit cache %s: %s; building it (%d images x %d views)", directory, reason,
                         shape[0], NUM_VIEWS)
                cls._build(directory, key, shape, teacher, images, mean, std, device, batch_size, channels_last)
                built = True
        array = np.memmap(directory / DATA, dtype=np.float16, mode="c", shape=shape)  # copy-on-write: file stays intact
        table = torch.from_numpy(np.asarray(array))
        if torch.device(device).type != "cpu":
            table = table.to(device)
        return cls(table, directory, built)

    @staticmethod
    def _invalid(directory: Path, key: str, shape) -> str | None:
        meta_path, data_path = directory / META, directory / DATA
        if not meta_path.is_file() or not data_path.is_file():
            return "not built yet"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return "unreadable meta.json"
        if meta.get("key") != key or meta.get("format") != FORMAT or tuple(meta.get("shape", ())) != tuple(shape):
            return "stale (built for another teacher, data or format)"
        if data_path.stat().st_size != int(np.prod(shape)) * 2:
            return "truncated"
        if _file_digest(data_path) != meta.get("digest"):
            return "corrupted (digest mismatch)"
        return None

    @staticmethod
    @torch.no_grad()
    def _build(directory: Path, key: str, shape, teacher, images, mean, std, device, batch_size: int,
               channels_last: bool) -> None:
        t0 = time.perf_counter()
        (directory / META).unlink(missing_ok=True)
        for stale in directory.glob(f".{DATA}.*.tmp"):  # a killed builder's (this one holds the lock)
            stale.unlink(missing_ok=True)
        tmp = directory / f".{DATA}.{os.getpid()}.tmp"
        out = np.memmap(tmp, dtype=np.float16, mode="w+", shape=shape)
        mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0
        padded = F.pad(images, (PAD,) * 4)
        was_training = teacher.training
        teacher.eval()
        per_forward = max(batch_size // NUM_VIEWS, 1)  # images per forward, each in all 162 views
        try:
            for start in range(0, shape[0], per_forward):
                chunk = padded[start:start + per_forward].to(device)
                n = chunk.shape[0]
                views = torch.arange(NUM_VIEWS, device=device).repeat(n)
                source = chunk.repeat_interleave(NUM_VIEWS, dim=0)
                x = (crop_flip_batch(source, views).float() - mean_t) / std_t
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = teacher(x).float().reshape(n, NUM_VIEWS, -1)
                out[start:start + n] = logits.half().cpu().numpy()
            out.flush()
            del out
            os.replace(tmp, directory / DATA)
        finally:
            teacher.train(was_training)
            tmp.unlink(missing_ok=True)
        write_json(directory / META, {"format": FORMAT, "key": key, "shape": list(shape),
                                      "digest": _file_digest(directory / DATA),
                                      "build_time_s": round(time.perf_counter() - t0, 2)})


def method_refusals(method) -> list[str]:
    """Why a method cannot take its teacher's logits from the cache (none: it can)."""
    from ..methods import Method

    reasons = []
    if set(method.needs_of("teacher")) - {"logits"} or method.teacher_batch_stats:
        reasons.append("the method needs more of the teacher than its logits")
    if method.views or type(method).prepare is not Method.prepare:
        reasons.append("the method changes or adds to the batch")
    return reasons


def cache_refusals(cfg, data, method) -> list[str]:
    """Why a run cannot use the teacher-logit cache (none: it can). Known before the teacher is obtained."""
    from ..data.device_loader import uint8_images

    reasons = method_refusals(method)
    if str(cfg.dataset.augment) not in ("cifar",):
        reasons.append(f"augmentation '{cfg.dataset.augment}' is not the 162-view reference one")
    if uint8_images(data.train) is None:
        reasons.append(f"dataset {data.name} is not held in memory as uint8 images")
    if getattr(data, "unlabelled", None) is not None:
        reasons.append("batches hold images of the unlabelled pool")
    return reasons


class CachePlan:
    """Whether a run takes its teacher's logits from the cache, decided in two moments: before the teacher is
    obtained (``CachePlan(cfg, data, method)``: ``trainer.teacher_cache=on`` where the cache cannot serve is
    refused there, before any teacher work) and once it is there (``open``)."""

    def __init__(self, cfg, data, method):
        from ..errors import ConfigError

        self.cfg, self.data = cfg, data
        self.refusals = cache_refusals(cfg, data, method) if method.uses_teacher else ["the method uses no teacher"]
        self.wanted = str(cfg.trainer.teacher_cache)
        if self.wanted == "on" and self.refusals and method.uses_teacher:
            raise ConfigError(f"trainer.teacher_cache: cannot be used here: {'; '.join(self.refusals)}; "
                              "valid here: off, auto")

    def open(self, teacher, fingerprint: str | None, device, epochs: int,
             channels_last: bool) -> TeacherLogitCache | None:
        """The cache when the run can use it: ``on``; ``auto`` = when it exists already or the run has >= 162
        epochs (building costs 162 teacher passes over the data, more than a shorter run's own); ``off``: None."""
        from ..data.device_loader import uint8_images

        cfg, data = self.cfg, self.data
        if teacher is None or self.wanted == "off" or self.refusals:
            return None
        root = Path(str(cfg.store)).expanduser() / "cache"
        images, targets = uint8_images(data.train)
        mean, std = cfg.dataset.mean, cfg.dataset.std
        if self.wanted == "auto" and epochs < NUM_VIEWS and not TeacherLogitCache.exists(root, fingerprint, images,
                                                                                        targets, mean, std):
            return None
        return TeacherLogitCache.open(root, teacher, fingerprint, images, targets, mean, std, data.num_classes, device,
                                      channels_last=channels_last)
