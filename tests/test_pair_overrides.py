"""Per-pair published hyper-parameters (``pair_overrides.<method>.<key>`` in conf/experiment/**): every key a preset
sets for a shipped method that is one of its constructor arguments reaches the method through the method config's
oc.select; ``method.<key>=...`` on the command line still wins; without a preset the published defaults hold.
Composition only (no models are built)."""

from __future__ import annotations

import functools
import inspect

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from conftest import REPO
from kdbench.methods import method_class, method_kwargs

EXPERIMENTS = REPO / "conf" / "experiment"
PRESETS = sorted(str(p.relative_to(EXPERIMENTS).with_suffix("")) for p in EXPERIMENTS.glob("**/*.yaml")
                 if p.stem != "quickstart")
SHIPPED = {p.stem for p in (REPO / "conf" / "method").glob("*.yaml")}
# Keys the presets record as the published solver settings of a method's recipe (use trainer.* / optim.*), not
# method hyper-parameters.
SOLVER_KEYS = {"batch_size", "lr", "epochs"}
# The published defaults (conf/method/<method>.yaml) of the methods the presets set hyper-parameters of, and
# DOT's delta (conf/optim/dot.yaml).
DEFAULTS = {
    "kd": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "logit_stand": False},
    "dkd": {"ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20, "logit_stand": False},
    "dist": {"ce_weight": 1.0, "kd_weight": 2.0, "beta": 1.0, "gamma": 1.0, "temperature": 4.0},
    "mlkd": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "logit_stand": False},
    "reviewkd": {"ce_weight": 1.0, "reviewkd_weight": 5.0, "warmup_epochs": 20, "max_mid_channel": 512},
    "ofd": {"ce_weight": 1.0, "ofd_weight": 1e-3, "connector_kernel_size": 1},
    "pld": {"temperature": 1.0, "weight": 1.0},
    "kdpp": {"ce_weight": 1.0, "kd_weight": 3.5, "nd_weight": 2.0, "temperature": 4.0, "warmup_epochs": 20},
    "dkdpp": {"ce_weight": 1.0, "alpha": 2.0, "beta": 8.0, "nd_weight": 0.5, "temperature": 4.0, "warmup_epochs": 20},
    "distpp": {"ce_weight": 1.0, "kd_weight": 1.5, "nd_weight": 4.0, "beta": 1.0, "gamma": 1.0, "temperature": 4.0,
               "warmup_epochs": 20},
    "reviewkdpp": {"ce_weight": 1.0, "reviewkd_weight": 8.0, "nd_weight": 1.0, "warmup_epochs": 20,
                   "max_mid_channel": 512},
    "reviewkd_fpn": {"ce_weight": 1.0, "weight": 1.0, "mid_channels": 256},
}
DOT_DELTA = 0.075


@pytest.fixture(scope="module", autouse=True)
def _hydra():
    """One Hydra initialisation for the module: composing is then cheap."""
    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        yield


@functools.cache
def compose_cfg(*overrides: str):
    """The composed config, shared between the tests (they only read it)."""
    return compose(config_name="config", overrides=list(overrides))


def preset_overrides(preset: str) -> dict:
    """The preset's pair_overrides as written in its file."""
    raw = OmegaConf.load(EXPERIMENTS / f"{preset}.yaml")
    return OmegaConf.to_container(raw.get("pair_overrides") or OmegaConf.create({}))


@functools.cache
def hyper_parameters(method: str) -> frozenset[str]:
    cls = method_class(OmegaConf.load(REPO / "conf" / "method" / f"{method}.yaml"))
    return frozenset(n for n in inspect.signature(cls.__init__).parameters if n != "self")


def wired(preset: str) -> dict[str, dict]:
    """{method: {key: value}} for the shipped methods the preset sets hyper-parameters of."""
    out = {}
    for method, values in preset_overrides(preset).items():
        if method not in SHIPPED:
            continue
        params = hyper_parameters(method)
        keys = {k: v for k, v in values.items() if k in params}
        if keys:
            out[method] = keys
    return out


def test_the_presets_are_found():
    assert len(PRESETS) >= 20 and "quickstart" not in PRESETS
    assert {p.split("/")[0] for p in PRESETS} == {"cifar100", "coco", "imagenet", "pld", "random_teachers"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_keys_are_hyper_parameters_or_solver_settings(preset):
    """A key under a shipped method is either its constructor argument or a recorded solver setting: a misspelt or
    foreign name (``tau`` for ``temperature``) would otherwise be silently ignored."""
    for method, values in preset_overrides(preset).items():
        if method not in SHIPPED:
            continue
        unknown = set(values) - hyper_parameters(method) - SOLVER_KEYS
        assert not unknown, f"{preset}: pair_overrides.{method}.{sorted(unknown)}"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_values_reach_the_method(preset):
    expected = wired(preset)
    for method, values in expected.items():
        kwargs = method_kwargs(compose_cfg(f"experiment={preset}", f"method={method}").method)
        assert {k: kwargs[k] for k in values} == values, (preset, method)
        # the keys the preset leaves alone keep the method's published defaults
        rest = {k: v for k, v in DEFAULTS[method].items() if k not in values}
        assert {k: kwargs[k] for k in rest} == rest, (preset, method)
    dot = preset_overrides(preset).get("dot", {})
    if "delta" in dot:
        assert compose_cfg(f"experiment={preset}", "optim=dot").optim.delta == dot["delta"]


def test_every_wired_method_is_covered():
    methods = set().union(*(wired(p) for p in PRESETS))
    assert methods == {"kd", "dkd", "dist", "mlkd", "reviewkd", "ofd", "pld", "kdpp", "dkdpp", "distpp", "reviewkdpp",
                       "reviewkd_fpn"}
    assert set(DEFAULTS) == methods


def test_the_command_line_wins():
    cfg = compose_cfg("experiment=imagenet/r34_r18", "method=kd", "method.temperature=3.0")
    kwargs = method_kwargs(cfg.method)
    assert kwargs["temperature"] == 3.0 and cfg.pair_overrides.kd.temperature == 1.0
    assert (kwargs["ce_weight"], kwargs["kd_weight"]) == (0.5, 0.5)  # the rest still from the preset
    cfg = compose_cfg("experiment=imagenet/r50_mv1", "method=reviewkd", "method.max_mid_channel=128")
    assert method_kwargs(cfg.method)["max_mid_channel"] == 128
    cfg = compose_cfg("experiment=imagenet/r50_mv1", "optim=dot", "optim.delta=0.05")
    assert cfg.optim.delta == 0.05


def test_defaults_without_a_preset():
    for method, defaults in DEFAULTS.items():
        assert method_kwargs(compose_cfg(f"method={method}").method) == defaults, method
    assert compose_cfg("optim=dot").optim.delta == DOT_DELTA


def test_logit_standardisation_settings_stay_opt_in():
    """pair_overrides.logit_stand.<method> are the settings for method.logit_stand=true: plain KD / DKD / MLKD of
    such a pair keep their defaults (or the pair's plain published values)."""
    cfg = compose_cfg("experiment=cifar100/res110_res20", "method=kd")
    assert cfg.pair_overrides.logit_stand.kd.temperature == 4.0
    assert method_kwargs(cfg.method) == DEFAULTS["kd"]
    cfg = compose_cfg("experiment=cifar100/res32x4_res8x4", "method=dkd")
    assert method_kwargs(cfg.method) == DEFAULTS["dkd"]  # its plain DKD beta is the default 8.0
    cfg = compose_cfg("experiment=cifar100/res56_res20", "method=dkd")
    assert method_kwargs(cfg.method) == {**DEFAULTS["dkd"], "beta": 2.0}
