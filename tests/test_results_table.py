"""kdbench-table, the command line: files written in every format and layout, filters, W&B offline, bad
input as one line with exit code 2, the installed script."""
import csv
import os

import pytest

from conftest import run_cli
from kdbench.results.table import main
from results_runs import R8, runs, write_result  # noqa: F401 (fixture)


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


def test_every_format_is_written(runs, tmp_path, capsys):
    out = tmp_path / "board"
    assert main([str(runs), "--out", str(out), "--format", "md", "csv", "tex", "png"]) == 0
    files = {p.name: p for p in out.iterdir()}
    assert sorted(files) == ["leaderboard.csv", "leaderboard.md", "leaderboard.png", "leaderboard.tex"]
    assert all(p.stat().st_size > 0 for p in files.values())
    mask = os.umask(0)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in files.values()} == {0o666 & ~mask}  # as a plainly created file
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
