"""A non-editable install carries the configs inside the package (pkg://kdbench.conf)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_wheel_install_finds_its_configs(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(REPO)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    assert (target / "kdbench" / "conf" / "experiment" / "quickstart.yaml").is_file()
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['kdbench', 'method=dkd', '--cfg', 'job', '--resolve']; "
                          "import kdbench.cli as c; c.entry()"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "beta: 8.0" in out.stdout
    where = subprocess.run([sys.executable, "-c", "import kdbench; print(kdbench.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=env)
    assert where.stdout.startswith(str(target))
