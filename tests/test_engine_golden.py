"""Refactors keep behaviour: deterministic 3-epoch KD and DKD runs on CIFAR-100-format data reproduce, value for
value, the per-epoch histories (losses, learning rate, accuracy) that the engine gave before it was split into
phases (tests/golden/, written by tests/golden_runs.py)."""

from __future__ import annotations

import json

import pytest

from golden_runs import GOLDEN, prepare, run


@pytest.fixture(scope="module")
def golden_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    prepare(root)
    return root


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_history_matches_the_pre_refactor_engine(golden_root, name):
    expected = json.loads((GOLDEN / f"history_{name}.json").read_text())
    assert run(golden_root, name) == expected


def test_dataloader_path_gives_the_same_history(golden_root):
    """The torch DataLoader path serves the same samples and views as the device loader."""
    expected = json.loads((GOLDEN / "history_kd.json").read_text())
    actual = run(golden_root, "kd", "trainer.loader=torch")
    # normalisation in another order: losses agree to float32 rounding, accuracies exactly
    assert [(h["top1"], h["top5"], h["lr"]) for h in actual] == [(h["top1"], h["top5"], h["lr"]) for h in expected]
    for got, want in zip(actual, expected):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["losses"] == pytest.approx(want["losses"], rel=1e-5)
