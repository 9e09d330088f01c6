"""kdbench/cli.py preflight lines: an output folder Hydra could not create, and an unknown key, are refused in one line
(exit 2) before Hydra tries and fails with its own message; an unknown key lists the keys its group has."""

from __future__ import annotations

import pytest

from kdbench.cli import entry


@pytest.mark.parametrize("flag,key", [([], "hydra.run.dir"), (["-m"], "hydra.sweep.dir")])
def test_an_output_folder_under_a_file_is_one_line(tmp_path, monkeypatch, capsys, flag, key):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["kdbench", *flag, "dataset=synthetic", f"{key}={blocker / 'run'}"])
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (f"kdbench: error: {key}: {blocker / 'run'} cannot be created: {blocker} is "
                                            f"a file; choose another with {key}=<dir>")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.parametrize("args,line", [
    (["method.alpha=2"], "method.alpha: no such key in method=kd; valid: temperature, ce_weight, kd_weight, logit_stand"),
    (["method=pld", "method.tau=3", "trainer.bar=1"], "method.tau: no such key in method=pld; valid: temperature, weight"),
])
def test_an_unknown_key_lists_the_keys_of_its_group(monkeypatch, capsys, tmp_path, args, line):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["kdbench", *args])
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"kdbench: error: {line}"]
