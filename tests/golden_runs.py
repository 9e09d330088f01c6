"""The deterministic runs whose per-epoch histories are pinned in tests/golden/ (written by the engine as it was
before it was split into phases; ``python tests/golden_runs.py`` rewrites them, which a refactor must never need)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import write_cifar100  # noqa: E402

GOLDEN = HERE / "golden"
RUNS = {  # name: method overrides
    "kd": ["method=kd"],
    "dkd": ["method=dkd", "method.warmup_epochs=2"],
}
TIMING_KEYS = ("images_per_s", "epoch_time_s")


def golden_config(root: Path, name: str, *extra: str):
    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[
            "dataset=cifar100", f"dataset.root={root / 'data'}", "dataset.num_workers=0", "teacher=resnet8",
            f"teacher.checkpoint={root / 'teacher.pth'}", "student=resnet8", "trainer.epochs=3",
            "trainer.batch_size=64", "trainer.eval_batch_size=128", "trainer.deterministic=true",
            "trainer.channels_last=false", "trainer.progress=false", "trainer.device=cpu", "optim.milestones=[2]",
            "logger.mode=disabled", f"store={root / 'store'}", *RUNS[name], *extra])


def prepare(root: Path) -> None:
    """CIFAR-100 pickles (256 train / 128 test images) and a seeded resnet8 teacher in the community format."""
    from kdbench.models import create_model

    write_cifar100(root / "data")
    torch.manual_seed(1234)
    torch.save({"model": create_model("resnet8", 100).state_dict()}, root / "teacher.pth")


def history(record: dict) -> list[dict]:
    """The per-epoch history without its timings (which no two runs share)."""
    return [{k: v for k, v in entry.items() if k not in TIMING_KEYS} for entry in record["history"]]


def run(root: Path, name: str, *extra: str) -> list[dict]:
    from kdbench.engine.teacher import provide_teacher
    from kdbench.engine.trainer import train

    torch.set_num_threads(1)
    record = train(golden_config(root, name, *extra), root / f"run-{name}-{len(extra)}", teacher_provider=provide_teacher)
    assert record["status"] == "completed", record["failure"]
    return history(record)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp))
        for name in RUNS:
            out = GOLDEN / f"history_{name}.json"
            out.write_text(json.dumps(run(Path(tmp), name), indent=1) + "\n")
            print("wrote", out)
