"""Declared ranges: every method hyper-parameter and every numeric trainer / optim / dataset key has one, the shipped
configs lie inside them, and a value outside gives one line naming the key, the value and the range (exit 2)."""

from __future__ import annotations

import inspect
from pathlib import Path
import logging
import math

import pytest

from kdbench.cli import fail, preflight
from kdbench.config_schema import RANGES, in_range, parse_range, range_error
from kdbench.errors import ConfigError
from kdbench.methods import METHODS, numeric_hparams

from conftest import REPO


def refusal(argv: list[str], capsys) -> str:
    """The one stderr line ``kdbench --cfg job <argv>`` ends with (exit 2), as the console script prints it."""
    with pytest.raises(SystemExit) as e:
        try:
            preflight(["--cfg", "job", *argv])
        except ConfigError as error:
            fail(str(error))
    assert e.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0].removeprefix("kdbench: error: ")


def test_every_numeric_hyper_parameter_of_every_method_has_a_range_holding_its_default():
    shipped = {p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "method").glob("*.yaml")}
    assert set(METHODS) == shipped and len(METHODS) >= 28  # every registered method ships a config, and no config lacks one
    for name, cls in sorted(METHODS.items()):
        params = inspect.signature(cls.__init__).parameters
        for key in numeric_hparams(cls):
            spec = cls.range_of(key)
            assert spec is not None, f"{name}: method.{key} has no declared range (Method.ranges or SHARED_RANGES)"
            parse_range(spec)
            assert in_range(params[key].default, spec), f"{name}: default {key}={params[key].default} outside {spec}"


def test_ranges_grammar():
    assert parse_range("> 0") == (0.0, False, math.inf, True)
    assert parse_range(">= 1") == (1.0, True, math.inf, True)
    assert parse_range("[0, 1)") == (0.0, True, 1.0, False)
    assert parse_range("(0, 1]") == (0.0, False, 1.0, True)
    assert in_range(-5, "any") and in_range(0, "[0, 1)") and not in_range(1, "[0, 1)") and not in_range(0, "> 0")
    assert not in_range(float("nan"), ">= 0") and not in_range(float("inf"), "> 0")
    assert range_error("method.temperature", 0.0, "> 0") == "method.temperature: must be > 0, got 0.0"
    assert range_error("x", "abc", "> 0") is None and range_error("x", True, "> 0") is None
    with pytest.raises(ValueError):
        parse_range("positive")


def test_a_method_range_overrides_the_shared_one():
    assert METHODS["dkd"].range_of("alpha") == ">= 0"
    assert METHODS["taid"].range_of("alpha") == "[0, 1]"
    assert METHODS["reviewkdpp"].range_of("nd_weight") == ">= 0"  # through its bases


@pytest.mark.parametrize("preset", sorted(p.relative_to(REPO / "conf" / "experiment").with_suffix("").as_posix()
                                          for p in (REPO / "conf" / "experiment").rglob("*.yaml")))
def test_every_preset_lies_in_the_ranges(preset):
    preflight(["--cfg", "job", f"experiment={preset}"])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_config_lies_in_the_ranges(method):
    preflight(["--cfg", "job", f"method={method}"])


@pytest.mark.parametrize("optim", ["adamw", "cifar", "detection", "dot", "imagenet"])
def test_every_optim_config_lies_in_the_ranges(optim):
    preflight(["--cfg", "job", f"optim={optim}"])


@pytest.mark.parametrize("argv, line", [
    (["method.temperature=0"], "method.temperature: must be > 0, got 0.0"),
    (["method=dkd", "method.beta=-1"], "method.beta: must be >= 0, got -1.0"),
    (["method=dkd", "method.warmup_epochs=-1"], "method.warmup_epochs: must be >= 0, got -1"),
    (["method=mixkd", "method.keep_fraction=1.5"], "method.keep_fraction: must be in [0, 1], got 1.5"),
    (["method=taid", "method.t_start=1"], "method.t_start: must be in [0, 1), got 1.0"),
    (["method=crd", "method.nce_k=0"], "method.nce_k: must be >= 1, got 0"),
    (["method=pld", "method.temperature=nan"], "method.temperature: must be a finite number > 0, got nan"),
    (["method.temperature=abc"], "method.temperature: expected float, got 'abc' (str)"),
    (["seed=-1"], "seed: must be >= 0, got -1"),
    (["trainer.epochs=0"], "trainer.epochs: must be >= 1, got 0"),
    (["trainer.batch_size=0"], "trainer.batch_size: must be >= 1, got 0"),
    (["trainer.eval_every=0"], "trainer.eval_every: must be >= 1, got 0"),
    (["optim.lr=0"], "optim.lr: must be > 0, got 0.0"),
    (["optim.momentum=1.0"], "optim.momentum: must be in [0, 1), got 1.0"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay: must be >= 0, got -0.1"),
    (["optim.gamma=0"], "optim.gamma: must be in (0, 1], got 0.0"),
    (["optim.milestones=[180,150]"], "optim.milestones: must increase, got [180, 150]"),
    (["optim.warmup_epochs=-2"], "optim.warmup_epochs: must be >= 0, got -2"),
    (["optim=adamw", "optim.betas=[0.9,1.5]"], "optim.betas[1]: must be in [0, 1), got 1.5"),
    (["optim=dot", "optim.delta=0.2"], "optim.delta: momentum - delta and momentum + delta must lie in [0, 1), "
                                       "got momentum 0.9 and delta 0.2"),
    (["dataset.num_workers=-1"], "dataset.num_workers: must be >= 0, got -1"),
])
def test_out_of_range_values_give_one_line(argv, line, capsys):
    assert refusal(argv, capsys) == line


@pytest.mark.parametrize("choice", ["cifar100/nope", "coco/nope", "nope/x", "cifar100", "nope"])
def test_a_missing_preset_is_reported_against_experiment_with_every_choice(choice, capsys):
    line = refusal([f"experiment={choice}"], capsys)
    shipped = sorted((p.relative_to(REPO / "conf" / "experiment").with_suffix("").as_posix()
                      for p in (REPO / "conf" / "experiment").rglob("*.yaml")), key=str.lower)
    assert line == f"experiment: unknown choice '{choice}'; valid: {', '.join(shipped)}"
    assert "cifar100/res32x4_res8x4" in line and "coco/r101_r18" in line and "quickstart" in line


def test_other_groups_keep_their_own_choices(capsys):
    assert refusal(["hydra/launcher=nope"], capsys).startswith("hydra/launcher: unknown choice 'nope'; valid: basic,")
    assert refusal(["method=foo"], capsys).startswith("method: unknown choice 'foo'; valid: acamkd, at, cc, ce,")


def test_loader_workers_are_capped_at_the_cpus_with_one_note(monkeypatch, caplog):
    from kdbench.data import base, jpeg
    from kdbench.tasks.detection import DetectionTask
    from omegaconf import OmegaConf

    monkeypatch.setattr(base, "available_cpus", lambda: 2)
    monkeypatch.setattr(base, "_capped_noted", set())
    with caplog.at_level(logging.INFO, logger="kdbench"):
        assert base.loader_workers(8) == 2 and base.loader_workers(8) == 2
        assert base.loader_workers(1) == 1 and base.loader_workers(None) == 2
        assert jpeg.loader_workers is base.loader_workers
        cfg = OmegaConf.create({"dataset": {"num_workers": 8}})
        assert DetectionTask._workers(None, cfg) == 2
    notes = [r.getMessage() for r in caplog.records if "num_workers" in r.getMessage()]
    assert notes == ["dataset.num_workers=8 is more than the 2 CPUs this process may use; using 2 loader workers"]
