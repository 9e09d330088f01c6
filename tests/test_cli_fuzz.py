"""A fuzz test of the command line: overrides drawn from the real config space (valid values, out-of-range numbers,
wrong types, unknown keys and choices, nested presets), each checked in-process by the preflight exactly as the
console script runs it. For every input: exit 0 or 2, never a traceback, one stderr line on exit 2, and no run
directory. Inputs go through ``--cfg job`` (composed and validated, nothing trained, no data needed) or, for
sweeps, ``-m`` on the synthetic dataset (the preflight checks every job; it launches none)."""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import tempfile

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kdbench.cli import fail, preflight
from kdbench.config_schema import CHOICES, RANGES
from kdbench.errors import ConfigError
from kdbench.methods import METHODS

from conftest import REPO

CONF = REPO / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.relative_to(CONF / group).with_suffix("").as_posix() for p in (CONF / group).rglob("*.yaml"))


GROUPS = {group: _options(group) for group in ("dataset", "teacher", "student", "method", "optim", "trainer",
                                               "logger", "experiment")}
BAD_CHOICES = ["nope", "cifar100/nope", "coco/nope", "nope/x", "cifar100", "", "KD", "kd,nope", "../kd"]
NUMBERS = st.one_of(
    st.integers(-3, 3), st.sampled_from([0, 1, 2, 64, 10**9, -10**9]),
    st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 3)),
    st.sampled_from(["nan", "inf", "-inf", "1e-12", "0.0", "1.0"]))
JUNK = st.sampled_from(["abc", "true", "false", "null", "[1,2]", "{a: 1}", "'4'", "1,2", "${nope}", "()", "=", "x=y"])
VALUES = st.one_of(NUMBERS.map(str), JUNK)


def _method_keys(name: str) -> list[str]:
    return [p for p in inspect.signature(METHODS[name].__init__).parameters if p not in ("self", "args", "kwargs")]


@st.composite
def group_choice(draw) -> str:
    group = draw(st.sampled_from(sorted(GROUPS)))
    value = draw(st.one_of(st.sampled_from(GROUPS[group]), st.sampled_from(BAD_CHOICES)))
    return f"{group}={value}"


@st.composite
def method_overrides(draw) -> list[str]:
    name = draw(st.sampled_from(sorted(METHODS)))
    keys = _method_keys(name) or ["temperature"]
    key = draw(st.one_of(st.sampled_from(keys), st.sampled_from(["nope", "_target_", "name"])))
    return [f"method={name}", f"method.{key}={draw(VALUES)}"]


@st.composite
def schema_override(draw) -> str:
    key = draw(st.sampled_from(sorted(RANGES) + ["trainer.nope", "optim.nope", "nope", "dataset.nope",
                                                 "optim.milestones", "optim.betas"]))
    if key in ("optim.milestones", "optim.betas"):
        items = draw(st.lists(NUMBERS.map(str), max_size=4))
        return f"{key}=[{','.join(items)}]"
    return f"{key}={draw(VALUES)}"


@st.composite
def choice_override(draw) -> str:
    key = draw(st.sampled_from(sorted(CHOICES)))
    value = draw(st.one_of(st.sampled_from([str(v).lower() for v in CHOICES[key]]), st.sampled_from(["fp8", "nope", "1"])))
    return f"{key}={value}"


OVERRIDES = st.lists(st.one_of(group_choice(), method_overrides().map(" ".join), schema_override(), choice_override()),
                     max_size=4).map(lambda parts: " ".join(parts).split())


def check(argv: list[str]) -> int:
    """Run the preflight as ``kdbench <argv>`` does and check its outcome; returns the exit code."""
    err, here = io.StringIO(), os.getcwd()
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    try:
                        preflight(argv)
                    except ConfigError as e:  # entry() turns these into the one line
                        fail(str(e))
                    code = 0
                except SystemExit as e:
                    code = e.code
            assert os.listdir(workdir) == [], f"{argv}: the preflight wrote {os.listdir(workdir)}"
        finally:
            os.chdir(here)
    text = err.getvalue()
    assert code in (0, 2), f"{argv}: exit {code}: {text}"
    assert "Traceback" not in text, f"{argv}: {text}"
    if code == 2:
        lines = text.splitlines()
        assert len(lines) == 1 and lines[0].startswith("kdbench: error: ") and len(lines[0]) > 20, f"{argv}: {lines}"
    return code


FUZZ = settings(max_examples=45, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(OVERRIDES)
@example(["method.temperature=0"])
@example(["method=taid", "method.t_start=1.5"])
@example(["method=dkd", "method.beta=-1"])
@example(["method=kd", "method.temperature=abc"])
@example(["method=kd", "method.nope=1"])
@example(["experiment=cifar100/nope"])
@example(["experiment=coco/nope"])
@example(["experiment=nope/x"])
@example(["experiment=imagenet/r34_r18", "method=dkd"])
@example(["experiment=coco/r101_r18", "method=reviewkd_fpn"])
@example(["trainer.precision=fp8"])
@example(["seed=-1"])
@example(["seed=abc"])
@example(["optim.momentum=1"])
@example(["optim.milestones=[3,2]"])
@example(["dataset.num_workers=-1"])
@example(["trainer.nope=1"])
@example(["nope=1"])
@example(["student=resnet9"])
@example(["student.name=no_such_model"])
@example(["method=kd,dkd"])
@example(["method.temperature=${nope}"])
@example([])
def test_cfg_job_ends_in_exit_0_or_one_line(overrides):
    check(["--cfg", "job", *overrides])


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(method=st.lists(st.sampled_from(sorted(METHODS) + ["nope"]), min_size=1, max_size=3, unique=True),
       seeds=st.lists(st.sampled_from(["0", "1", "-1", "x"]), min_size=1, max_size=2, unique=True),
       temperature=st.sampled_from([None, "4", "0", "1,0"]))
@example(method=["kd", "nope"], seeds=["0"], temperature=None)
@example(method=["kd", "dkd"], seeds=["0", "1"], temperature="1,0")
def test_sweeps_end_in_exit_0_or_one_line(method, seeds, temperature):
    argv = ["-m", "dataset=synthetic", "student=resnet8", "teacher=resnet14", "logger.mode=disabled",
            f"method={','.join(method)}", f"seed={','.join(seeds)}"]
    if temperature is not None:
        argv.append(f"method.temperature={temperature}")
    code = check(argv)
    valid_temperature = temperature in (None, "4")
    methods_with_temperature = {m for m in method if m in METHODS and "temperature" in _method_keys(m)}
    expect_ok = ("nope" not in method and set(seeds) <= {"0", "1"}
                 and (temperature is None or (valid_temperature and methods_with_temperature == set(method))))
    assert code == (0 if expect_ok else 2), (argv, code)
