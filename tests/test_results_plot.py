"""kdbench.results.plot: the learning curves (primary metric and training loss, mean and min–max band over seeds)
drawn from the runs' histories beside the leaderboard png."""
import logging

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PolyCollection
from omegaconf import OmegaConf

from kdbench.results.aggregate import aggregate, find_results
from kdbench.results.callbacks import LeaderboardCallback
from kdbench.results.plot import curves_figure, learning_curves
from kdbench.results.table import main
from results_runs import W40, epoch_history, runs, write_detection_result, write_result  # noqa: F401 (fixture)


@pytest.fixture
def trained(tmp_path):
    """resnet32x4 -> resnet8x4, 4 epochs: CE (2 seeds), KD (3 seeds), DKD (2 seeds and a failed one), AT with an
    empty history; KD from wrn_40_2 too."""
    root = tmp_path / "trained"
    w = lambda *a, top1, **k: write_result(root, *a, last=top1, best=top1, history=epoch_history(4, top1), **k)
    for seed in (0, 1):
        w(f"ce-{seed}", method="ce", seed=seed, top1=70.0 + seed)
    for seed in (0, 1, 2):
        w(f"kd-{seed}", seed=seed, top1=72.0 + seed)
    for seed in (0, 2):
        w(f"dkd-{seed}", method="dkd", seed=seed, top1=74.0)
    write_result(root, "dkd-1", method="dkd", seed=1, status="failed",
                 history=[{"epoch": 1, "loss": float("nan"), "losses": {}, "top1": 1.0}])
    write_result(root, "at-0", method="at", last=71.0, best=71.0, history=[])
    w("w40/kd-0", teacher=W40, top1=73.0)
    return root


def lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_curves_figure_per_setting_metric_and_loss(trained):
    records = find_results([trained])
    fig = curves_figure(records, title="kdbench leaderboard")
    try:
        axes = fig.get_axes()
        assert len(axes) == 4  # two settings (resnet32x4, wrn_40_2 -> resnet8x4), metric and loss panels each
        top, loss = axes[0], axes[1]
        assert top.get_title() == "cifar100: resnet32x4 → resnet8x4: top-1"
        assert loss.get_title() == "cifar100: resnet32x4 → resnet8x4: training loss"
        assert (top.get_xlabel(), top.get_ylabel(), loss.get_xlabel(), loss.get_ylabel()) == \
            ("epoch", "top-1", "epoch", "training loss")
        # CE, DKD (failed seed left out), KD; AT has no history
        assert list(lines(top)) == list(lines(loss)) == ["ce, n=2", "dkd, n=2", "kd, n=3"]
        kd = lines(top)["kd, n=3"]
        assert list(kd.get_xdata()) == [1, 2, 3, 4] and kd.get_ydata()[-1] == pytest.approx(73.0)
        assert lines(loss)["kd, n=3"].get_ydata()[0] == pytest.approx(2.0)
        assert len([c for c in top.collections if isinstance(c, PolyCollection)]) == 3  # one band per method
        legend = loss.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["ce, n=2", "dkd, n=2", "kd, n=3"]
        assert axes[2].get_title() == "cifar100: wrn_40_2 → resnet8x4: top-1"
        assert list(lines(axes[2])) == ["ce, n=2", "kd, n=1"]  # CE is the baseline of every teacher's setting
        assert not [c for c in axes[2].collections if c.get_label() == "kd, n=1"]
        assert "learning curves" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_band_is_min_max_over_seeds(trained):
    kd = next(c for c in learning_curves(find_results([trained]))[0].curves if c.label == "kd, n=3")
    assert kd.series["top1"][-1] == (4.0, pytest.approx(73.0), 72.0, 74.0)


def test_kdbench_table_png_writes_the_curves(trained, tmp_path):
    out = tmp_path / "board"
    assert main([str(trained), "--out", str(out), "--format", "png"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard-curves.png", "leaderboard.png"]
    assert (out / "leaderboard-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "kd"  # the table's filters hold for the curves too
    assert main([str(trained), "--out", str(out), "--format", "png", "--pair", "wrn_40_2:resnet8x4"]) == 0
    assert (out / "leaderboard-curves.png").is_file()


def test_filtered_rows_filter_the_curves(trained):
    records = find_results([trained])
    settings = learning_curves(records, aggregate(records, methods=["kd"]))
    assert [[c.label for c in s.curves] for s in settings] == [["ce, n=2", "kd, n=3"], ["ce, n=2", "kd, n=1"]]


def test_variant_labels_are_whole(tmp_path):
    root = tmp_path / "sweep"
    for t in (2.0, 16.0):
        write_result(root, f"kd-t{t:g}", last=70.0, best=70.0, history=epoch_history(3, 70.0),
                     hparams={"temperature": t, "ce_weight": 0.1, "kd_weight": 0.9})
    fig = curves_figure(find_results([root]))
    try:
        texts = [t.get_text().replace("\n", " ") for t in fig.get_axes()[1].get_legend().get_texts()]
        assert texts == ["kd (temperature=2), n=1", "kd (temperature=16), n=1"]
    finally:
        plt.close(fig)


def test_detection_draws_ap_over_iterations(tmp_path):
    root = tmp_path / "coco"
    for method in ("ce", "dkd"):
        for seed in (0, 1):
            ap = 30.0 + seed + (method == "dkd")
            write_detection_result(root, f"{method}-{seed}", method=method, seed=seed, last=(ap,) * 6,
                                   best=(ap,) * 6, history=epoch_history(3, ap, 1.5, detection=True, every=20000))
    write_result(root, "cifar/kd-0", last=74.0, best=74.5)  # classification, one epoch: no curves of its own
    fig = curves_figure(find_results([root]))
    try:
        top, loss = fig.get_axes()
        assert (top.get_title(), top.get_xlabel(), top.get_ylabel()) == \
            ("coco: resnet101 → resnet18: AP", "iteration", "AP")
        assert list(lines(top)) == ["ce, n=2", "dkd, n=2"]
        assert list(lines(top)["dkd, n=2"].get_xdata()) == [20000, 40000, 60000]
        assert lines(top)["dkd, n=2"].get_ydata()[-1] == pytest.approx(31.5) and loss.get_xlabel() == "iteration"
    finally:
        plt.close(fig)
    out = tmp_path / "board"
    assert main([str(root), "--out", str(out), "--format", "png"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard-detection-curves.png",
                                                      "leaderboard-detection.png", "leaderboard.png"]


def test_no_history_no_curves(runs, tmp_path):
    # the runs of the fixture have one epoch each (no curve); a run with an empty history has none
    write_result(runs, "empty/kd-0", last=70.0, best=70.0, history=[])
    assert curves_figure(find_results([runs])) is None
    out = tmp_path / "board"
    assert main([str(runs), "--out", str(out), "--format", "png"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.png"]


def test_sweep_callback_writes_the_curves(trained, caplog):
    with caplog.at_level(logging.INFO, logger="kdbench"):
        LeaderboardCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(trained)}}}))
    assert (trained / "leaderboard-curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "learning curves:" in caplog.text and not list(trained.glob(".leaderboard*"))
