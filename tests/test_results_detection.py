"""kdbench-table on detection runs: one table per task, the task's metrics as columns (AP, AP50, ... last and best,
mean ± std), Δ vs CE on AP, every format, the sweep callback, PLD's COCO table beside ours, and whole tables when
the output is not a terminal."""
import csv
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from kdbench.results import reference as ref
from kdbench.results.aggregate import aggregate, by_task, find_results
from kdbench.results.callbacks import LeaderboardCallback
from kdbench.results.table import main
from kdbench.results.tasks import KNOWN, task_metrics
from results_runs import R8, R18, R101, detection, runs, write_result  # noqa: F401 (fixtures)


def test_mirror_equals_the_tasks():
    from kdbench.tasks import TASKS

    assert set(KNOWN) == set(TASKS)
    for name, task in TASKS.items():
        assert task_metrics(name).metrics == tuple((m.name, m.label) for m in task.metrics)


def test_rows_carry_every_metric(detection):
    rows = aggregate(find_results([detection]))
    assert [(r.kind, r.method, r.task) for r in rows] == [("teacher", None, "detection"), ("ce", "ce", "detection"),
                                                          ("method", "dkd", "detection"), ("method", "pld", "detection")]
    teacher, ce, dkd, pld = rows
    assert teacher.value("last", "ap50") == (62.5, None) and teacher.value("best") == (42.0, None)
    assert dkd.value("last") == (pytest.approx(32.1), pytest.approx(0.1414, abs=1e-4))
    assert dkd.value("best", "ap_l")[0] == pytest.approx(41.2)
    assert (dkd.delta_last, dkd.delta_best) == (pytest.approx(0.9), pytest.approx(0.8))  # on AP
    assert (pld.n, pld.n_failed, pld.seeds) == (2, 1, (0, 1)) and dkd.last_top1 is None


def test_every_format_and_tasks_never_mix(detection, tmp_path):
    write_result(detection, "cifar/kd-0", last=74.0, best=74.5)  # a classification run in the same tree
    out = tmp_path / "board"
    assert main([str(detection), "--out", str(out), "--format", "md", "csv", "tex", "png"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"leaderboard{t}.{e}" for t in ("", "-detection") for e in ("md", "csv", "tex", "png"))
    md = (out / "leaderboard-detection.md").read_text()
    head = md.splitlines()[0]
    for kind in ("Last", "Best"):
        for label in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L"):
            assert f"| {kind} {label} (mean ± std) |" in head
    assert "top-1" not in md and "cifar100" not in md and "Δ last vs CE" in head
    assert "| coco | resnet101 | resnet18 | dkd | 2 | 32.10 ± 0.14 | +0.90 | 53.10 ± 0.14 |" in md
    assert "| coco | resnet101 | — | teacher |  | 42.00 |  | 62.50 | 45.90 | 25.00 | 45.60 | 54.60 | 42.00 |" in md
    assert "pld seed 2: CUDA OOM" in md
    cls = (out / "leaderboard.md").read_text()
    assert "Last top-1 (mean ± std)" in cls and "coco" not in cls and "AP50" not in cls
    with open(out / "leaderboard-detection.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    dkd = next(r for r in table if r["method"] == "dkd")
    assert (dkd["last_ap50_mean"], dkd["best_ap_l_mean"], dkd["delta_last_ap"], dkd["published_ap"]) == \
        ("53.1", "41.2", "0.9", "32.11")
    tex = (out / "leaderboard-detection.tex").read_text()
    assert "Last AP\\_S (mean $\\pm$ std)" in tex and "\\bottomrule" in tex
    assert (out / "leaderboard-detection.png").read_bytes()[:4] == b"\x89PNG"


def test_reference_pld_coco_beside_ours(detection, tmp_path):
    out = tmp_path / "paper"
    assert main([str(detection), "--out", str(out), "--reference", "pld-coco", "--format", "md", "csv", "png"]) == 0
    lines = (out / "leaderboard-pld-coco.md").read_text().splitlines()
    header = lines[0].split(" | ")
    col = header.index("resnet101 → resnet18: AP50: ours last")
    assert header[col + 1:col + 3] == ["resnet101 → resnet18: AP50: ours best", "resnet101 → resnet18: AP50: published"]
    body = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[2:] if line.startswith("| ")}
    assert list(body)[:4] == ["teacher", "ce", "dkd", "pld"]
    assert body["pld"][col:col + 3] == ["53.70 ± 0.14", "53.80 ± 0.14", "53.83"]  # PLD Table 7, R101 -> R18-FPN, AP50
    assert body["dkd"][header.index("resnet50 → MobileNetV2: AP: published")] == "29.24"
    text = "\n".join(lines)
    assert "Table 7" in text and "arXiv:2506.12542" in text
    with open(out / "leaderboard-pld-coco.csv", newline="") as fh:
        records = list(csv.DictReader(fh))
    ap75 = next(r for r in records if (r["method"], r["student"], r["metric"]) == ("dkd", R18, "ap75"))
    assert (ap75["n"], ap75["last_mean"], ap75["published"]) == ("2", "34.1", "33.9")
    assert main([str(detection), "--reference", "coco"]) == 2  # never combined with another paper's COCO rows


def test_pld_coco_table_and_its_provenance():
    table = ref.get_reference("pld-coco")
    assert (table.task, table.combine, table.metrics) == ("detection", False, ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l"))
    assert table.pairs == [("coco", "resnet50", "MobileNetV2"), ("coco", R101, R18), ("coco", R101, "resnet50")]
    assert len(table.cells) == 36 and table.methods == ["dkd", "pld"]
    assert all("Table 7" in c.source and c.kind == "unstated" and c.recipe == "pld_coco" for c in table.cells)
    # "| ResNet-101 → ResNet-50-FPN  | PLD      | 36.6  |   58.28 |   39.58 |  21.37 |  39.76 |  47.24 |"
    assert [c.value for c in ref.lookup("coco", R101, "resnet50", "pld")] == [36.6, 58.28, 39.58, 21.37, 39.76, 47.24]
    assert ref.lookup("coco", R101, R18, "dkd", metric="ap_s")[0].value == 18.46
    assert {tuple(ref.PAIRS[n]) for n in ("r101_r18", "r101_r50", "r50_mv2")} == set(table.pairs)


def test_sweep_callback_per_task(detection, capsys):
    LeaderboardCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(detection)}}}))
    assert "Last AP50 (mean ± std)" in (detection / "leaderboard-detection.md").read_text()
    assert (detection / "leaderboard-detection.csv").read_text().startswith("dataset,teacher,student,method,")
    assert not (detection / "leaderboard.md").exists()
    assert "kdbench leaderboard: detection" in capsys.readouterr().out


def test_tables_whole_through_a_pipe(runs, detection, tmp_path):
    """Not a terminal (a pipe, a SLURM log): no cell is cut to "…"."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    printed = ""
    for args in ([str(runs), str(detection), "--format", "md"], [str(detection), "--reference", "pld-coco", "--format", "md"]):
        cmd = [sys.executable, "-c", "import sys; from kdbench.results.table import main; sys.exit(main())", *args,
               "--out", str(tmp_path)]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "…" not in out.stdout
        printed += out.stdout
    assert "Last AP_L (mean ± std)" in printed and "L 32.10 ± 0.14 (n=2)" in printed
    run = subprocess.run([sys.executable, "-c", "import sys; from kdbench.results.table import main; sys.exit(main())",
                          str(runs), "--out", str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env, timeout=120)
    for text in ("resnet32x4", "Last top-1 (mean ± std)", "kd (temperature=16)", "Published [table]", "73.33 [crd]"):
        assert text in run.stdout


def test_rows_of_two_tasks_are_never_one_table(runs, detection):
    from kdbench.results.layout import rows_grid

    rows = aggregate(find_results([runs, detection]))
    assert list(by_task(rows)) == ["classification", "detection"]
    with pytest.raises(ValueError, match="several tasks"):
        rows_grid(rows, "both", False)
