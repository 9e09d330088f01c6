"""Result records for the kdbench.results tests: ``write_result`` (classification), ``write_detection_result``
and three run trees (``runs``, ``recipes``, ``detection``)."""
import json

import pytest

R32, R8, MV2, W40 = "resnet32x4", "resnet8x4", "mobilenetv2", "wrn_40_2"
SGD, ADAMW, DOT = ("sgd", 0.05, 240, 64), ("adamw", 0.001, 250, 128), ("dot", 0.05, 240, 64)


def write_result(root, run_id, *, method="kd", teacher=R32, student=R8, seed=0, last=None, best=None,
                 top5=90.0, teacher_top1=79.42, hparams=None, status="completed", dataset="cifar100", recipe=None,
                 history=None):
    """One result.json; ``recipe`` = (optim name, lr, epochs, batch size) puts those into the resolved config;
    ``history``: its per-epoch entries (default: one epoch)."""
    if hparams is None:
        hparams = {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9} if method == "kd" else {}
    failed = status == "failed"
    config = {"method": {"name": method}}
    if recipe is not None:
        name, lr, epochs, batch = recipe
        config.update(optim={"name": name, "lr": lr, "weight_decay": 5e-4, "schedule": "multistep"},
                      trainer={"epochs": epochs, "batch_size": batch})
    rec = {
        "schema": 1, "run_id": run_id, "status": status, "failure": "CUDA OOM" if failed else None,
        "started_at": "2026-11-27T10:15:00+00:00", "finished_at": "2026-11-27T11:15:00+00:00",
        "git": None, "config": config,
        "dataset": {"name": dataset, "num_classes": 100, "train_size": 50000, "test_size": 10000},
        "teacher": None if method == "ce" else {"name": teacher, "resolved": f"cifar_{teacher}",
                                                "checkpoint": "/t.pth", "top1": teacher_top1, "top5": 94.1},
        "student": {"name": student, "resolved": f"cifar_{student}", "params": 1, "extra_params": 0},
        "method": {"name": method, "hparams": hparams},
        "seed": seed, "epochs": recipe[2] if recipe else 240, "epochs_run": 3 if failed else 240,
        "metrics": {"best_top1": None if failed else best, "best_top5": None, "best_epoch": None,
                    "last_top1": None if failed else last, "last_top5": None if failed else top5},
        "history": history if history is not None else [
            {"epoch": 1, "lr": 0.05, "loss": 2.3, "losses": {}, "top1": 30.0, "top5": 60.0,
             "images_per_s": 5000.0, "epoch_time_s": 10.0}],
        "wall_time_s": 3600.0, "images_per_s": 5100.0, "device": "cpu", "precision": "fp32",
    }
    d = root / run_id
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(rec))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    w = lambda *a, **k: write_result(root, *a, **k)
    # resnet32x4 -> resnet8x4: CE, KD (T=4), DKD with seed 1 failed (so seeds 0, 2), a KD temperature sweep
    for seed, (last, best) in enumerate([(72.0, 72.4), (72.5, 72.9), (73.0, 73.4)]):
        w(f"ce-{seed}", method="ce", seed=seed, last=last, best=best, top5=91.0)
    for seed, (last, best) in enumerate([(74.0, 74.5), (74.6, 75.0), (75.2, 75.5)]):
        w(f"kd-t4-{seed}", seed=seed, last=last, best=best, top5=92.0 + seed)
    w("dkd-0", method="dkd", seed=0, last=75.0, best=75.5)
    w("dkd-1", method="dkd", seed=1, status="failed")
    w("dkd-2", method="dkd", seed=2, last=76.0, best=76.5)
    w("sweep/kd-t16", seed=0, last=71.0, best=71.5, hparams={"temperature": 16, "ce_weight": 0.1, "kd_weight": 0.9})
    w("sweep/kd-t2", seed=0, last=73.0, best=73.5, hparams={"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 0.9})
    # a second student of the same teacher
    w("mv2/ce-0", method="ce", student=MV2, last=60.0, best=61.0)
    w("mv2/kd-0", student=MV2, last=62.0, best=62.5)
    # a second teacher of resnet8x4, measured slightly differently by its two runs
    w("w40/kd-0", teacher=W40, seed=0, last=73.0, best=73.2, teacher_top1=75.6)
    w("w40/kd-1", teacher=W40, seed=1, last=74.0, best=74.2, teacher_top1=75.8)
    # noise: a foreign result.json, a corrupted one, and a json file that is not named result.json
    (root / "foreign").mkdir()
    (root / "foreign" / "result.json").write_text(json.dumps({"accuracy": 0.9}))
    (root / "broken").mkdir()
    (root / "broken" / "result.json").write_text('{"schema": 1, "run_id": ')
    (root / "wandb-summary.json").write_text("{}")
    return root


def describe(row):
    return (row.kind, row.teacher, row.student, row.method, row.label)


@pytest.fixture
def recipes(tmp_path):
    """resnet32x4 -> resnet8x4 trained with two recipes (CRD SGD and the PLD paper's AdamW) and with DOT; seeds
    missing here and there, one failed run, a logit-standardised KD."""
    root = tmp_path / "recipes"
    w = lambda *a, **k: write_result(root, *a, **k)
    for seed, last in ((0, 72.0), (1, 73.0)):  # seed 2 missing
        w(f"sgd/ce-{seed}", method="ce", seed=seed, last=last, best=last + 0.5, recipe=SGD)
    for seed, last in ((0, 74.0), (1, 75.0), (2, 76.0)):
        w(f"sgd/kd-{seed}", seed=seed, last=last, best=last + 0.2, recipe=SGD)
    w("sgd/kd-ls-0", seed=0, last=76.5, best=76.9, recipe=SGD,
      hparams={"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0, "logit_stand": True})
    w("dot/kd-0", seed=0, last=75.5, best=75.6, recipe=DOT)
    for seed, last in ((0, 70.0), (2, 71.0)):  # seed 1 missing
        w(f"adamw/ce-{seed}", method="ce", seed=seed, last=last, best=last + 1.0, recipe=ADAMW)
    w("adamw/kd-0", seed=0, last=72.5, best=72.9, recipe=ADAMW)
    w("adamw/pld-0", method="pld", seed=0, last=74.0, best=74.4, recipe=ADAMW, hparams={"temperature": 4.0})
    w("adamw/pld-1", method="pld", seed=1, status="failed", recipe=ADAMW, hparams={"temperature": 4.0})
    w("adamw/pld-2", method="pld", seed=2, last=74.6, best=74.8, recipe=ADAMW, hparams={"temperature": 4.0})
    return root


DET_METRICS = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")
R101, R18 = "resnet101", "resnet18"


def write_detection_result(root, run_id, *, method="dkd", teacher=R101, student=R18, seed=0, last=None, best=None,
                           status="completed", teacher_ap=(42.0, 62.5, 45.9, 25.0, 45.6, 54.6), history=None):
    """One detection result.json, as kdbench's detection task writes it: ``last`` / ``best`` are the six COCO box
    AP numbers (AP, AP50, AP75, AP_S, AP_M, AP_L) of the final and of the best evaluation; ``history``: its
    per-evaluation entries (default: one)."""
    failed = status == "failed"
    config = {"dataset": {"name": "coco", "task": "detection"}, "method": {"name": method},
              "optim": {"name": "sgd", "lr": 0.01, "weight_decay": 1e-4, "schedule": "multistep"},
              "trainer": {"epochs": 240, "batch_size": 8, "iterations": 180000}}
    metrics = {"best_epoch": None if failed else 9}
    for kind, values in (("best", best), ("last", last)):
        metrics.update({f"{kind}_{m}": None if failed else v for m, v in zip(DET_METRICS, values or [None] * 6)})
    rec = {
        "schema": 1, "run_id": run_id, "status": status, "failure": "CUDA OOM" if failed else None,
        "started_at": "2026-12-06T10:00:00+00:00", "finished_at": "2026-12-06T20:00:00+00:00",
        "git": None, "config": config,
        "dataset": {"name": "coco", "num_classes": 80, "image_size": 800, "train_size": 117266, "test_size": 5000},
        "teacher": None if method == "ce" else {"name": teacher, "resolved": f"fasterrcnn_{teacher}_fpn",
                                                "checkpoint": "/t.pth", **dict(zip(DET_METRICS, teacher_ap))},
        "student": {"name": student, "resolved": f"fasterrcnn_{student}_fpn", "params": 1, "extra_params": 0},
        "method": {"name": method, "hparams": {"alpha": 1.0, "beta": 0.25, "temperature": 1.0} if method == "dkd" else {}},
        "seed": seed, "epochs": 240, "epochs_run": 2 if failed else 10,
        "metrics": metrics,
        "history": history if history is not None else [
            {"epoch": 1, "iteration": 20000, "lr": 0.01, "loss": 1.0, "losses": {},
             **dict(zip(DET_METRICS, (20.0, 40.0, 20.0, 10.0, 22.0, 27.0)))}],
        "wall_time_s": 36000.0, "images_per_s": 40.0, "device": "cuda", "precision": "bf16",
    }
    d = root / run_id
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(rec))


@pytest.fixture
def detection(tmp_path):
    """COCO, resnet101 -> resnet18: CE, DKD and PLD, two seeds each, one failed PLD run, and a teacher."""
    root = tmp_path / "detection"
    w = lambda *a, **k: write_detection_result(root, *a, **k)
    w("ce-0", method="ce", seed=0, last=(31.0, 51.0, 33.0, 17.0, 33.0, 40.0), best=(31.2, 51.2, 33.2, 17.2, 33.2, 40.2))
    w("ce-1", method="ce", seed=1, last=(31.4, 51.4, 33.4, 17.4, 33.4, 40.4), best=(31.6, 51.6, 33.6, 17.6, 33.6, 40.6))
    w("dkd-0", seed=0, last=(32.0, 53.0, 34.0, 18.0, 34.0, 41.0), best=(32.1, 53.1, 34.1, 18.1, 34.1, 41.1))
    w("dkd-1", seed=1, last=(32.2, 53.2, 34.2, 18.2, 34.2, 41.2), best=(32.3, 53.3, 34.3, 18.3, 34.3, 41.3))
    w("pld-0", method="pld", seed=0, last=(32.4, 53.6, 34.0, 18.4, 34.8, 42.0), best=(32.5, 53.7, 34.1, 18.5, 34.9, 42.1))
    w("pld-1", method="pld", seed=1, last=(32.6, 53.8, 34.4, 18.6, 35.0, 42.2), best=(32.7, 53.9, 34.5, 18.7, 35.1, 42.3))
    w("pld-2", method="pld", seed=2, status="failed")
    return root


def epoch_history(epochs, top1, loss=2.0, *, detection=False, every=1000):
    """A history of ``epochs`` entries climbing linearly to ``top1`` (AP with ``detection``, evaluated every
    ``every`` iterations) while the loss falls from ``loss``."""
    out = []
    for e in range(1, epochs + 1):
        score, value = top1 * e / epochs, loss / e
        entry = {"epoch": e, "lr": 0.05, "loss": value, "losses": {"ce": value / 2, "kd": value / 2}}
        if detection:
            entry.update({"iteration": e * every, **{m: score for m in DET_METRICS}})
        else:
            entry.update({"top1": score, "top5": min(100.0, score + 15), "images_per_s": 5000.0})
        out.append(entry)
    return out
