"""kdbench-table: finding result.json files, aggregating them, and the markdown/csv/CLI outputs."""
import csv
import json
import logging
import math

import pytest

from kdbench.results.aggregate import aggregate, find_results
from kdbench.results.table import main, render_rich, to_csv, to_markdown

R32, R8, MV2, W40 = "resnet32x4", "resnet8x4", "mobilenetv2", "wrn_40_2"


def write_result(root, run_id, *, method="kd", teacher=R32, student=R8, seed=0, last=None, best=None,
                 top5=90.0, teacher_top1=79.42, hparams=None, status="completed", dataset="cifar100"):
    if hparams is None:
        hparams = {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9} if method == "kd" else {}
    failed = status == "failed"
    rec = {
        "schema": 1, "run_id": run_id, "status": status, "failure": "CUDA OOM" if failed else None,
        "started_at": "2026-11-27T10:15:00+00:00", "finished_at": "2026-11-27T11:15:00+00:00",
        "git": None, "config": {"method": {"name": method}},
        "dataset": {"name": dataset, "num_classes": 100, "train_size": 50000, "test_size": 10000},
        "teacher": None if method == "ce" else {"name": teacher, "resolved": f"cifar_{teacher}",
                                                "checkpoint": "/t.pth", "top1": teacher_top1, "top5": 94.1},
        "student": {"name": student, "resolved": f"cifar_{student}", "params": 1, "extra_params": 0},
        "method": {"name": method, "hparams": hparams},
        "seed": seed, "epochs": 240, "epochs_run": 3 if failed else 240,
        "metrics": {"best_top1": None if failed else best, "best_top5": None, "best_epoch": None,
                    "last_top1": None if failed else last, "last_top5": None if failed else top5},
        "history": [{"epoch": 1, "lr": 0.05, "loss": 2.3, "losses": {}, "top1": 30.0, "top5": 60.0,
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


def test_find_results_skips_bad_files_with_a_warning(runs, caplog):
    with caplog.at_level(logging.WARNING):
        records = find_results([runs, runs / "ce-0" / "result.json"])  # second path: same file, read once
    assert len(records) == 15
    warned = caplog.text
    assert str(runs / "foreign" / "result.json") in warned and str(runs / "broken" / "result.json") in warned
    assert len(caplog.records) == 2


def test_aggregate_groups_and_orders(runs):
    rows = aggregate(find_results([runs]))
    assert [describe(r) for r in rows] == [
        ("teacher", R32, None, None, ""),
        ("ce", None, MV2, "ce", ""),
        ("method", R32, MV2, "kd", ""),
        ("ce", None, R8, "ce", ""),
        ("method", R32, R8, "dkd", ""),
        ("method", R32, R8, "kd", "temperature=2"),
        ("method", R32, R8, "kd", "temperature=4"),
        ("method", R32, R8, "kd", "temperature=16"),
        ("teacher", W40, None, None, ""),
        ("ce", None, R8, "ce", ""),  # the baseline is repeated in each teacher block
        ("method", W40, R8, "kd", ""),
    ]


def test_aggregate_numbers(runs):
    rows = {describe(r): r for r in aggregate(find_results([runs]))}
    approx = lambda x: pytest.approx(x, abs=1e-9)

    ce = rows[("ce", None, R8, "ce", "")]
    assert (ce.n, ce.n_failed, ce.seeds) == (3, 0, (0, 1, 2))
    assert (ce.last_top1, ce.last_top1_std) == (approx(72.5), approx(0.5))
    assert (ce.best_top1, ce.best_top1_std) == (approx(72.9), approx(0.5))
    assert ce.delta_last is None and ce.delta_best is None

    kd = rows[("method", R32, R8, "kd", "temperature=4")]
    assert (kd.n, kd.n_failed, kd.seeds, kd.hparams) == (3, 0, (0, 1, 2), {"temperature": 4.0})
    assert (kd.last_top1, kd.last_top1_std) == (approx(74.6), approx(0.6))
    assert (kd.best_top1, kd.best_top1_std) == (approx(75.0), approx(0.5))
    assert kd.last_top5 == approx(93.0)
    assert (kd.delta_last, kd.delta_best) == (approx(2.1), approx(2.1))

    dkd = rows[("method", R32, R8, "dkd", "")]
    assert (dkd.n, dkd.n_failed, dkd.seeds) == (2, 1, (0, 2))
    assert (dkd.last_top1, dkd.last_top1_std) == (approx(75.5), approx(math.sqrt(0.5)))
    assert (dkd.best_top1, dkd.best_top1_std) == (approx(76.0), approx(math.sqrt(0.5)))
    assert (dkd.delta_last, dkd.delta_best) == (approx(3.0), approx(3.1))

    t2 = rows[("method", R32, R8, "kd", "temperature=2")]
    assert (t2.n, t2.last_top1, t2.last_top1_std, t2.best_top1_std) == (1, approx(73.0), None, None)
    assert (t2.delta_last, t2.delta_best) == (approx(0.5), approx(0.6))

    mv2 = rows[("method", R32, MV2, "kd", "")]  # baseline matched on dataset + student
    assert (mv2.delta_last, mv2.delta_best) == (approx(2.0), approx(1.5))

    w40 = rows[("method", W40, R8, "kd", "")]
    assert (w40.last_top1, w40.last_top1_std, w40.delta_last) == (approx(73.5), approx(math.sqrt(0.5)), approx(1.0))

    assert rows[("teacher", R32, None, None, "")].last_top1 == approx(79.42)
    teacher = rows[("teacher", W40, None, None, "")]
    assert teacher.last_top1 == teacher.best_top1 == approx(75.7)


def test_method_filter_keeps_context_rows(runs):
    rows = aggregate(find_results([runs]), methods=["dkd"])
    assert [describe(r) for r in rows] == [("teacher", R32, None, None, ""), ("ce", None, R8, "ce", ""),
                                           ("method", R32, R8, "dkd", "")]
    assert [r.kind for r in aggregate(find_results([runs]), methods=["ce"])] == ["ce", "ce"]


def test_markdown_and_rich(runs):
    rows = aggregate(find_results([runs]))
    md = to_markdown(rows).splitlines()
    assert md[0] == ("| Dataset | Teacher | Student | Method | n | Last top-1 (mean ± std) | Δ last vs CE "
                     "| Best top-1 (mean ± std) | Δ best vs CE | Top-5 (last, mean) | failed |")
    assert md[1] == "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    assert len(md) == 2 + len(rows)
    assert "| cifar100 | resnet32x4 | resnet8x4 | dkd | 2 | 75.50 ± 0.71 | +3.00 | 76.00 ± 0.71 | +3.10 | 90.00 | 1 |" in md
    assert "| cifar100 | resnet32x4 | resnet8x4 | kd (temperature=2) | 1 | 73.00 | +0.50 | 73.50 | +0.60 | 90.00 | 0 |" in md
    assert "| cifar100 | resnet32x4 | — | teacher |  | 79.42 |  | 79.42 |  | 94.10 |  |" in md
    last_only = to_markdown(rows, metric="last").splitlines()[0]
    assert "Last top-1" in last_only and "Best top-1" not in last_only
    assert render_rich(rows, metric="best").row_count == len(rows)


def test_csv(runs, tmp_path):
    rows = aggregate(find_results([runs]))
    to_csv(rows, tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows)
    dkd = next(r for r in table if r["method"] == "dkd")
    assert dkd["n"] == "2" and dkd["n_failed"] == "1" and dkd["seeds"] == "0 2"
    assert float(dkd["last_top1_mean"]) == 75.5 and float(dkd["last_top1_std"]) == 0.7071
    assert float(dkd["delta_best_top1"]) == 3.1
    t2 = next(r for r in table if r["hparams"] == "temperature=2")
    assert t2["last_top1_std"] == "" and t2["best_top1_std"] == ""


def test_cli_writes_files(runs, tmp_path, capsys):
    out = tmp_path / "board"
    assert main([str(runs), "--out", str(out), "--metric", "last"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.csv", "leaderboard.md"]  # no temp files left
    assert "Best top-1" not in (out / "leaderboard.md").read_text()
    assert "dkd" in capsys.readouterr().out
    assert main([str(runs), "--dataset", "cifar100", "--method", "kd"]) == 0  # default --out: first PATH
    assert "dkd" not in (runs / "leaderboard.md").read_text()


def test_cli_no_results(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(empty) in err
    assert not list(empty.iterdir())
