"""engine/step.py is the only training step: ``kdbench-bench`` times it, the trainer runs it, and the engine names
no method, optimiser or task (it asks their registries and declarations)."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest

import kdbench.engine
from kdbench.engine import step as step_module
from kdbench.engine.optim import OPTIMIZERS
from kdbench.methods import METHODS
from kdbench.tasks import TASKS

ENGINE = Path(kdbench.engine.__file__).parent
REGISTRIES = {"optim.py", "dot.py"}  # the optimiser registry and the DOT optimiser itself


@pytest.fixture()
def counted_steps(monkeypatch):
    calls = []
    original = step_module.TrainStep.__call__

    def counting(self, batch, progress):
        calls.append(len(batch))
        return original(self, batch, progress)

    monkeypatch.setattr(step_module.TrainStep, "__call__", counting)
    return calls


def test_bench_times_the_trainers_step(counted_steps, capsys):
    from kdbench.bench import main

    main(["--teacher", "resnet8", "--student", "resnet8", "--classes", "10", "--steps", "2", "--rounds", "2",
          "--warmup", "1", "--batch-size", "4", "--workers", "0", "--configs", "reference", "device"])
    # per configuration: 1 warm-up step + 2 rounds x 1 timed step, every one through TrainStep
    assert counted_steps == [4] * 6
    assert "| device |" in capsys.readouterr().out


def test_trainer_runs_the_same_step(counted_steps, tmp_path):
    from hydra import compose, initialize_config_module

    from kdbench.engine.trainer import train

    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset=synthetic", "dataset.train_size=40", "dataset.test_size=16", "student=resnet8", "method=ce",
            "trainer.epochs=2", "trainer.batch_size=16", "trainer.progress=false", "trainer.device=cpu",
            "logger.mode=disabled", f"store={tmp_path / 'store'}"])
    record = train(cfg, tmp_path / "run")
    assert counted_steps == [16, 16, 8] * 2 and record["epochs_run"] == 2


def _literals_and_names(path: Path) -> set[str]:
    """Every string literal's value and every identifier in a module (comments and docstrings are prose)."""
    out = set()
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.NAME:
            out.add(tok.string)
        elif tok.type == tokenize.STRING:
            previous = tokens[i - 1].type if i else tokenize.NEWLINE
            if previous in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
                continue  # a docstring
            text = tok.string.lstrip("rbfuRBFU")
            out.add(text.strip("'\""))
    return out


def test_the_engine_names_no_method_optimiser_or_task():
    names = set(METHODS) | set(OPTIMIZERS) | set(TASKS) | {cls.__name__ for cls in METHODS.values()} | {"DOT"}
    for path in sorted(ENGINE.glob("*.py")):
        if path.name in REGISTRIES:
            continue
        found = _literals_and_names(path) & names
        assert not found, f"{path.name} names {sorted(found)}: ask the registry or a declared capability instead"
