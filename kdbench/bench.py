"""``kdbench-bench``: training throughput of one teacher/student/method step under the reference-style loop and
under each fast-path option, measured side by side in one process.

Configurations (cumulative options joined by ``+``):
  reference   torchvision DataLoader over PIL images with torchvision transforms (pad-4 crop, flip, ToTensor,
              Normalize) and worker processes, fp32, eager, teacher forward every step: how mdistiller and
              RepDistiller train
  device      dataset resident on the device as uint8, batched augmentation there (same views)
  cl          channels_last memory format
  bf16 / fp16 autocast (fp16 with a grad scaler; CUDA only)
  compile     torch.compile of the student step and of the teacher forward
  cache       teacher logits from the exact 162-view cache instead of the teacher forward

All configurations are built first (each a fresh student with the same initial weights), each runs ``--warmup``
untimed steps (compile happens there; its time is reported apart), and then they are timed in ``--rounds``
interleaved rounds of ``--steps / --rounds`` steps each, with device synchronisation around every round, so a
shared machine's drifts hit all of them alike. The table gives medians over the rounds, and the ratio to the
reference is the median of per-round ratios. Images/s count training images through the whole step (data,
teacher, student forward and backward, optimiser). GFLOP/step counts the convolutions and matrix products of the
student's forward and backward and, without the cache, the teacher's forward; "% of peak" compares the achieved
rate to a large matrix product measured on the same device in the same precision (a roofline check: a step
near 100% can only get faster by doing less arithmetic). The projection is the time of the standard CIFAR
recipe (240 epochs x 782 steps of 64) at the measured step rate; for ``cache`` the one-off build over 50,000
images x 162 views is projected apart (paid once per teacher, by the first run of a sweep). The timed cache is
built over ``--cache-images`` images (its build time is scaled to 50,000); samples beyond those look up one of
the cached rows, which costs exactly what their own row would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

CIFAR_MEAN, CIFAR_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
RECIPE_STEPS = 240 * math.ceil(50_000 / 64)
DEFAULT_CONFIGS = {  # bf16 only where the hardware has it: CPUs without bf16 units emulate it, far slower
    "cuda": ("reference", "device", "device+cl", "device+cl+compile", "device+cl+bf16", "device+cl+bf16+compile",
             "device+cl+bf16+compile+cache"),
    "cpu": ("reference", "device", "device+cl", "device+cl+compile", "device+cl+cache", "device+cl+compile+cache"),
}
OPTIONS = {"device", "cl", "bf16", "fp16", "compile", "cache"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _precision(name: str) -> str:
    """The autocast precision a configuration name asks for: bf16, fp16, or fp32 (neither)."""
    options = name.split("+")
    return next((p for p in ("bf16", "fp16") if p in options), "fp32")


class ReferenceCifar(torch.utils.data.Dataset):
    """In-memory CIFAR as torchvision's CIFAR100 serves it (PIL image per sample) plus the sample index."""

    def __init__(self, images_hwc: np.ndarray, targets: np.ndarray):
        from torchvision import transforms as T

        self.images, self.targets = images_hwc, targets
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.targets[index]), index


class _Images:
    """uint8 images held like torchvision's CIFAR (``data`` NHWC, ``targets``), as the device loader reads them."""

    def __init__(self, data: np.ndarray, targets: np.ndarray):
        self.data, self.targets = data, targets.tolist()

    def __len__(self):
        return len(self.targets)


def _synthetic(n: int, classes: int, seed: int = 0):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), g.integers(0, classes, n)


def _cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), with its vector extensions that matter for fp32/bf16."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "cpu"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "cpu")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {' '.join(isa) or 'no avx2'}"


def _fail(message: str):
    """Bad input: one line on stderr, exit code 2."""
    print(f"kdbench-bench: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _FirstRows:
    """A logit cache built over the first rows only, looked up for any sample index (modulo its rows)."""

    def __init__(self, cache):
        self.cache, self.directory = cache, cache.directory

    def lookup(self, index, views):
        return self.cache.lookup(index % self.cache.table.shape[0], views)


@dataclass
class Prepared:
    """One configuration, built and ready: ``step()`` runs one training step; ``begin_round()`` is called
    untimed before each timed round (the reference style starts its DataLoader iterator there)."""

    name: str
    precision: str
    step: Callable[[], int]
    begin_round: Callable[[], None]
    flops_per_step: float
    cache_build_s: float | None
    warmup_s: float = 0.0
    round_s: list = field(default_factory=list)  # (seconds, images, steps) per timed round


def step_flops(teacher, student, method, batch: int, device, online_teacher: bool) -> float:
    """FLOPs of one step as torch's flop counter sees them (convolutions and matrix products): the student's
    forward and backward, plus the teacher's forward when it runs online. Loss and optimiser arithmetic is
    elementwise and not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from .models import run_model

    x = torch.randn(batch, 3, 32, 32, device=device)
    with FlopCounterMode(display=False) as counter:
        if online_teacher:
            with torch.no_grad():
                run_model(teacher, x, method.needs_of("teacher"))
        out = run_model(student, x, method.needs)
        out.logits.float().sum().backward()
    student.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_peak(device, dtype) -> float:
    """FLOP/s of a large square matrix product in ``dtype`` on ``device``, the best of five timings: the ceiling
    the table's GFLOP/s are compared to."""
    n = 4096 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 2
    for _ in range(2):
        a @ b
    best = math.inf
    for _ in range(5):
        _sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 * reps / best


def _method(name: str):
    """A fresh instance of the method config ``name`` (bad input if there is none)."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    from .methods import build_method

    source = files("kdbench.conf") / "method" / f"{name}.yaml"
    if not source.is_file():
        _fail(f"--method: no method config '{name}'")
    return build_method(OmegaConf.create(source.read_text()))


def check_configs(names: list[str], method_name: str) -> None:
    """Every configuration name, before anything is built: known options, and the cache only where the trainer
    would use it (the same rule: a method whose teacher gives logits alone, on unchanged batches; device data)."""
    from .engine.logit_cache import method_refusals

    refusals = method_refusals(_method(method_name))
    for name in names:
        opts = set(name.split("+")) - {"reference"}
        if opts - OPTIONS:
            _fail(f"--configs: unknown option(s) {', '.join(sorted(opts - OPTIONS))} in '{name}'; valid: reference, "
                  f"{', '.join(sorted(OPTIONS))}")
        if "cache" in opts and refusals:
            _fail(f"--configs: no cache for method {method_name} in '{name}': {'; '.join(refusals)}")
        if "cache" in opts and "device" not in opts:
            _fail(f"--configs: the cache needs the device loader's view ids; use 'device+...+cache' in '{name}'")


def prepare(name: str, args, device, images, targets, cache_dir: Path) -> Prepared:
    from .data.device_loader import DeviceTrainLoader
    from .data.sampler import EpochSampler
    from .engine.logit_cache import TeacherLogitCache
    from .data.batch import DeviceBatches
    from .engine.build import size_method, weights_fingerprint
    from .engine.optim import build_optimizer, strategy_of
    from .engine.step import TrainStep
    from .methods import BuildContext, Progress
    from .models import create_model
    from omegaconf import OmegaConf

    opts = set(name.split("+")) - {"reference"}  # checked by check_configs
    precision = _precision(name)
    memory_format = torch.channels_last if "cl" in opts else torch.contiguous_format
    torch.manual_seed(0)
    method = _method(args.method)
    student = create_model(args.student, args.classes).to(device=device, memory_format=memory_format)
    teacher = create_model(args.teacher, args.classes).eval().requires_grad_(False).to(device=device,
                                                                                    memory_format=memory_format)
    n = len(targets)
    if "device" in opts:
        sampler = EpochSampler(n, seed=0)
        loader = DeviceTrainLoader(_Images(images, targets), sampler, args.batch_size, "cifar", CIFAR_MEAN, CIFAR_STD,
                                   device, channels_last="cl" in opts)
    else:
        sampler = None
        loader = torch.utils.data.DataLoader(ReferenceCifar(images, targets), batch_size=args.batch_size, shuffle=True,
                                             num_workers=args.workers, pin_memory=device.type == "cuda")
    fingerprint = weights_fingerprint(teacher)
    cache, cache_build_s = None, None
    if "cache" in opts:
        n_cache = min(n, args.cache_images)
        cache = TeacherLogitCache.open(cache_dir, teacher, fingerprint,
                                       torch.from_numpy(images[:n_cache]).permute(0, 3, 1, 2).contiguous(),
                                       torch.as_tensor(targets[:n_cache]), CIFAR_MEAN, CIFAR_STD, args.classes, device,
                                       channels_last="cl" in opts)
        # the build time of this cache (measured when it was built, maybe by an earlier configuration),
        # projected to CIFAR's 50,000 images
        meta = json.loads((cache.directory / "meta.json").read_text())
        cache_build_s = meta["build_time_s"] * 50_000 / n_cache
    samples = torch.zeros(2, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    context = BuildContext(num_classes=args.classes, train_targets=torch.as_tensor(targets), device=device,
                           teacher=teacher, teacher_fingerprint=fingerprint, cache_dir=cache_dir,
                           plain_train_batches=lambda: iter(()))
    size_method(method, student, teacher, samples, context)
    flops = step_flops(teacher, student, method, args.batch_size, device, online_teacher=cache is None)
    optim_cfg = OmegaConf.create({"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False})
    optimizer = build_optimizer(optim_cfg, list(student.parameters()) + list(method.parameters()))
    # the trainer's own step: the cache (when timed) holds the first --cache-images rows; other samples look up one
    # of those (a lookup costs the same whichever row it reads)
    train_step = TrainStep(student, method, optimizer, strategy_of(optim_cfg), device, teacher=teacher,
                           logit_cache=cache and _FirstRows(cache), precision=precision, compile="compile" in opts)
    train_step.train()
    if sampler is None:
        loader = DeviceBatches(loader, device, channels_last="cl" in opts)
    state = {"epoch": 0, "iterator": iter(()), "pending": None, "step": 0}

    def next_batch():
        if state["pending"] is not None:
            item, state["pending"] = state["pending"], None
            return item
        while True:
            try:
                return next(state["iterator"])
            except StopIteration:
                state["epoch"] += 1
                if sampler is not None:
                    sampler.set_epoch(state["epoch"])
                state["iterator"] = iter(loader)

    def begin_round():
        if sampler is None:
            # a fresh DataLoader iterator whose first batch is waited for here, untimed: batches its workers
            # prefetched while other configurations ran are not counted to the reference's credit
            state["iterator"] = iter(loader)
            state["pending"] = next_batch()

    def step() -> int:
        batch = next_batch()
        train_step(batch, Progress(epoch=1, epochs=240, step=state["step"], steps_per_epoch=782))
        state["step"] += 1
        return len(batch)

    return Prepared(name, precision, step, begin_round, flops, cache_build_s)


def time_configs(prepared: list[Prepared], warmup: int, rounds: int, per_round: int, device) -> None:
    """Warm each configuration up, then time them in interleaved rounds: each round runs ``per_round`` steps of
    every configuration in turn, so slow drifts of a shared machine hit all of them alike."""
    for p in prepared:
        _sync(device)
        t = time.perf_counter()
        p.begin_round()
        for _ in range(warmup):
            p.step()
        _sync(device)
        p.warmup_s = time.perf_counter() - t
        print(f"{p.name:40s} warmed up in {p.warmup_s:.1f} s", file=sys.stderr, flush=True)
    for r in range(rounds):
        for p in prepared:
            p.begin_round()
            _sync(device)
            t = time.perf_counter()
            seen = sum(p.step() for _ in range(per_round))
            _sync(device)
            p.round_s.append((time.perf_counter() - t, seen, per_round))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)


def summarise(p: Prepared, reference: Prepared | None, peak: float) -> dict:
    """Medians over the rounds: images/s, step time, and the ratio to the reference round run moments before."""
    rates = [seen / seconds for seconds, seen, _ in p.round_s]
    step_s = statistics.median(seconds / steps for seconds, _, steps in p.round_s)
    ratio = None
    if reference is not None:
        ratio = statistics.median(rate / (seen / seconds) for rate, (seconds, seen, _) in zip(rates, reference.round_s))
    achieved = p.flops_per_step / step_s
    return {"config": p.name, "images_per_s": statistics.median(rates), "range": (min(rates), max(rates)),
            "ratio": ratio, "step_s": step_s, "warmup_s": p.warmup_s, "cache_build_s": p.cache_build_s,
            "gflop_per_step": p.flops_per_step / 1e9, "gflops": achieved / 1e9,
            "peak_fraction": achieved / peak,
            "projected_h": RECIPE_STEPS * step_s / 3600}


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
JPEG_SUFFIXES = {".jpg", ".jpeg"}


class _JpegFiles(torch.utils.data.Dataset):
    """A folder of JPEGs (ImageFolder tree or flat) as torchvision's ImageFolder serves it: (PIL RGB image, 0)."""

    def __init__(self, files: list[Path]):
        self.samples = [(str(f), 0) for f in files]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        from torchvision.datasets.folder import pil_loader

        return pil_loader(self.samples[index][0]), 0


def _worker_pids(loader) -> list[int]:
    """The worker processes of a (wrapped) DataLoader's live iterator."""
    inner = getattr(loader, "loader", loader)
    return [w.pid for w in getattr(getattr(inner, "_iterator", None), "_workers", [])]


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes ``pids`` so far (Linux /proc; 0 where unreadable)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def loader_only(args, device) -> str:
    """Time the input pipelines alone on ``args.data`` (a folder of JPEGs): ``pil``, kdbench's PIL path
    (``trainer.loader=torch``: torchvision DataLoader, PIL decode, v2 RandomResizedCrop + flip + ToDtype +
    Normalize per sample in workers, seeded per sample); ``pil-v1``, the reference codebases' unseeded
    torchvision v1 transforms on the same DataLoader; ``tensor``, kdbench.data.jpeg; all yield normalised float
    batches on ``device``. Interleaved
    rounds; at the start of each round a pipeline's queued batches are drained untimed, so its workers start
    the timed batches from an empty queue. Returns the markdown report."""
    import os

    from .data.base import IndexedDataset, build_transforms
    from .data.batch import DeviceBatches
    from .data.jpeg import JpegLoader, loader_workers
    from .data.sampler import EpochSampler

    files = sorted(f for f in Path(args.data).rglob("*") if f.suffix.lower() in JPEG_SUFFIXES)
    if not files:
        _fail(f"--data: no .jpg/.jpeg files under {args.data}")
    workers = loader_workers(args.workers)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    size, batch = args.image_size, args.batch_size
    base = _JpegFiles(files)
    pil_tf = build_transforms("imagenet", size, IMAGENET_MEAN, IMAGENET_STD, train=True)
    samplers = {"pil": EpochSampler(len(base), seed=0), "tensor": EpochSampler(len(base), seed=0)}
    pil = torch.utils.data.DataLoader(
        IndexedDataset(base, pil_tf), batch_size=batch, sampler=samplers["pil"], num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    from torchvision import transforms as T1  # the reference codebases' v1 pipeline, unseeded

    v1_tf = T1.Compose([T1.RandomResizedCrop(size), T1.RandomHorizontalFlip(), T1.ToTensor(),
                        T1.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    samplers["pil-v1"] = torch.utils.data.RandomSampler(base)
    v1 = torch.utils.data.DataLoader(
        IndexedDataset(base, v1_tf), batch_size=batch, sampler=samplers["pil-v1"], num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    pipelines = {"pil": DeviceBatches(pil, device), "pil-v1": DeviceBatches(v1, device),
                 "tensor": JpegLoader(base.samples, samplers["tensor"], batch, size, True, IMAGENET_MEAN,
                                      IMAGENET_STD, device, workers=workers)}
    prefetch = {"pil": 2, "pil-v1": 2, "tensor": 4 if device.type == "cuda" else 2}  # the loaders' prefetch_factor
    queued = {name: workers * prefetch[name] for name in pipelines}

    def batches(name):
        for epoch in range(1, 10**9):
            if hasattr(samplers[name], "set_epoch"):
                samplers[name].set_epoch(epoch)
            yield from pipelines[name]

    streams = {name: batches(name) for name in pipelines}
    per_round = max(1, math.ceil(args.steps / args.rounds))
    for name, stream in streams.items():  # warm-up: workers started, first batches through
        for _ in range(args.warmup + queued[name]):
            next(stream)
    times = {name: [] for name in streams}
    per_cpu_s = {name: [] for name in streams}
    for r in range(args.rounds):
        for name, stream in streams.items():
            for _ in range(queued[name]):
                next(stream)
            _sync(device)
            pids = _worker_pids(pipelines[name])
            t, cpu, seen = time.perf_counter(), time.process_time() + _cpu_seconds(pids), 0
            for _ in range(per_round):
                seen += len(next(stream))
            _sync(device)
            elapsed = time.perf_counter() - t
            times[name].append(seen / elapsed)
            per_cpu_s[name].append(seen / (time.process_time() + _cpu_seconds(pids) - cpu))
            time.sleep(1.5 * queued[name] * elapsed / per_round)  # its workers refill their queue before the next
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    fallbacks = pipelines["tensor"].fallbacks
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    command = "kdbench-bench " + " ".join(args.argv)
    lines = [f"Command: `{command}`", "",
             f"{len(files)} JPEGs from {args.data}; {size} px RandomResizedCrop + flip + normalise, batch {batch}, "
             f"{workers} workers, {device.type} ({where}), {cpus} CPU cores available, "
             f"{torch.get_num_threads()} torch thread(s) in the consuming process, torch {torch.__version__}; "
             f"{per_round} timed batches per pipeline in each of {args.rounds} interleaved rounds after "
             f"{args.warmup} warm-up batches. Medians over the rounds; the ratios are medians of per-round ratios; "
             f"CPU-seconds are those of the consuming process and its workers during the round (/proc). "
             f"Files PIL had to decode on the tensor path: {fallbacks}.", "",
             "| pipeline | images/s | range over rounds | images/s per core | x pil | images per CPU-second "
             "| x pil, per CPU-second |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rates in times.items():
        ratio = statistics.median(a / b for a, b in zip(rates, times["pil"]))
        cpu_ratio = statistics.median(a / b for a, b in zip(per_cpu_s[name], per_cpu_s["pil"]))
        lines.append(f"| {name} | {statistics.median(rates):.1f} | {min(rates):.1f}-{max(rates):.1f} | "
                     f"{statistics.median(rates) / cpus:.1f} | {ratio:.2f} | {statistics.median(per_cpu_s[name]):.1f} "
                     f"| {cpu_ratio:.2f} |")
    return "\n".join(lines)


def _detection_prepared(name: str, method_name: str, args, device) -> Prepared:
    """One detection configuration: the student Faster R-CNN-FPN alone (``ce``) or distilled from the teacher
    (``method_name``), stepping through the trainer's TrainStep on synthetic images with 1-4 random boxes each."""
    from omegaconf import OmegaConf

    from .engine.build import size_method
    from .engine.optim import build_optimizer, strategy_of
    from .engine.step import TrainStep
    from .methods import BuildContext, Progress
    from .tasks.detection import DetectionBatch, DetectionTask

    size = args.image_size
    task = DetectionTask(OmegaConf.create({"train_sizes": [size], "image_size": size, "max_size": int(size * 1.667)}))
    torch.manual_seed(0)
    method = _method(method_name)
    student = task.create_model(args.student, args.classes, size).to(device)
    teacher = (task.create_model(args.teacher, args.classes, size, role="teacher").eval().requires_grad_(False).to(device)
               if method.uses_teacher else None)
    g = torch.Generator().manual_seed(1)

    def batch() -> DetectionBatch:
        images, targets = [], []
        for _ in range(args.batch_size):
            h, w = size, int(size * 4 / 3)
            n = int(torch.randint(1, 5, (), generator=g))
            xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
            wh = (0.1 + 0.3 * torch.rand(n, 2, generator=g)) * torch.tensor([w, h])
            images.append(torch.rand(3, h, w, generator=g).to(device))
            targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                            "labels": torch.randint(1, args.classes + 1, (n,), generator=g).to(device)})
        return DetectionBatch(images, targets, torch.arange(args.batch_size))

    context = BuildContext(num_classes=args.classes, train_targets=torch.zeros(0, dtype=torch.long), device=device,
                           teacher=teacher, teacher_fingerprint=None, cache_dir=Path(tempfile.gettempdir()),
                           plain_train_batches=lambda: iter(()))
    size_method(method, student, teacher, [batch()], context, task)
    # lr 0: the weights stay as built, so both configurations time the same student arithmetic (on random images
    # the two students' RPNs would otherwise drift apart and change the NMS work per step)
    optim_cfg = OmegaConf.create({"name": "sgd", "lr": 0.0, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False})
    params = [p for p in list(student.parameters()) + list(method.parameters()) if p.requires_grad]
    step_obj = TrainStep(student, method, build_optimizer(optim_cfg, params), strategy_of(optim_cfg), device,
                         teacher=teacher, task=task)
    step_obj.train()
    batches = [batch() for _ in range(4)]
    state = {"step": 0}

    def step() -> int:
        b = batches[state["step"] % len(batches)]
        step_obj(b, Progress(epoch=1, epochs=1, step=state["step"], steps_per_epoch=1))
        state["step"] += 1
        return len(b)

    return Prepared(name, "fp32", step, lambda: None, 0.0, None)


def detection_only(args, device) -> str:
    """``--detection``: the detection KD step (Faster R-CNN-FPN teacher -> student, the trainer's TrainStep) against
    the student trained alone, in interleaved rounds: images/s of each and the teacher's share of the KD step."""
    per_round = math.ceil(args.steps / args.rounds)
    prepared = [_detection_prepared("student alone (ce)", "ce", args, device),
                _detection_prepared(f"{args.method} (teacher online)", args.method, args, device)]
    time_configs(prepared, args.warmup, args.rounds, per_round, device)
    rows = [summarise(p, prepared[0], 1.0) for p in prepared]
    alone, kd = rows
    share = (kd["step_s"] - alone["step_s"]) / kd["step_s"]
    command = "kdbench-bench " + " ".join(args.argv)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    lines = [f"Command: `{command}`", "",
             f"Faster R-CNN-FPN {args.teacher} -> {args.student}, {args.method}, {args.batch_size} images of "
             f"{int(args.image_size * 4 / 3)}x{args.image_size} per step, {args.classes} classes, {device.type} ({name}, "
             f"{torch.get_num_threads()} threads), torch {torch.__version__}; {per_round * args.rounds} timed steps per "
             f"configuration in {args.rounds} interleaved rounds after {args.warmup} warm-up steps; medians.", "",
             "| configuration | images/s | range over rounds | ms/step | x student alone |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['images_per_s']:.2f} | {r['range'][0]:.2f}-{r['range'][1]:.2f} | "
                     f"{1000 * r['step_s']:.0f} | {r['ratio']:.2f} |")
    lines += ["", f"The teacher's share of the KD step (its backbone and box head on the student's RoIs, and the "
                  f"distillation term): {100 * share:.0f}% of the step time."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdbench-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--method", default="kd")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (medians are reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile happens here)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference style")
    parser.add_argument("--cache-images", type=int, default=128,
                        help="images the timed cache is built over (its build time is projected to 50,000)")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="configurations to time (default: the fast-path options added one at a time)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as markdown here")
    parser.add_argument("--loader-only", action="store_true",
                        help="time only the input pipelines (PIL reference vs JPEG tensor path) on --data")
    parser.add_argument("--data", type=Path, default=None, help="--loader-only: a folder of JPEGs (any layout)")
    parser.add_argument("--image-size", type=int, default=224,
                        help="--loader-only: output crop size; --detection: the short side of the images")
    parser.add_argument("--detection", action="store_true",
                        help="time the detection KD step (--teacher/--student: detection backbones) against the "
                             "student alone")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    from .engine.runtime import select_device
    from .errors import ConfigError

    try:
        device = select_device(args.device)
    except ConfigError as e:
        _fail(f"--device: {e}")
    for key in ("steps", "rounds", "batch_size"):
        if getattr(args, key) < 1:
            _fail(f"--{key.replace('_', '-')}: must be >= 1, got {getattr(args, key)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.loader_only:
        if not args.threads:  # the consumer only normalises; idle OpenMP threads would spin on the workers' cores
            torch.set_num_threads(1)
        if args.data is None or not args.data.is_dir():
            _fail(f"--data: --loader-only needs a folder of JPEGs, got {args.data}")
        text = loader_only(args, device)
        print(text)
        if args.out:
            from .io import atomic_write

            atomic_write(args.out, lambda f: f.write(text + "\n"))
        return 0
    if args.detection:
        text = detection_only(args, device)
        print(text)
        if args.out:
            from .io import atomic_write

            atomic_write(args.out, lambda f: f.write(text + "\n"))
        return 0
    args.configs = args.configs or list(DEFAULT_CONFIGS["cuda" if device.type == "cuda" else "cpu"])
    check_configs(args.configs, args.method)
    per_round = math.ceil(args.steps / args.rounds)
    images, targets = _synthetic((args.warmup + per_round * args.rounds + 2) * args.batch_size, args.classes)
    with tempfile.TemporaryDirectory() as cache_dir:
        prepared = [prepare(name, args, device, images, targets, Path(cache_dir)) for name in args.configs]
        time_configs(prepared, args.warmup, args.rounds, per_round, device)
    precisions = dict.fromkeys(p.precision for p in prepared)  # in order of first use
    peaks = {precision: matmul_peak(device, DTYPES[precision]) for precision in precisions}
    reference = next((p for p in prepared if p.name == "reference"), None)
    rows = [summarise(p, reference, peaks[p.precision]) for p in prepared]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    command = "kdbench-bench " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"Command: `{command}`", "",
             f"{args.teacher} -> {args.student}, {args.method}, batch {args.batch_size}, {device.type} ({gpu}, "
             f"{torch.get_num_threads()} threads), torch {torch.__version__}; {per_round * args.rounds} timed steps per "
             f"configuration in {args.rounds} interleaved rounds, after {args.warmup} warm-up steps. Medians over "
             f"the rounds; the ratio is the median of per-round ratios. Matrix-product peak measured here: "
             + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()) + ".", "",
             "| configuration | images/s | range over rounds | ms/step | x reference | GFLOP/step | GFLOP/s | % of peak "
             "| warm-up s | cache build, h (50k) | 240 epochs, h |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        build = f"{r['cache_build_s'] / 3600:.2f}" if r["cache_build_s"] is not None else "-"
        lines.append(f"| {r['config']} | {r['images_per_s']:.1f} | {r['range'][0]:.1f}-{r['range'][1]:.1f} | "
                     f"{1000 * r['step_s']:.1f} | {ratio} | {r['gflop_per_step']:.2f} | {r['gflops']:.0f} | "
                     f"{100 * r['peak_fraction']:.0f} | {r['warmup_s']:.1f} | {build} | {r['projected_h']:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from .io import atomic_write

        atomic_write(args.out, lambda f: f.write(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
