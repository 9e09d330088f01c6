"""kdbench-table --search-scores (kdbench/results/search_scores.py): Spearman's rank correlation between a
kdbench-search ranking and the trained accuracy of the searched students, per setting."""

from __future__ import annotations

import csv

import pytest

from kdbench.results.aggregate import aggregate, find_results
from kdbench.results.search_scores import correlations, ranks, read_scores, spearman
from kdbench.results.table import main
from results_runs import write_result

R32 = "resnet32x4"


# --------------------------------------------------------------------------- the statistic
def test_ranks_average_ties():
    assert ranks([10.0, 30.0, 20.0]) == [1.0, 3.0, 2.0]
    assert ranks([5.0, 7.0, 7.0, 1.0]) == [2.0, 3.5, 3.5, 1.0]


def test_spearman_hand_worked():
    # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); d = (0, 0, -2, 1, 1) -> 1 - 6 * 6 / 120 = 0.7
    assert spearman([1, 2, 3, 4, 5], [1, 2, 5, 3, 4]) == pytest.approx(0.7, rel=1e-12)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([0.1, 0.2], [5.0, 6.0]) == pytest.approx(1.0)
    # ties: Pearson's r of the ranks x (1, 2, 3, 4), y (1, 2.5, 2.5, 4): sxy = 4.5, sxx = 5, syy = 4.5 -> 0.9487
    assert spearman([1, 2, 3, 4], [10, 20, 20, 40]) == pytest.approx(4.5 / (5 * 4.5) ** 0.5, rel=1e-12)
    assert spearman([1], [2]) is None and spearman([1, 2, 3], [4, 4, 4]) is None
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_spearman_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = [0.3, -1.2, 0.3, 2.5, 0.0, -0.7, 1.1, 1.1, 0.4]
    y = [71.2, 70.1, 73.0, 75.5, 70.1, 69.0, 74.2, 72.8, 73.0]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)


# --------------------------------------------------------------------------- runs against a ranking
def _ranking(path, scores, dataset="cifar100", teacher=R32):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "candidate", "score", "relation", "semantic", "dataset", "teacher"])
        for i, (name, score) in enumerate(sorted(scores.items(), key=lambda s: -s[1]), start=1):
            writer.writerow([i, name, score, 0.0, -score, dataset, teacher])
    return path


@pytest.fixture
def searched(tmp_path):
    """KD from resnet32x4 into four students (two seeds each), CE for three of them, DKD for two, and KD from
    another teacher (not the ranking's)."""
    root = tmp_path / "runs"
    kd = {"resnet8": (70.0, 70.4), "resnet14": (72.0, 72.2), "wrn_16_2": (74.0, 74.6), "resnet8x4": (75.0, 74.5)}
    for student, (last, best) in kd.items():
        for seed in (0, 1):
            write_result(root, f"kd-{student}-{seed}", student=student, seed=seed, last=last + seed, best=best + seed)
    for student, (last, best) in {"resnet8": (68.0, 68.5), "resnet14": (67.0, 69.0), "resnet8x4": (72.0, 72.5)}.items():
        write_result(root, f"ce-{student}", method="ce", student=student, last=last, best=best)
    write_result(root, "dkd-resnet8", method="dkd", student="resnet8", last=71.0, best=71.0)
    write_result(root, "dkd-resnet14", method="dkd", student="resnet14", last=73.0, best=73.0)
    write_result(root, "w40-resnet8", teacher="wrn_40_2", student="resnet8", last=60.0, best=60.0)
    write_result(root, "w40-resnet14", teacher="wrn_40_2", student="resnet14", last=50.0, best=50.0)
    ranking = _ranking(tmp_path / "ranking.csv", {"resnet8": -0.30, "resnet14": -0.20, "wrn_16_2": -0.10,
                                                  "resnet8x4": -0.05, "vgg8": -0.01})
    return root, ranking


def test_correlations_per_setting(searched):
    root, ranking = searched
    found = {(c.method, c.teacher): c for c in correlations(aggregate(find_results([root])), [read_scores(ranking)])}
    assert set(found) == {("kd", R32), ("dkd", R32), ("ce", None)}  # wrn_40_2's KD runs are not this ranking's
    kd = found[("kd", R32)]
    assert kd.n == 4 and kd.students == ("resnet8x4", "wrn_16_2", "resnet14", "resnet8")
    assert kd.spearman_last == pytest.approx(1.0)  # last: 70.5 < 72.5 < 74.5 < 75.5, scores in the same order
    # best: 70.9, 72.7, 75.1, 75.0 -> ranks (1, 2, 4, 3) against (1, 2, 3, 4): 1 - 6 * 2 / 60 = 0.8
    assert kd.spearman_best == pytest.approx(0.8)
    ce = found[("ce", None)]
    # last: 68, 67, 72 against scores -0.30, -0.20, -0.05 -> ranks (2, 1, 3) vs (1, 2, 3): 1 - 6 * 2 / 24 = 0.5
    assert ce.n == 3 and ce.spearman_last == pytest.approx(0.5) and ce.spearman_best == pytest.approx(1.0)
    assert found[("dkd", R32)].n == 2 and found[("dkd", R32)].spearman_last == pytest.approx(1.0)


def test_cli_reports_and_writes(searched, tmp_path, capsys):
    root, ranking = searched
    out = tmp_path / "board"
    assert main([str(root), "--out", str(out), "--search-scores", str(ranking)]) == 0
    printed = capsys.readouterr().out
    assert "Search scores vs trained accuracy (Spearman rank correlation)" in printed and "+0.800" in printed
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.csv", "leaderboard.md", "search-correlation.csv",
                                                      "search-correlation.md"]
    rows = list(csv.DictReader((out / "search-correlation.csv").open()))
    kd = next(r for r in rows if r["method"] == "kd")
    assert float(kd["spearman_last"]) == pytest.approx(1.0) and kd["n"] == "4" and kd["metric"] == "top-1"
    assert "| cifar100 | resnet32x4 | kd |" in (out / "search-correlation.md").read_text()


def test_cli_rankings_without_matching_runs(searched, tmp_path, capsys):
    root, _ = searched
    other = _ranking(tmp_path / "other.csv", {"resnet8": 1.0, "resnet14": 2.0}, dataset="cifar10")
    assert main([str(root), "--out", str(tmp_path / "b"), "--search-scores", str(other)]) == 0
    assert "search scores: no setting has trained runs of two or more of the scored students" in capsys.readouterr().out
    assert not (tmp_path / "b" / "search-correlation.md").exists()


@pytest.mark.parametrize("content, message", [
    (None, "--search-scores: cannot read"),
    ("name,value\nresnet8,1\n", "has no candidate and score columns"),
    ("candidate,score\nresnet8,high\n", "line 2: score 'high' is not a number"),
    ("candidate,score\nresnet8,nan\n", "line 2: score 'nan' is not finite"),
])
def test_bad_score_files_are_one_line(searched, tmp_path, capsys, content, message):
    root, _ = searched
    path = tmp_path / "scores.csv"
    if content is not None:
        path.write_text(content)
    assert main([str(root), "--out", str(tmp_path / "b"), "--search-scores", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdbench-table: error: --search-scores: ") and message in err, err
    assert not (tmp_path / "b").exists()


def test_reads_what_kdbench_search_writes(tmp_path):
    from kdbench.search.report import rank, write_csv
    from kdbench.search.space import Candidate

    rows = rank([(Candidate("resnet8", "resnet8"), -0.3, 0.1, 0.2, 83892, 25014784),
                 (Candidate("cifar_resnet26_w32"), -0.1, 0.05, 0.05, 1479668, 428729344)])
    write_csv(rows, tmp_path / "ranking.csv", {"dataset": "cifar100", "teacher": R32, "teacher_source": "x",
                                                "init": "gaussian", "batch_size": 128, "seed": 0})
    scores = read_scores(tmp_path / "ranking.csv")
    assert scores.scores == {"cifar_resnet26_w32": -0.1, "resnet8": -0.3}
    assert scores.dataset == "cifar100" and scores.teacher == R32
