"""kdbench-table: finding result.json files, aggregating them (settings, baselines, failed runs, published
numbers), and every output: console, markdown, CSV, LaTeX, PNG, the paper layout, W&B offline, bad input."""
import csv
import json
import logging
import math

import pytest

from conftest import run_cli
from kdbench.results import reference as ref
from kdbench.results.aggregate import aggregate, failed_runs, find_results, with_published
from kdbench.results.table import main, reference_layout, render_rich, to_csv, to_latex, to_markdown

R32, R8, MV2, W40 = "resnet32x4", "resnet8x4", "mobilenetv2", "wrn_40_2"


def write_result(root, run_id, *, method="kd", teacher=R32, student=R8, seed=0, last=None, best=None,
                 top5=90.0, teacher_top1=79.42, hparams=None, status="completed", dataset="cifar100", recipe=None):
    """One result.json; ``recipe`` = (optim name, lr, epochs, batch size) puts those into the resolved config."""
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


# ----------------------------------------------------------------------------- settings, baselines, failures
SGD, ADAMW, DOT = ("sgd", 0.05, 240, 64), ("adamw", 0.001, 250, 128), ("dot", 0.05, 240, 64)


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


def test_mixed_recipes_group_apart_with_their_own_baseline(recipes):
    rows = {describe(r): r for r in aggregate(find_results([recipes]))}
    adamw = "optim.name=adamw, optim.lr=0.001, trainer.epochs=250, trainer.batch_size=128"
    sgd = "optim.name=sgd, optim.lr=0.05, trainer.epochs=240, trainer.batch_size=64"
    ce_sgd, ce_adamw = rows[("ce", None, R8, "ce", sgd)], rows[("ce", None, R8, "ce", adamw)]
    assert (ce_sgd.n, ce_sgd.seeds, ce_sgd.last_top1) == (2, (0, 1), pytest.approx(72.5))
    assert (ce_adamw.n, ce_adamw.seeds, ce_adamw.last_top1) == (2, (0, 2), pytest.approx(70.5))
    # KD: three settings (method hyper-parameters first, then the recipe); each compared with the CE run of its
    # own recipe, DOT with the SGD one
    kd = {r.label: r for r in rows.values() if r.method == "kd"}
    assert len(kd) == 4  # CRD recipe, the same with logit standardisation, DOT, AdamW
    plain = kd["kd_weight=0.9, logit_stand=null, temperature=4, " + sgd]
    assert (plain.n, plain.last_top1, plain.delta_last) == (3, pytest.approx(75.0), pytest.approx(2.5))
    assert plain.recipe == {"optim.name": "sgd", "optim.lr": 0.05, "optim.weight_decay": 5e-4,
                            "optim.schedule": "multistep", "trainer.epochs": 240, "trainer.batch_size": 64}
    on_adamw = next(r for label, r in kd.items() if "optim.name=adamw" in label)
    assert on_adamw.delta_last == pytest.approx(72.5 - 70.5) and on_adamw.delta_best == pytest.approx(72.9 - 71.5)
    on_dot = next(r for label, r in kd.items() if "optim.name=dot" in label)
    assert on_dot.delta_last == pytest.approx(75.5 - 72.5)
    # the failed PLD run is counted, never averaged
    pld = next(r for r in rows.values() if r.method == "pld")
    assert (pld.n, pld.n_failed, pld.seeds, pld.last_top1) == (2, 1, (0, 2), pytest.approx(74.3))
    assert pld.delta_last == pytest.approx(74.3 - 70.5)
    failed = failed_runs(find_results([recipes]))
    assert [(f["method"], f["seed"], f["failure"]) for f in failed] == [("pld", 1, "CUDA OOM")]
    assert failed[0]["path"].endswith("adamw/pld-1") and failed_runs(find_results([recipes]), methods=["kd"]) == []


def test_published_numbers_follow_the_recipe(recipes):
    rows = with_published(aggregate(find_results([recipes])))
    by = lambda method, key: next(r for r in rows if r.method == method and key in r.label)
    crd_kd = next(r for r in rows if r.method == "kd" and r.method_hparams.get("logit_stand") is None
                  and r.recipe.get("optim.name") == "sgd")
    assert (crd_kd.published.table, crd_kd.published.top1) == ("crd", 73.33)
    assert crd_kd.delta_last_pub == pytest.approx(75.0 - 73.33) and crd_kd.delta_best_pub == pytest.approx(75.2 - 73.33)
    assert (by("kd", "optim.name=dot").published.table, by("kd", "optim.name=dot").published.top1) == ("dot", 75.12)
    ls = next(r for r in rows if r.method_hparams.get("logit_stand") is True)
    assert (ls.published.table, ls.published.top1) == ("logit-standardization", 76.62)
    # the PLD paper's recipe finds the PLD paper's Table 1 (mean of 3 runs), the CE of that recipe too
    pld = next(r for r in rows if r.method == "pld")
    assert (pld.published.table, pld.published.top1, pld.published.runs) == ("pld-cifar100", 73.97, 3)
    ce_adamw = next(r for r in rows if r.kind == "ce" and r.recipe.get("optim.name") == "adamw")
    assert ce_adamw.published.top1 == 71.56
    teacher = next(r for r in rows if r.kind == "teacher")
    assert teacher.published.top1 == 79.42 and teacher.delta_last_pub == pytest.approx(0.0)


def test_published_delta_uses_the_epoch_kind_the_source_states(runs):
    cells = [ref.Cell(table="t", dataset="cifar100", teacher=R32, student=R8, method=m, top1=v, spread=None, kind=k,
                      runs=5, recipe="crd_cifar", source="a paper, Table 1", as_written="", note="")
             for m, v, k in (("kd", 74.0, "best"), ("dkd", 75.0, "last"))]
    table = ref.Reference(name="t", file="", title="", citation="", url="", cells=tuple(cells))
    rows = {r.method: r for r in with_published(aggregate(find_results([runs])), [table]) if r.kind == "method"
            and r.teacher == R32 and r.student == R8 and r.label in ("", "temperature=4")}
    assert rows["kd"].delta_best_pub == pytest.approx(75.0 - 74.0) and rows["kd"].delta_last_pub is None
    assert rows["dkd"].delta_last_pub == pytest.approx(75.5 - 75.0) and rows["dkd"].delta_best_pub is None
    md = to_markdown(list(rows.values()))
    assert "74.00 [t, best]" in md and "75.00 [t, last]" in md and "Δ best vs published" in md


# ----------------------------------------------------------------------------- outputs
def test_every_format_is_written(runs, tmp_path, capsys):
    out = tmp_path / "board"
    assert main([str(runs), "--out", str(out), "--format", "md", "csv", "tex", "png"]) == 0
    files = {p.name: p for p in out.iterdir()}
    assert sorted(files) == ["leaderboard.csv", "leaderboard.md", "leaderboard.png", "leaderboard.tex"]
    assert all(p.stat().st_size > 0 for p in files.values())
    assert files["leaderboard.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files["leaderboard.md"].read_text()
    assert md.splitlines()[0].endswith("| Published [table] | Δ last vs published | Δ best vs published |")
    assert "| 74.60 ± 0.60 | +2.10 | 75.00 ± 0.50 | +2.10 | 93.00 | 0 | 73.33 [crd] | +1.27 | +1.67 |" in md
    assert "[crd] Tian, Krishnan & Isola" in md and "HobbitLong/RepDistiller@b84f547" in md
    assert "Failed runs (1, listed and counted, never averaged)" in md and "dkd seed 1: CUDA OOM" in md
    tex = files["leaderboard.tex"].read_text()
    assert "\\begin{tabular}{llll" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "74.60 $\\pm$ 0.60" in tex and "wrn\\_40\\_2" in tex and "$\\Delta$ last vs CE" in tex
    with open(files["leaderboard.csv"], newline="") as fh:
        table = list(csv.DictReader(fh))
    kd = next(r for r in table if r["method"] == "kd" and r["hparams"] == "temperature=4")
    assert (kd["published_top1"], kd["published_kind"], float(kd["delta_last_published"])) == ("73.33", "unstated", 1.27)
    assert "dkd seed 1" in capsys.readouterr().out


def test_latex_escapes_and_sections(runs):
    tex = to_latex(aggregate(find_results([runs])))
    body = tex.split("\\midrule", 1)[1]
    assert body.count("\\midrule") == 1  # a rule between the two teacher blocks
    assert "&" not in tex.split("\\begin{tabular}")[0]


def test_reference_layout_like_the_paper(runs, tmp_path):
    out = tmp_path / "paper"
    assert main([str(runs), "--out", str(out), "--reference", "crd", "--format", "md", "csv", "tex", "png"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard-crd.csv", "leaderboard-crd.md",
                                                      "leaderboard-crd.png", "leaderboard-crd.tex"]
    lines = (out / "leaderboard-crd.md").read_text().splitlines()
    header = lines[0].split(" | ")
    assert len(header) == 1 + 13 * 3 and header[1] == "wrn_40_2 → wrn_16_2: ours last"
    col = header.index("resnet32x4 → resnet8x4: ours last")
    assert header[col + 1:col + 3] == ["resnet32x4 → resnet8x4: ours best", "resnet32x4 → resnet8x4: published"]
    body = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[2:] if line.startswith("| ")}
    # the paper's rows in its order, ours beside: teacher, CE, the 13 methods, then methods the table lacks
    assert list(body)[:3] == ["teacher", "ce", "kd (temperature=2)"] and list(body)[-1] == "dkd"
    assert "crd" in body and body["fsp"][header.index("wrn_40_2 → wrn_40_1: published")] == ""
    kd4 = body["kd (temperature=4)"]
    assert kd4[col:col + 3] == ["74.60 ± 0.60 (n=3)", "75.00 ± 0.50", "73.33"]
    assert body["kd (temperature=2)"][col + 2] == "73.33" and body["teacher"][col:col + 3] == ["79.42", "79.42", "79.42"]
    assert body["dkd"][col:col + 3] == ["75.50 ± 0.71 (n=2)", "76.00 ± 0.71", ""]
    with open(out / "leaderboard-crd.csv", newline="") as fh:
        records = list(csv.DictReader(fh))
    crd = [r for r in records if r["method"] == "crd"]
    assert len(crd) == 13 and all(r["n"] == "" and r["published_source"].startswith("[crd] HobbitLong") for r in crd)
    mine = next(r for r in records if r["method"] == "kd" and r["variant"] == "temperature=4" and r["student"] == R8)
    assert (mine["n"], mine["last_top1_mean"], mine["published_top1"]) == ("3", "74.6", "73.33")
    assert (out / "leaderboard-crd.png").stat().st_size > 0


def test_reference_layout_of_a_dataset_shows_the_pairs_we_ran(recipes):
    rows = with_published(aggregate(find_results([recipes])))
    layout = reference_layout(rows, "cifar100", metric="last")
    assert layout.pairs == [("cifar100", R32, R8)]
    assert layout.grid.headers == ["Method", "resnet32x4 → resnet8x4: ours last", "resnet32x4 → resnet8x4: published"]
    cells = {line[0]: line[1:] for line in layout.grid.body}
    assert list(cells) == ["teacher", "ce", "kd", "kd+dot", "kd+ls"]
    assert cells["kd"] == ["75.00 ± 1.00 (n=3)", "73.33 [crd]"] and cells["kd+dot"] == ["75.50", "75.12 [dot]"]
    assert cells["kd+ls"] == ["76.50", "76.62 [logit-standardization]"]
    assert (layout.hidden, layout.shown) == (3, 4)  # the AdamW runs (CE, KD, PLD): not this dataset's recipes
    pld = reference_layout(rows, "pld-cifar100", metric="both")
    pld_cells = {line[0]: line for line in pld.grid.body}
    col = pld.grid.headers.index("resnet32x4 → resnet8x4: ours last")
    assert pld_cells["pld"][col:col + 3] == ["74.30 ± 0.42 (n=2)", "74.60 ± 0.28", "73.97 ± 0.05"]
    assert pld_cells["ce"][col + 2] == "71.56 ± 0.16"


def test_filters(runs, tmp_path):
    out = tmp_path / "f"
    assert main([str(runs), "--out", str(out), "--pair", "res32x4_res8x4", "--method", "kd"]) == 0
    text = (out / "leaderboard.md").read_text()
    assert "wrn_40_2" not in text and "mobilenetv2" not in text and "| kd (temperature=16) |" in text
    assert main([str(runs), "--out", str(out), "--pair", "wrn_40_2:resnet8x4"]) == 0
    text = (out / "leaderboard.md").read_text()
    assert "| cifar100 | wrn_40_2 | resnet8x4 | kd |" in text and "resnet32x4" not in text.split("\n- ")[0]
    assert main([str(runs), "--out", str(out), "--dataset", "imagenet"]) == 2


def test_wandb_offline_upload(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "wb"
    assert main([str(runs), "--out", str(out), "--format", "png", "--wandb", "--wandb-mode", "offline"]) == 0
    run_dirs = list((out / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1 and list(run_dirs[0].glob("*.wandb"))


@pytest.mark.parametrize("args, message", [
    (["--reference", "nope"], "unknown reference 'nope'; valid: crd, dkd, dot"),
    (["--pair", "resnet32x4"], "unknown pair 'resnet32x4'"),
    (["--format", "xls"], "argument --format: invalid choice: 'xls'"),
    (["--metric", "median"], "argument --metric: invalid choice: 'median'"),
    (["--reference", "pld-cifar100"], "none of the results is a pair of reference 'pld-cifar100'"),
])
def test_bad_input_is_one_line_exit_2(runs, tmp_path, capsys, args, message):
    (tmp_path / "only").mkdir()
    write_result(tmp_path / "only", "r", method="kd", teacher="vgg13", student="vgg8", last=70.0, best=70.1)
    assert main([str(tmp_path / "only"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdbench-table: error: ") and message in err, err
    assert main([]) == 2 and "no PATH given" in capsys.readouterr().err


def test_list_references_and_the_installed_script(tmp_path, env):
    out = run_cli(["--list-references"], tmp_path, env, script="kdbench-table")
    assert out.returncode == 0 and "pld-cifar100" in out.stdout and "RepDistiller" in out.stdout
    bad = run_cli([str(tmp_path), "--reference", "nope"], tmp_path, env, script="kdbench-table")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown reference 'nope'" in bad.stderr
