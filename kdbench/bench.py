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

Each configuration builds a fresh student (same initial weights) and runs ``--warmup`` untimed steps (compile
happens there; its time is reported apart) and then ``--steps`` timed steps with device synchronisation at both
ends. Images/s count training images through the whole step (data, teacher, student forward and backward,
optimiser). The projection is the time of the standard CIFAR recipe (240 epochs x 782 steps of 64) at the
measured step rate, plus for ``cache`` the projected one-off build over 50,000 images x 162 views. The timed
cache is built over ``--cache-images`` images (its build time is scaled to 50,000); samples beyond those look up
one of the cached rows, which costs exactly what their own row would.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CIFAR_MEAN, CIFAR_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
RECIPE_STEPS = 240 * math.ceil(50_000 / 64)
DEFAULT_CONFIGS = {  # bf16 only where the hardware has it: CPUs without bf16 units emulate it, far slower
    "cuda": ("reference", "device", "device+cl", "device+cl+bf16", "device+cl+bf16+compile",
             "device+cl+bf16+compile+cache"),
    "cpu": ("reference", "device", "device+cl", "device+cl+compile", "device+cl+cache", "device+cl+compile+cache"),
}
OPTIONS = {"device", "cl", "bf16", "fp16", "compile", "cache"}


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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(name: str, args, device, images, targets, cache_dir: Path) -> dict:
    from .data.device_loader import DeviceTrainLoader
    from .data.sampler import EpochSampler
    from .engine.logit_cache import TeacherLogitCache
    from .engine.optim import build_optimizer
    from .engine.runtime import autocast
    from .engine.trainer import StudentStep, forward_outputs, optimizer_step, weights_fingerprint
    from .methods import Batch, Progress, build_method
    from .models import ModelOutput, create_model
    from omegaconf import OmegaConf

    opts = set(name.split("+")) - {"reference"}
    if opts - OPTIONS:
        raise SystemExit(f"kdbench-bench: error: --configs: unknown option(s) {', '.join(sorted(opts - OPTIONS))} in "
                         f"'{name}'; valid: reference, {', '.join(sorted(OPTIONS))}")
    precision = "bf16" if "bf16" in opts else "fp16" if "fp16" in opts else "fp32"
    memory_format = torch.channels_last if "cl" in opts else torch.contiguous_format
    torch.manual_seed(0)
    from importlib.resources import files

    source = files("kdbench.conf") / "method" / f"{args.method}.yaml"
    if not source.is_file():
        raise SystemExit(f"kdbench-bench: error: --method: no method config '{args.method}'")
    method_cfg = OmegaConf.create(source.read_text())
    method = build_method(method_cfg)
    if set(method.needs_of("teacher")) - {"logits"} and "cache" in opts:
        raise SystemExit(f"kdbench-bench: error: --configs: method {args.method} needs teacher features; no cache")
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
    cache, cache_build_s = None, None
    if "cache" in opts:
        n_cache = min(n, args.cache_images)
        cache = TeacherLogitCache.open(cache_dir, teacher, weights_fingerprint(teacher),
                                       torch.from_numpy(images[:n_cache]).permute(0, 3, 1, 2).contiguous(),
                                       torch.as_tensor(targets[:n_cache]), CIFAR_MEAN, CIFAR_STD, args.classes, device,
                                       channels_last="cl" in opts)
        # the build time of this cache (measured when it was built, maybe by an earlier configuration),
        # projected to CIFAR's 50,000 images
        import json

        meta = json.loads((cache.directory / "meta.json").read_text())
        cache_build_s = meta["build_time_s"] * 50_000 / n_cache
    probe = torch.zeros(2, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    from .models import run_model

    from .methods import BuildContext

    context = BuildContext(num_classes=args.classes, train_targets=torch.as_tensor(targets), device=device,
                           teacher=teacher, teacher_fingerprint=weights_fingerprint(teacher), cache_dir=cache_dir,
                           plain_train_batches=lambda: iter(()))
    with torch.no_grad():
        method.build(run_model(student, probe, method.needs), run_model(teacher, probe, method.needs_of("teacher")),
                     context)
    method.to(device)
    optimizer = build_optimizer(OmegaConf.create({"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                                                  "nesterov": False}), list(student.parameters()) + list(method.parameters()))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    compiled = "compile" in opts
    step_module = StudentStep(student, method, torch.compile(student) if compiled else None)
    teacher_fwd = torch.compile(teacher) if compiled else teacher

    def batches():
        epoch = 0
        while True:
            epoch += 1
            if sampler is not None:
                sampler.set_epoch(epoch)
            yield from loader

    stream = batches()
    seen, total = 0, args.warmup + args.steps
    _sync(device)
    t_start = time.perf_counter()
    for step in range(total):
        if step == args.warmup:
            _sync(device)
            t_timed = time.perf_counter()
        item = next(stream)
        images_b, targets_b, index = item[0], item[1], item[2]
        if step >= args.warmup:
            seen += len(targets_b)
        batch = Batch(images_b.to(device, non_blocking=True).contiguous(memory_format=memory_format),
                      targets_b.to(device, non_blocking=True), index.to(device, non_blocking=True))
        progress = Progress(epoch=1, epochs=240, step=step, steps_per_epoch=782)
        with autocast(precision, device):
            if cache is not None:
                # the timed cache holds the first --cache-images rows; other samples look up one of those (a
                # lookup costs the same whichever row it reads)
                t_out = ModelOutput(logits=cache.lookup(batch.index % cache.table.shape[0], item[3]))
            else:
                with torch.no_grad():
                    t_out = forward_outputs(teacher_fwd, batch, method, role="teacher")
            terms = step_module(batch, t_out, progress)
        optimizer_step(optimizer, scaler, terms, method.task_terms)
    _sync(device)
    t_end = time.perf_counter()
    timed = t_end - t_timed
    step_s = timed / args.steps
    return {"config": name, "images_per_s": seen / timed, "step_ms": 1000 * step_s,
            "warmup_s": t_timed - t_start, "cache_build_s": cache_build_s,
            "projected_h": (RECIPE_STEPS * step_s + (cache_build_s or 0.0)) / 3600}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdbench-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--method", default="kd")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile happens here)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference style")
    parser.add_argument("--cache-images", type=int, default=128,
                        help="images the timed cache is built over (its build time is projected to 50,000)")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="configurations to time (default: the fast-path options added one at a time)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as markdown here")
    args = parser.parse_args(argv)
    from .engine.runtime import select_device
    from .errors import ConfigError

    try:
        device = select_device(args.device)
    except ConfigError as e:
        parser.exit(2, f"kdbench-bench: error: --device: {e}\n")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.configs = args.configs or list(DEFAULT_CONFIGS["cuda" if device.type == "cuda" else "cpu"])
    images, targets = _synthetic((args.warmup + args.steps) * args.batch_size, args.classes)
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in args.configs:
            rows.append(run_config(name, args, device, images, targets, Path(cache_dir)))
            print(f"{name:40s} {rows[-1]['images_per_s']:9.1f} img/s", file=sys.stderr, flush=True)
    base = next((r["images_per_s"] for r in rows if r["config"] == "reference"), None)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    lines = [f"{args.teacher} -> {args.student}, {args.method}, batch {args.batch_size}, {device.type} ({gpu}, "
             f"{torch.get_num_threads()} threads), torch {torch.__version__}; {args.steps} timed steps after "
             f"{args.warmup} warm-up steps", "",
             "| configuration | images/s | ms/step | x reference | warm-up s | cache build s (50k) | 240 epochs, h |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['images_per_s'] / base:.2f}" if base else "-"
        build = f"{r['cache_build_s']:.0f}" if r["cache_build_s"] is not None else "-"
        lines.append(f"| {r['config']} | {r['images_per_s']:.1f} | {r['step_ms']:.1f} | {ratio} | {r['warmup_s']:.1f} | "
                     f"{build} | {r['projected_h']:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from .io import atomic_write

        atomic_write(args.out, lambda f: f.write(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
