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


# Small and fast settings every CLI test shares.
FAST = ["trainer.progress=false", "trainer.batch_size=64", "trainer.eval_batch_size=128", "dataset.num_workers=0",
        "trainer.device=cpu"]
