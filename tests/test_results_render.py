"""kdbench.results.render: the default layout as markdown, rich, CSV and LaTeX."""
import csv

from kdbench.results.aggregate import aggregate, find_results
from kdbench.results.render import render_rich, to_csv, to_latex, to_markdown
from results_runs import runs  # noqa: F401 (fixture)


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


def test_latex_escapes_and_sections(runs):
    tex = to_latex(aggregate(find_results([runs])))
    body = tex.split("\\midrule", 1)[1]
    assert body.count("\\midrule") == 1  # a rule between the two teacher blocks
    assert "&" not in tex.split("\\begin{tabular}")[0]
