"""kdbench/cli.py: an output folder Hydra could not create is refused by the preflight in one line (exit 2), before
Hydra tries and fails with its own traceback."""

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
