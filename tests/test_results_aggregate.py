"""kdbench.results.aggregate: finding result.json files, grouping them into rows (settings, baselines, failed
runs) and attaching the published numbers."""
import logging
import math

import pytest

from kdbench.results import reference as ref
from kdbench.results.aggregate import aggregate, failed_runs, find_results, with_published
from kdbench.results.render import to_markdown
from results_runs import R8, R32, MV2, W40, describe, recipes, runs  # noqa: F401 (fixtures)


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
    cells = [ref.Cell(table="t", dataset="cifar100", teacher=R32, student=R8, method=m, value=v, spread=None, kind=k,
                      runs=5, recipe="crd_cifar", source="a paper, Table 1", as_written="", note="")
             for m, v, k in (("kd", 74.0, "best"), ("dkd", 75.0, "last"))]
    table = ref.Reference(name="t", file="", title="", citation="", url="", cells=tuple(cells))
    rows = {r.method: r for r in with_published(aggregate(find_results([runs])), [table]) if r.kind == "method"
            and r.teacher == R32 and r.student == R8 and r.label in ("", "temperature=4")}
    assert rows["kd"].delta_best_pub == pytest.approx(75.0 - 74.0) and rows["kd"].delta_last_pub is None
    assert rows["dkd"].delta_last_pub == pytest.approx(75.5 - 75.0) and rows["dkd"].delta_best_pub is None
    md = to_markdown(list(rows.values()))
    assert "74.00 [t, best]" in md and "75.00 [t, last]" in md and "Δ best vs published" in md
